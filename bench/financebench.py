"""Finding the right document among look-alikes: FinanceBench retrieval at document and page level.

Ingests a subset of FinanceBench's PDFs (the default holds several filings per company: 10-Ks,
10-Qs, 8-Ks and earnings releases of the same issuers and years) into a collection, then asks
every question whose evidence document is in the subset. A question scores doc@k when a chunk of
its evidence document is in the top k, page@k when such a chunk's pages include an evidence page.
Each inference mode of the query's document constraint (`retrieval.infer_filters`) is scored on
the same collection; card context in chunks is a collection setting (`chunking.card_tokens`), so
"before" is a second collection built with `--set chunking.card_tokens=0`.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python bench/financebench.py --data-dir /tmp/fb --tag cards
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python bench/financebench.py --data-dir /tmp/fb --tag plain \
        --set chunking.card_tokens=0
    ... --docs all    (all 74 PDFs, 10k pages: tens of minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, machine_info, machine_line, reproduce_command  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "financebench"
# 14 PDFs, 523 pages, 31 questions: five issuers with two to four filings each (same company, other year,
# quarter or form: 10-K, 10-Q, 8-K, earnings release) plus one more, so every question has look-alikes.
DEFAULT_DOCS = [
    "AMCOR_2023_10K",
    "AMCOR_2023Q2_10Q",
    "AMCOR_2023Q4_EARNINGS",
    "AMCOR_2022_8K_dated-2022-07-01",
    "BESTBUY_2023_10K",
    "BESTBUY_2024Q2_10Q",
    "JOHNSON_JOHNSON_2022Q4_EARNINGS",
    "JOHNSON_JOHNSON_2023Q2_EARNINGS",
    "JOHNSON_JOHNSON_2023_8K_dated-2023-08-30",
    "MGMRESORTS_2022Q4_EARNINGS",
    "MGMRESORTS_2023Q2_10Q",
    "ULTABEAUTY_2023Q4_EARNINGS",
    "PEPSICO_2023Q1_EARNINGS",
    "PEPSICO_2023_8K_dated-2023-05-05",
]
DOC_KS = (1, 5, 10)
PAGE_KS = (5, 10, 20)


def add_arguments(parser: argparse.ArgumentParser, *, docs: str, tag: str, set_example: str) -> None:
    """The options both FinanceBench scripts take: the data folder, which PDFs, where and under what tag to build."""
    parser.add_argument("--financebench", type=Path, default=DEFAULT_DATA, help="FinanceBench folder (SOURCE.md)")
    parser.add_argument("--docs", default=None, help=f"comma-separated document names{docs}")
    parser.add_argument("--data-dir", type=Path, required=True, help="where the collection is built (kept)")
    parser.add_argument("--tag", default=tag, help=f"collection name suffix, e.g. 'plain' for {set_example}")
    add_set_option(parser, set_example)


def read_questions(data: Path) -> list[dict[str, Any]]:
    """Every question of FinanceBench's open-source set, as its JSONL rows."""
    path = data / "data" / "financebench_open_source.jsonl"
    if not path.is_file():
        sys.exit(f"{path}: not found; pass --financebench (see its SOURCE.md)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(out: dict[str, Any], save: Path | None, as_json: bool) -> bool:
    """The report to the --save file, and to stdout with --json: True when printed (no human report then)."""
    if save:
        save.write_text(json.dumps(out, indent=2), encoding="utf-8")
    if as_json:
        print(json.dumps(out, indent=2))
    return as_json


def document_names(args: argparse.Namespace) -> list[str]:
    """The PDF names `--docs` asks for: every PDF for 'all', the listed ones, or DEFAULT_DOCS."""
    if args.docs == "all":
        return sorted(p.stem for p in (args.financebench / "pdfs").glob("*.pdf"))
    return args.docs.split(",") if args.docs else DEFAULT_DOCS


def complete_documents(store: Any, collection: str) -> set[str]:
    """Names of the PDFs the collection holds completely (every chunk, one content hash): what an ingest stopped
    part-way has finished (see ingest/pipeline.py's module docstring)."""
    from ingest.pipeline import load_state

    return {Path(st.source).stem for st in load_state(store, collection).values() if st.complete}


def load_questions(data: Path, docs: set[str]) -> list[dict[str, Any]]:
    return [r for r in read_questions(data) if r["doc_name"] in docs]


def score(question: dict[str, Any], payloads: list[dict[str, Any]]) -> dict[str, float]:
    """doc@k and page@k of one question from its ranked chunk payloads (evidence pages are zero-based)."""
    doc = question["doc_name"]
    pages = {int(e["evidence_page_num"]) + 1 for e in question["evidence"]}
    in_doc = [Path(str(p.get("source", ""))).stem == doc for p in payloads]
    on_page = [d and bool(pages & set(p.get("pages") or [])) for d, p in zip(in_doc, payloads, strict=True)]
    out = {f"doc@{k}": float(any(in_doc[:k])) for k in DOC_KS}
    out.update({f"page@{k}": float(any(on_page[:k])) for k in PAGE_KS})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, docs=", or 'all' (default: 14 PDFs)", tag="cards", set_example="chunking.card_tokens=0")
    parser.add_argument("--modes", default="off,prefer,filter", help="retrieval.infer_filters values to score")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--save", type=Path, help="write the report with every question's scores to this JSON file")
    parser.add_argument(
        "--compare", type=Path, help="a --save file of another run (e.g. card_tokens=0): paired differences to it"
    )
    parser.add_argument(
        "--existing",
        action="store_true",
        help="no ingest: score the collection as it is, on the questions about the documents it holds completely "
        "(an ingest stopped part-way)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from eval.stats import bootstrap_ci, paired_bootstrap
    from ingest.pipeline import ingest_paths
    from rag.collections import open_collection
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store
    from rag.retrieval import QdrantHybridRetriever

    pdfs = args.financebench / "pdfs"
    if not pdfs.is_dir():
        sys.exit(f"{pdfs}: not found; pass --financebench (see its SOURCE.md)")
    names = document_names(args)
    missing = [n for n in names if not (pdfs / f"{n}.pdf").is_file()]
    if missing:
        sys.exit(f"not in {pdfs}: {', '.join(missing)}")
    settings = load_settings(None, [f"data_dir={args.data_dir}", *args.overrides])
    collection = f"financebench-{len(names)}-{args.tag}"
    embedder = build_embedder(settings)

    started = time.perf_counter()
    with build_store(settings) as store:
        chunks_written = 0
        if args.existing:
            if collection not in store.list_collections():
                sys.exit(f"no collection {collection!r} in {args.data_dir}: build it without --existing first")
            names = sorted(complete_documents(store, collection) & set(names))
        else:
            paths = [pdfs / f"{n}.pdf" for n in names]
            report = ingest_paths(paths, settings, store, embedder, collection=collection)
            chunks_written = report.chunks_written
            for f in report.failures:
                print(f"FAILED {f.path}: {f.reason}", file=sys.stderr)
        ingest_s = time.perf_counter() - started
        questions = load_questions(args.financebench, set(names))
        handle = open_collection(store, collection, settings, embedder)
        results: dict[str, Any] = {}
        for mode in args.modes.split(","):
            retrieval = settings.retrieval.model_copy(update={"infer_filters": mode})
            retriever = QdrantHybridRetriever(handle, embedder, retrieval)
            per_metric: dict[str, list[float]] = {f"doc@{k}": [] for k in DOC_KS}
            per_metric.update({f"page@{k}": [] for k in PAGE_KS})
            inferred = Counter[str]()
            t0 = time.perf_counter()
            for q in questions:
                result = retriever.retrieve(q["question"], top_k=max(PAGE_KS))
                constraint = retriever.last_constraint
                if constraint is not None and constraint.filter is not None:
                    hit = any(Path(str(c.payload.get("source"))).stem == q["doc_name"] for c in result.chunks[:1])
                    inferred["constrained"] += 1
                    inferred["constrained, top-1 document right"] += int(hit)
                for key, value in score(q, [c.payload for c in result.chunks]).items():
                    per_metric[key].append(value)
            seconds = time.perf_counter() - t0
            results[mode] = {
                "metrics": {k: bootstrap_ci(v, n_resamples=args.resamples).__dict__ for k, v in per_metric.items()},
                "per_question": per_metric,
                "constraints": dict(inferred),
                "ms_per_query": 1000 * seconds / max(1, len(questions)),
            }

    out: dict[str, Any] = {
        "command": reproduce_command("bench/financebench.py"),
        "machine": machine_line(),
        "machine_info": machine_info(),
        "collection": collection,
        "documents": len(names),
        "document_names": names,
        "existing": args.existing,
        "questions": len(questions),
        "chunks_written": chunks_written,
        "ingest_s": round(ingest_s, 1),
        "chunking": settings.chunking.model_dump(),
        "results": results,
    }
    baseline = json.loads(args.compare.read_text(encoding="utf-8")) if args.compare else None
    paired_keys = ("doc@1", "doc@5", "page@10")
    deltas: list[tuple[str, str, dict[str, Any]]] = []
    first_mode = next(iter(results))
    for mode, r in results.items():
        against = [(f"{first_mode} (this collection)", results[first_mode])] if mode != first_mode else []
        if baseline is not None and mode in baseline["results"]:
            against.append((f"{mode} in {baseline['collection']}", baseline["results"][mode]))
        for label, other in against:
            cmp = {k: paired_bootstrap(other["per_question"][k], r["per_question"][k]).__dict__ for k in paired_keys}
            deltas.append((mode, label, cmp))
    out["paired"] = [{"mode": m, "against": label, **cmp} for m, label, cmp in deltas]
    if write_json(out, args.save, args.json):
        return
    print(f"command: {out['command']}")
    load = out["machine_info"]["loadavg_1m_5m_at_end"]
    print(f"machine: {out['machine']} (load average at the end {load}: a shared machine slows ingest, not scores)")
    how = (
        "no ingest (--existing: the documents it holds completely)"
        if args.existing
        else f"ingest {ingest_s:.0f} s ({chunks_written} chunks written this run)"
    )
    print(f"collection {collection}: {len(names)} PDFs, {len(questions)} questions, chunking {out['chunking']}, {how}")
    keys = [f"doc@{k}" for k in DOC_KS] + [f"page@{k}" for k in PAGE_KS]
    print(f"{'infer_filters':<14}" + "".join(f"{k:>20}" for k in keys) + "   constrained (top-1 right)")
    for mode, r in results.items():
        cells = "".join(
            f"{r['metrics'][k]['mean']:>7.3f} [{r['metrics'][k]['low']:.2f},{r['metrics'][k]['high']:.2f}]"
            for k in keys
        )
        c = r["constraints"]
        print(
            f"{mode:<14}{cells}   {c.get('constrained', 0)}/{len(questions)} "
            f"({c.get('constrained, top-1 document right', 0)})  {r['ms_per_query']:.0f} ms/query"
        )
    for mode, label, cmp in deltas:
        cells = "  ".join(f"{k} {v['diff']:+.3f} [{v['low']:+.2f},{v['high']:+.2f}]" for k, v in cmp.items())
        print(f"paired: {mode} vs {label}: {cells}")


if __name__ == "__main__":
    main()
