"""Line items of financial statements: is the gold figure in a retrieved chunk, and in the quoted answer?

Ten FinanceBench "metrics-generated" questions whose answer is one figure printed in a statement table (3M's FY2018
capital expenditure, Costco's FY2021 total assets, ...), each with the figure as the statement prints it. The ten
10-K PDFs are ingested into a collection of their own; for each question the script records whether a chunk holding
the figure is among the top 5 retrieved (and whether that chunk is on the evidence page), and whether the answer
(answer.mode=extract by default: sentences and table rows quoted verbatim) contains it. "Before" is the same run
with the PDF table pass off:

    python bench/financebench_tables.py --data-dir /tmp/fbt --tag tables
    python bench/financebench_tables.py --data-dir /tmp/fbt --tag plain --set ingest.pdf_tables=false
    ... --docs 3M_2018_10K,COSTCO_2021_10K   (fewer PDFs: only their questions)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import machine_line, reproduce_command
from bench.financebench import add_arguments, read_questions, write_json

# financebench_id -> the gold answer as the statement prints it (FinanceBench's answers are rounded or in other
# units: "$4.60" billion is "(4,625)" in millions; "$5466.00" million is "5,466,312" in thousands).
FIGURES = {
    "financebench_id_03029": "1,577",  # 3M_2018_10K: FY2018 capital expenditure (purchases of PP&E)
    "financebench_id_08286": "11,588",  # AMAZON_2019_10K: FY2019 net income
    "financebench_id_05718": "389",  # AMERICANWATERWORKS_2020_10K: FY2020 dividends paid
    "financebench_id_04417": "5,409",  # BESTBUY_2019_10K: FY2019 merchandise inventories
    "financebench_id_10285": "12,645",  # BOEING_2018_10K: FY2018 property, plant and equipment, net
    "financebench_id_04209": "59,268",  # COSTCO_2021_10K: FY2021 total assets
    "financebench_id_04700": "32,780",  # MICROSOFT_2016_10K: FY2016 total cost of revenue
    "financebench_id_03282": "5,466",  # NETFLIX_2017_10K: FY2017 total current liabilities (5,466,312 thousand)
    "financebench_id_03531": "16,525",  # NIKE_2019_10K: FY2019 total current assets
    "financebench_id_04980": "4,625",  # PEPSICO_2021_10K: FY2021 capital spending
    # The other four "Information extraction" metrics questions (bench/financebench_answers.py asks all fourteen).
    "financebench_id_04672": "8,738",  # 3M_2018_10K: FY2018 property, plant and equipment, net ($8.70 billion)
    "financebench_id_03882": "1,615.9",  # AMCOR_2020_10K: FY2020 trade receivables, net ($1616 million)
    "financebench_id_07661": "381,603",  # BLOCK_2020_10K: FY2020 net cash from operations, in thousands ($382 million)
    "financebench_id_04171": "302,578",  # MGMRESORTS_2018_10K: FY2018 accounts payable, in thousands ($303 million)
}
# bench/financebench_tables.py's own set: the first ten, one statement figure each from ten 10-Ks.
TABLE_QUESTIONS = tuple(FIGURES)[:10]
TOP_K = 5


def has_figure(text: str, figure: str) -> bool:
    """The figure as a number of its own: "1,577" in "(1,577)" or "1,577,000", not in "11,577" or "1,5770"."""
    start = 0
    while (i := text.find(figure, start)) >= 0:
        before = text[i - 1] if i else " "
        after = text[i + len(figure) : i + len(figure) + 1] or " "
        if not before.isdigit() and before not in ",." and not (after.isdigit() or after == "."):
            return True
        start = i + 1
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, docs=" (default: the ten 10-Ks)", tag="tables", set_example="ingest.pdf_tables=false")
    parser.add_argument("--save", type=Path, help="write the report with every question's row to this JSON file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_pipeline, build_store

    questions = [r for r in read_questions(args.financebench) if r["financebench_id"] in TABLE_QUESTIONS]
    names = args.docs.split(",") if args.docs else sorted({q["doc_name"] for q in questions})
    questions = [q for q in questions if q["doc_name"] in names]
    pdfs = [args.financebench / "pdfs" / f"{n}.pdf" for n in names]
    missing = [str(p) for p in pdfs if not p.is_file()]
    if missing or not questions:
        sys.exit(f"not found: {', '.join(missing)}" if missing else f"no question of {FIGURES} is about {names}")

    settings = load_settings(None, [f"data_dir={args.data_dir}", "answer.cache=false", *args.overrides])
    collection = f"financebench-tables-{len(names)}-{args.tag}"
    embedder = build_embedder(settings)
    started = time.perf_counter()
    with build_store(settings) as store:
        report = ingest_paths(pdfs, settings, store, embedder, collection=collection)
        ingest_s = time.perf_counter() - started
        for f in report.failures:
            print(f"FAILED {f.path}: {f.reason}", file=sys.stderr)
        pipeline = build_pipeline(settings, store, collection, embedder=embedder)
        out_rows: list[dict[str, Any]] = []
        for q in questions:
            figure = FIGURES[q["financebench_id"]]
            pages = {int(e["evidence_page_num"]) + 1 for e in q["evidence"]}
            retrieved = pipeline.retriever.retrieve(q["question"], top_k=TOP_K).chunks
            in_doc = [Path(str(c.payload.get("source"))).stem == q["doc_name"] for c in retrieved]
            with_figure = [d and has_figure(c.text, figure) for d, c in zip(in_doc, retrieved, strict=True)]
            on_page = [
                w and bool(pages & set(c.payload.get("pages") or []))
                for w, c in zip(with_figure, retrieved, strict=True)
            ]
            answer = pipeline.ask(q["question"])
            out_rows.append(
                {
                    "id": q["financebench_id"],
                    "doc": q["doc_name"],
                    "figure": figure,
                    "doc@5": any(in_doc),
                    "figure@5": any(with_figure),
                    "figure_on_evidence_page@5": any(on_page),
                    "answer_has_figure": has_figure(answer.text, figure),
                    "answer_mode": answer.mode,
                    "refused": answer.refused,
                    "answer": answer.text,
                }
            )

    n = len(out_rows)
    totals = {k: sum(bool(r[k]) for r in out_rows) for k in ("doc@5", "figure@5", "figure_on_evidence_page@5")}
    totals["answer_has_figure"] = sum(r["answer_has_figure"] for r in out_rows)
    totals["refused"] = sum(r["refused"] for r in out_rows)
    out = {
        "command": reproduce_command("bench/financebench_tables.py"),
        "machine": machine_line(),
        "collection": collection,
        "documents": len(names),
        "questions": n,
        "pdf_tables": settings.ingest.pdf_tables,
        "chunks_written": report.chunks_written,
        "ingest_s": round(ingest_s, 1),
        "totals": totals,
        "rows": out_rows,
    }
    if write_json(out, args.save, args.json):
        return
    print(f"command: {out['command']}")
    print(f"machine: {out['machine']}")
    print(
        f"collection {collection}: {len(names)} PDFs, {n} questions, ingest.pdf_tables={settings.ingest.pdf_tables}, "
        f"ingest {ingest_s:.0f} s ({report.chunks_written} chunks written this run)"
    )
    print(
        f"gold figure in a top-{TOP_K} chunk of the evidence document: {totals['figure@5']}/{n} "
        f"(on the evidence page {totals['figure_on_evidence_page@5']}/{n}; evidence document in top {TOP_K} "
        f"{totals['doc@5']}/{n}); in the answer: {totals['answer_has_figure']}/{n} (refused {totals['refused']})"
    )
    for r in out_rows:
        marks = " ".join(f"{k}={'Y' if r[k] else '-'}" for k in ("figure@5", "answer_has_figure"))
        print(f"  {r['doc']:<28} {r['figure']:>8}  {marks}  answer: {' '.join(r['answer'].split())[:160]}")


if __name__ == "__main__":
    main()
