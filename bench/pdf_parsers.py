"""PDF parser speed and output on real PDFs: whole `load_file` calls per parser (pypdfium2, pypdf, pdfminer).

For each file and parser: pages/s, characters, headings (Title elements), pages with text, and the
share of the other parser's words it also found (a cheap check that a faster parser drops nothing).

Usage (from the repository root):
    python bench/pdf_parsers.py [--folder ../shared/data/financebench/pdfs] [--files 6] [--parsers pypdfium2,pypdf]
    python bench/pdf_parsers.py --parsers pypdfium2 [--no-tables]   (the PDF table pass on / off)
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import emit, machine_line, reproduce_command  # noqa: E402
from ingest.documents import TITLE  # noqa: E402
from ingest.loaders import load_file  # noqa: E402

DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "financebench" / "pdfs"
_WORD = re.compile(r"[A-Za-z]{3,}")


def pick_files(folder: Path, count: int) -> list[Path]:
    """`count` PDFs evenly spaced over the folder's size range, so short 8-Ks and long 10-Ks both count."""
    files = sorted(folder.glob("*.pdf"), key=lambda p: p.stat().st_size)
    if count >= len(files):
        return files
    step = (len(files) - 1) / max(1, count - 1)
    return [files[round(i * step)] for i in range(count)]


def measure(path: Path, parser: str, tables: bool = True) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    doc = load_file(path, pdf_parser=parser, ocr=None, pdf_tables=tables)[0]
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    pages = int(doc.metadata["page_count"])
    text = "\n".join(el.text for el in doc.elements)
    return {
        "parser": doc.metadata["parser"],
        "fallback": doc.metadata.get("parser_fallback"),
        "pages": pages,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "tables": int(doc.metadata.get("pdf_tables", 0)),
        "pages_per_s": round(pages / seconds, 1),
        "chars": len(text),
        "titles": sum(el.category == TITLE for el in doc.elements),
        "pages_with_text": len({el.page_number for el in doc.elements}),
        "words": set(_WORD.findall(text.lower())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--files", type=int, default=6, help="PDFs spread over the folder's size range")
    parser.add_argument("--parsers", default="pypdfium2,pypdf", help="comma-separated, first is the reference")
    parser.add_argument(
        "--no-tables", action="store_true", help="ingest.pdf_tables=false: no table pass on tabular pages"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parsers = args.parsers.split(",")
    files = pick_files(args.folder, args.files)
    if not files:
        raise SystemExit(f"no PDFs in {args.folder}")
    load_file(files[0], pdf_parser="pypdf")  # warm-up: imports (not counted)
    for name in parsers:
        load_file(files[0], pdf_parser=name)

    rows = []
    totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in parsers}
    for path in files:
        results = {name: measure(path, name, not args.no_tables) for name in parsers}
        reference = results[parsers[0]]["words"]
        for name in parsers:
            r = results[name]
            totals[name][0] += r["pages"]
            totals[name][1] += r["seconds"]
            totals[name][2] += r["cpu_seconds"]
            words = r.pop("words")
            r["words_of_reference_found"] = round(len(reference & words) / max(1, len(reference)), 3)
            r["reference_words_it_adds"] = len(words - reference)
            rows.append({"file": path.name, **r})
    summary = {name: round(p / s, 1) for name, (p, s, _) in totals.items()}
    result = {
        "rows": rows,
        "pages_per_s": summary,
        "pages_per_cpu_s": {name: round(p / c, 1) for name, (p, _, c) in totals.items()},
        "pdf_tables": not args.no_tables,
        "machine": machine_line(),
        "command": reproduce_command("bench/pdf_parsers.py"),
    }
    emit(result, args.json, print_table)


def print_table(result: dict[str, Any]) -> None:
    rows, summary = result["rows"], result["pages_per_s"]
    print(f"{'file':44} {'parser':10} {'pages':>5} {'s':>7} {'pages/s':>8} {'chars':>8} {'titles':>6} {'found':>6}")
    for r in rows:
        print(
            f"{r['file'][:44]:44} {r['parser']:10} {r['pages']:>5} {r['seconds']:>7} {r['pages_per_s']:>8} "
            f"{r['chars']:>8} {r['titles']:>6} {r['words_of_reference_found']:>6}"
        )
    print("\nall files, pages/s: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    per_cpu = result["pages_per_cpu_s"]
    print("pages per CPU-second: " + ", ".join(f"{k} {v}" for k, v in per_cpu.items()))
    tables = sum(r["tables"] for r in rows)
    print(f"ingest.pdf_tables={str(result['pdf_tables']).lower()}: {tables} tables found (all parsers together)")
    print("found = share of the first parser's distinct words (3+ letters) this parser also found")
    print("machine:", result["machine"])
    print("reproduce:", result["command"])


if __name__ == "__main__":
    main()
