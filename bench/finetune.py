"""`rag finetune generator`'s loop on ClapNQ dev, base vs adapter on held-out documents, with human-written pairs.

The collection is ClapNQ's 597 gold passages (one document each). Instead of questions written by the bundled
135M model (which passes the quality filters for ~1 question in 10 here), the pairs are ClapNQ's own answerable
questions and reference answers, each tied to the chunk of its gold passage that best holds the answer; the
split, RAFT examples, training, registration and the paired evaluation are exactly `rag finetune generator`'s.

Usage (from the repository root; the collection comes from bench/refusal.py or is built here):
    python bench/finetune.py --data-dir /work/ft-data [--config finetune-cpu] [--questions 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, machine_line, reproduce_command  # noqa: E402
from bench.refusal import COLLECTION, DEFAULT_CLAPNQ  # noqa: E402  (one ClapNQ collection for both benches)
from eval.answer_metrics import lexical_support  # noqa: E402
from eval.datasets import load_clapnq  # noqa: E402
from eval.runner import stage_gold_corpus  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--clapnq", type=Path, default=DEFAULT_CLAPNQ)
    parser.add_argument("--config", default="finetune-cpu")
    parser.add_argument("--questions", type=int, default=60, help="training pairs")
    parser.add_argument("--validation-questions", type=int, default=15)
    parser.add_argument("--test-questions", type=int, default=30)
    parser.add_argument("--name", default="smollm2-clapnq")
    add_set_option(parser, "generator_training.epochs=2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from eval.finetune import make_evaluator
    from ingest.pipeline import ingest_paths
    from rag.collections import open_collection
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store
    from rag.generator_training import QAPair, finetune_generator
    from rag.retrieval import QdrantHybridRetriever, RetrievedChunk

    settings = load_settings(
        args.config,
        [
            f"data_dir={args.data_dir}",
            "ingest.workers=0",
            f"generator_training.questions={args.questions}",
            f"generator_training.validation_questions={args.validation_questions}",
            f"generator_training.test_questions={args.test_questions}",
            *args.overrides,
        ],
    )
    everything = load_clapnq(args.clapnq)
    examples = [e for e in everything if not e.unanswerable]
    corpus = stage_gold_corpus(everything, settings, "clapnq")
    embedder = build_embedder(settings)
    with build_store(settings) as store:
        ingest_paths([corpus], settings, store, embedder, collection=COLLECTION)
        handle = open_collection(store, COLLECTION, settings, embedder)
        chunks_by_record: dict[str, list[RetrievedChunk]] = {}
        for point_id, payload in store.scroll(COLLECTION):
            chunks_by_record.setdefault(str(payload.get("record_id")), []).append(
                RetrievedChunk(point_id, 1.0, payload)
            )
        pairs: list[QAPair] = []
        for e in examples:
            candidates = chunks_by_record.get(e.gold_document_ids[0], [])
            if not candidates:
                continue
            answer = e.answers[0]
            best = max(candidates, key=lambda c: (lexical_support(answer, [c.text]), -int(c.payload["chunk_index"])))
            pairs.append(QAPair(e.question, answer, best))
        by_document: dict[str, list[QAPair]] = {}
        for pair in pairs:
            by_document.setdefault(pair.chunk.document_id, []).append(pair)

        def synthesize(document_ids: Sequence[str], n: int, seed: int) -> list[QAPair]:
            chosen = [p for d in sorted(document_ids) for p in by_document.get(d, [])]
            return chosen[:n]

        evaluate = make_evaluator(settings, store, COLLECTION, settings.models_dir / args.name, embedder=embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        result = finetune_generator(settings, retriever, synthesize, evaluate, name=args.name)

    out = {
        "command": reproduce_command("bench/finetune.py"),
        "machine": machine_line(),
        "registered": result.registered,
        "reason": result.reason,
        "documents": result.documents,
        "pairs": result.pairs,
        "examples": result.examples,
        "training": result.training,
        "comparison": result.evaluation.get("comparison", {}),
        "runs": {k: result.evaluation.get(k) for k in ("base_run", "adapter_run")},
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    t = result.training
    print(f"# {out['command']}\n# {out['machine']}")
    print(f"{result.reason}; documents {result.documents}; pairs {result.pairs}; examples {result.examples}")
    print(
        f"training: {t['epochs_run']} epochs, {t['seconds']:.0f} s, peak RAM {t['peak_memory_mb']:,.0f} MB "
        f"(estimate {t['memory_estimate_mb']:,.0f} MB); history {t['history']}"
    )
    for metric, m in out["comparison"].get("metrics", {}).items():
        print(
            f"  {metric:<32} base {m['mean_a']:.3f}  adapter {m['mean_b']:.3f}  diff {m['diff']:+.3f} "
            f"[{m['low']:+.3f}, {m['high']:+.3f}]  {m['verdict']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
