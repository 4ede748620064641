"""Calibrates `answer.min_evidence` on ClapNQ dev: how well the evidence score alone separates questions the
documents answer (300) from those they do not (300), over a collection of all 597 gold passages.

No generation: each question is retrieved as `rag ask` would (hybrid, answer.max_chunks chunks) and scored
with the same evidence function. For each threshold it prints abstention precision / recall / F1 and the
wrong-refusal rate on answerable questions; the model's own refusals come on top of this (eval harness).

Usage (from the repository root):
    python bench/refusal.py --data-dir /work/clapnq-data [--clapnq ../shared/data/clapnq-dev] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import machine_line, reproduce_command  # noqa: E402
from eval.answer_metrics import abstention_metrics  # noqa: E402
from eval.datasets import load_clapnq  # noqa: E402
from eval.runner import stage_gold_corpus  # noqa: E402

DEFAULT_CLAPNQ = REPO.parent / "shared" / "data" / "clapnq-dev"
COLLECTION = "eval-clapnq"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--clapnq", type=Path, default=DEFAULT_CLAPNQ)
    parser.add_argument("--thresholds", default="0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ingest.pipeline import ingest_paths
    from rag.answering import RagPipeline
    from rag.collections import open_collection
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store
    from rag.retrieval import QdrantHybridRetriever, search

    settings = load_settings(None, [f"data_dir={args.data_dir}", "ingest.workers=0"])
    examples = load_clapnq(args.clapnq)
    corpus = stage_gold_corpus(examples, settings, "clapnq")
    embedder = build_embedder(settings)
    rows: list[dict[str, Any]] = []
    with build_store(settings) as store:
        report = ingest_paths([corpus], settings, store, embedder, collection=COLLECTION)
        print(f"corpus: {report.files_seen} file, {report.chunks_written} chunks written", file=sys.stderr)
        handle = open_collection(store, COLLECTION, settings, embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        scorer = RagPipeline(retriever, generator=None, settings=settings)  # type: ignore[arg-type]  # evidence only
        start = time.perf_counter()
        for ex in examples:
            found = search(retriever, None, ex.question, top_k=settings.answer.max_chunks)
            ids = [str(c.payload.get("record_id")) for c in found.chunks]
            rows.append(
                {
                    "unanswerable": ex.unanswerable,
                    "evidence": scorer.evidence(ex.question, found.chunks),
                    "gold_at_1": bool(ids[:1]) and ids[0] in ex.gold_document_ids,
                    "gold_in_prompt": any(i in ex.gold_document_ids for i in ids),
                }
            )
        seconds = time.perf_counter() - start
    thresholds = [float(t) for t in args.thresholds.split(",")]
    table = []
    for t in thresholds:
        m = abstention_metrics([r["evidence"] < t for r in rows], [r["unanswerable"] for r in rows])
        table.append(
            {"threshold": t, **{k: getattr(m, k) for k in ("precision", "recall", "f1", "wrong_refusal_rate")}}
        )
    answerable = [r for r in rows if not r["unanswerable"]]
    mean = {
        k: sum(r["evidence"] for r in rows if r["unanswerable"] == u) / sum(1 for r in rows if r["unanswerable"] == u)
        for k, u in (("answerable", False), ("unanswerable", True))
    }
    result = {
        "command": reproduce_command("bench/refusal.py"),
        "machine": machine_line(),
        "questions": len(rows),
        "seconds_per_question": seconds / len(rows),
        "gold_at_1_answerable": sum(r["gold_at_1"] for r in answerable) / len(answerable),
        "gold_in_prompt_answerable": sum(r["gold_in_prompt"] for r in answerable) / len(answerable),
        "mean_evidence": mean,
        "sweep": table,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"# {result['command']}  ({result['machine']})")
    print(
        f"{len(rows)} questions, {result['seconds_per_question'] * 1000:.0f} ms each (retrieve + evidence); "
        f"answerable: gold passage first {result['gold_at_1_answerable']:.3f}, in the prompt "
        f"{result['gold_in_prompt_answerable']:.3f}; mean evidence answerable {mean['answerable']:.3f}, "
        f"unanswerable {mean['unanswerable']:.3f}"
    )
    print("threshold  abstain-precision  abstain-recall  abstain-F1  wrong-refusals(answerable)")

    def fmt(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    for row in table:
        print(
            f"{row['threshold']:9.2f}  {fmt(row['precision']):>17}  {fmt(row['recall']):>14}  {fmt(row['f1']):>10}  "
            f"{fmt(row['wrong_refusal_rate']):>26}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
