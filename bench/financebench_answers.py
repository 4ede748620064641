"""End to end on FinanceBench: is the answer right, from the right filing, or honestly refused?

Asks every FinanceBench question whose evidence document is in a collection built by bench/financebench.py (same
--data-dir, --docs and --tag) with the shipped answer pipeline (answer.mode=extract on the embedded defaults:
sentences and table rows quoted verbatim, refusals when the evidence is weak). Per question it records:

- for the "metrics-generated" questions whose answer is one figure printed in a statement (FinanceBench's
  `question_reasoning` "Information extraction"; the figure as printed is in bench/financebench_tables.py): whether
  the figure is in the answer;
- for every question: whether a citation points at the evidence document, and at an evidence page; whether the
  answer was refused. The other metrics questions need arithmetic (ratios, changes), which quoting cannot do:
  for them a cited evidence page is the most a quoted answer can give (the inputs, for a reader to compute).

    python bench/financebench.py --data-dir /tmp/fb-all --docs all --tag all --set embedder.backend=onnx-int8
    python bench/financebench_answers.py --data-dir /tmp/fb-all --docs all --tag all --set embedder.backend=onnx-int8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import machine_line, reproduce_command
from bench.financebench import add_arguments, complete_documents, document_names, read_questions, write_json
from bench.financebench_tables import FIGURES, has_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, docs=", or 'all' (default: bench/financebench.py's 14)", tag="cards", set_example="...")
    parser.add_argument(
        "--existing", action="store_true", help="only the documents the collection holds completely (a stopped ingest)"
    )
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only (a quick look)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--save", type=Path, help="write the report with every question's row to this JSON file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from eval.stats import bootstrap_ci
    from rag.config import load_settings
    from rag.factory import build_embedder, build_pipeline, build_store

    names = document_names(args)
    collection = f"financebench-{len(names)}-{args.tag}"
    settings = load_settings(None, [f"data_dir={args.data_dir}", "answer.cache=false", *args.overrides])
    embedder = build_embedder(settings)
    rows: list[dict[str, Any]] = []
    with build_store(settings) as store:
        if collection not in store.list_collections():
            sys.exit(f"no collection {collection!r} in {args.data_dir}: build it with bench/financebench.py first")
        if args.existing:
            names = sorted(complete_documents(store, collection) & set(names))
        questions = [q for q in read_questions(args.financebench) if q["doc_name"] in set(names)][: args.limit]
        pipeline = build_pipeline(settings, store, collection, embedder=embedder)
        started = time.perf_counter()
        for q in questions:
            pages = {int(e["evidence_page_num"]) + 1 for e in q["evidence"]}
            t0 = time.perf_counter()
            answer = pipeline.ask(q["question"])
            ms = 1000 * (time.perf_counter() - t0)
            cited_doc = [Path(c.source).stem == q["doc_name"] for c in answer.citations]
            cited_page = [d and bool(pages & set(c.pages)) for d, c in zip(cited_doc, answer.citations, strict=True)]
            figure = FIGURES.get(q["financebench_id"])
            rows.append(
                {
                    "id": q["financebench_id"],
                    "doc": q["doc_name"],
                    "type": q["question_type"],
                    "reasoning": q["question_reasoning"],
                    "figure": figure,
                    "answer_has_figure": None if figure is None else has_figure(answer.text, figure),
                    "cites_document": any(cited_doc),
                    "first_citation_document": bool(cited_doc and cited_doc[0]),
                    "cites_evidence_page": any(cited_page),
                    "refused": answer.refused,
                    "mode": answer.mode,
                    "ms": round(ms),
                    "answer": answer.text,
                }
            )
        seconds = time.perf_counter() - started

    def share(selected: list[dict[str, Any]], key: str) -> dict[str, Any]:
        values = [float(bool(r[key])) for r in selected]
        ci = bootstrap_ci(values, n_resamples=args.resamples) if values else None
        return {"n": len(values), "hits": int(sum(values)), **(ci.__dict__ if ci else {})}

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        groups[r["type"]].append(r)
    extraction = [r for r in rows if r["figure"] is not None]
    keys = ("cites_document", "first_citation_document", "cites_evidence_page", "refused")
    out: dict[str, Any] = {
        "command": reproduce_command("bench/financebench_answers.py"),
        "machine": machine_line(),
        "collection": collection,
        "documents": len(names),
        "existing": args.existing,
        "questions": len(rows),
        "seconds": round(seconds, 1),
        "figure_in_answer": share(extraction, "answer_has_figure"),
        "groups": {name: {k: share(rs, k) for k in keys} for name, rs in groups.items()},
        "rows": rows,
    }
    if write_json(out, args.save, args.json):
        return
    print(f"command: {out['command']}")
    print(f"machine: {out['machine']}")
    print(f"collection {collection}: {len(names)} documents, {len(rows)} questions answered in {seconds:.0f} s")
    f = out["figure_in_answer"]
    if f["n"]:
        print(
            f"gold figure in the answer (metrics questions answered by one printed figure): {f['hits']}/{f['n']} "
            f"= {f['mean']:.2f} [{f['low']:.2f}, {f['high']:.2f}]"
        )
    print(f"{'questions':<20}{'n':>5}" + "".join(f"{k:>32}" for k in keys))
    for name, shares in out["groups"].items():
        n = shares[keys[0]]["n"]
        cells = "".join(f"{s['mean']:>13.2f} [{s['low']:.2f}, {s['high']:.2f}]      " for s in shares.values())
        print(f"{name:<20}{n:>5}{cells}")
    for r in extraction:
        mark = "Y" if r["answer_has_figure"] else "-"
        print(f"  {r['doc']:<28} {r['figure']:>9} {mark}  {' '.join(r['answer'].split())[:150]}")


if __name__ == "__main__":
    main()
