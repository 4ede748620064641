"""How often the garbled-text-layer check fires on real born-digital PDFs (each flag costs an OCR of the page).

Every page of every PDF under the given folders is read as the PDF loader reads it (PDFium lines, tables as
Markdown; `--no-tables` for the plain text layer) and checked (ingest/loaders/garbled.py); a flagged page is a
false alarm unless its text layer really is garbled, so the flagged pages are listed with
their reason and their first characters for a person to judge.

Usage (from the repository root):
    python bench/garbled.py [FOLDER ...] [--json]     # default: the FinanceBench PDFs and the example PDFs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import emit, machine_line, reproduce_command
from ingest.loaders.garbled import text_quality

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DEFAULT = [SHARED / "financebench" / "pdfs", SHARED / "unstructured-example-docs" / "docs" / "pdf"]


def main(argv: list[str] | None = None) -> int:
    import pypdfium2 as pdfium

    from ingest.loaders.pdf import _pdfium_pages
    from rag.errors import DocumentError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, default=DEFAULT)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-tables", action="store_true", help="check the text layer without the table pass")
    args = parser.parse_args(argv)
    files = sorted(p for folder in args.folders if folder.is_dir() for p in folder.rglob("*.pdf"))
    if not files:
        parser.error(f"no PDF under {', '.join(map(str, args.folders))}")
    pages = 0
    flagged: list[dict[str, Any]] = []
    unreadable: list[str] = []
    started = time.perf_counter()
    check_s = 0.0
    for path in files:
        try:
            lines_per_page, _ = _pdfium_pages(path.name, path.read_bytes(), None, not args.no_tables)
        except (DocumentError, pdfium.PdfiumError) as e:
            unreadable.append(f"{path.name}: {e}")
            continue
        for i, lines in enumerate(lines_per_page):
            text = "\n".join(line.text for line in lines)
            t = time.perf_counter()
            reason = text_quality(text).garbled()
            check_s += time.perf_counter() - t
            pages += 1
            if reason is not None:
                flagged.append({"file": path.name, "page": i + 1, "reason": reason, "start": text[:80]})
    result = {
        "files": len(files),
        "pages": pages,
        "flagged": flagged,
        "unreadable": unreadable,
        "check_ms_per_page": round(1000 * check_s / max(1, pages), 3),
        "seconds": round(time.perf_counter() - started, 1),
        "command": reproduce_command("bench/garbled.py", argv),
    }

    def human(r: dict[str, Any]) -> None:
        print(f"{r['files']} PDFs, {r['pages']} pages: {len(r['flagged'])} flagged as garbled; {machine_line()}")
        for f in r["flagged"]:
            print(f"  {f['file']} p.{f['page']}: {f['reason']} — {f['start']!r}")
        for u in r["unreadable"]:
            print(f"  not opened: {u}")
        print(f"  the check costs {r['check_ms_per_page']} ms a page ({r['seconds']} s in all, reading included)")
        print(f"  reproduce: {r['command']}")

    emit(result, args.json, human)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
