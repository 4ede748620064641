"""OCR quality and speed: word error rate of each installed engine on born-digital PDF pages rasterised to scans.

Each page is rendered with PDFium at --dpi (grey, as a scanner would give it) and OCRed; its own text
layer is the reference. WER is the word-level edit distance over the reference's word count (case and
punctuation ignored), so it also counts reading-order differences; "recall" is the share of reference
words found anywhere (order-free), which isolates recognition.

Usage (from the repository root):
    python bench/ocr.py [--dpi 200] [--engines tesseract,rapidocr] [--json]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import emit, machine_line, reproduce_command  # noqa: E402
from ingest.loaders.ocr import OcrOptions, available_engines, resolve_engine  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
# (file, 0-based page): a two-column paper, a one-column paper page, a financial filing page, a scanned-looking memo.
PAGES = [
    (SHARED / "unstructured-example-docs" / "docs" / "pdf" / "layout-parser-paper-fast.pdf", 0),
    (SHARED / "unstructured-example-docs" / "docs" / "pdf" / "multi-column-2p.pdf", 0),
    (SHARED / "unstructured-example-docs" / "docs" / "pdf" / "reliance.pdf", 0),
    (SHARED / "financebench" / "pdfs" / "PEPSICO_2023_8K_dated-2023-05-05.pdf", 0),
]
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    # Ligatures and hyphenation: compare what a reader sees, not the glyph encoding.
    text = text.replace("\ufb01", "fi").replace("\ufb02", "fl").replace("\ufffe", "").replace("-\n", "")
    return _WORD.findall(text.lower())


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions), O(n*m) with two rows."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def run(dpi: int, engines: list[str]) -> dict[str, Any]:
    import pypdfium2 as pdfium

    rows: list[dict[str, Any]] = []
    for path, index in PAGES:
        if not path.is_file():
            print(f"skipped (not found): {path}", file=sys.stderr)
            continue
        pdf = pdfium.PdfDocument(path)
        page = pdf[index]
        textpage = page.get_textpage()
        reference = words(textpage.get_text_range())
        image = page.render(scale=dpi / 72).to_pil().convert("L")
        pdf.close()
        for name in engines:
            engine = resolve_engine(OcrOptions(engine=name, dpi=dpi))
            assert engine is not None
            started = time.perf_counter()
            lines = engine.read(image)
            seconds = time.perf_counter() - started
            hypothesis = words("\n".join(line.text for line in lines))
            found = sum((Counter(reference) & Counter(hypothesis)).values())
            chars = sum(len(line.text) for line in lines)
            rows.append(
                {
                    "page": f"{path.name} p{index + 1}",
                    "engine": name,
                    "reference_words": len(reference),
                    "wer": round(word_errors(reference, hypothesis) / max(1, len(reference)), 3),
                    "recall": round(found / max(1, len(reference)), 3),
                    "confidence": round(sum(line.confidence * len(line.text) for line in lines) / max(1, chars), 3),
                    "seconds": round(seconds, 2),
                }
            )
    totals: dict[str, dict[str, float]] = {}
    for name in engines:
        mine = [r for r in rows if r["engine"] == name]
        ref_words = sum(r["reference_words"] for r in mine)
        totals[name] = {
            "wer": round(sum(r["wer"] * r["reference_words"] for r in mine) / max(1, ref_words), 3),
            "recall": round(sum(r["recall"] * r["reference_words"] for r in mine) / max(1, ref_words), 3),
            "seconds_per_page": round(sum(r["seconds"] for r in mine) / max(1, len(mine)), 2),
        }
    return {
        "dpi": dpi,
        "rows": rows,
        "totals": totals,
        "machine": machine_line(),
        "command": reproduce_command("bench/ocr.py"),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'page':48} {'engine':10} {'words':>6} {'WER':>6} {'recall':>7} {'conf':>6} {'s':>7}")
    for r in result["rows"]:
        print(
            f"{r['page'][:48]:48} {r['engine']:10} {r['reference_words']:>6} {r['wer']:>6} {r['recall']:>7} "
            f"{r['confidence']:>6} {r['seconds']:>7}"
        )
    for name, t in result["totals"].items():
        print(f"\n{name}: WER {t['wer']}, recall {t['recall']}, {t['seconds_per_page']} s/page at {result['dpi']} dpi")
    print("\nWER counts reading-order differences too; recall = reference words found anywhere")
    print("machine:", result["machine"])
    print("reproduce:", result["command"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--engines", default=",".join(available_engines()), help="comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    if not engines:
        raise SystemExit("no OCR engine installed: bash scripts/setup.sh (RapidOCR) or apt-get install tesseract-ocr")
    emit(run(args.dpi, engines), args.json, print_table)


if __name__ == "__main__":
    main()
