"""What `rag finetune generator` takes from the eval harness: synthetic questions from chosen documents (the
test-set generator) and the base-vs-adapter comparison on held-out documents (two runs and a paired comparison).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.compare import compare_runs
from eval.runconfig import RunSpec
from eval.runner import run_eval
from eval.testset import generate_testset
from rag.config import Settings
from rag.generation import Generator
from rag.generator_training import QAPair
from rag.retrieval import RetrievedChunk
from rag.store.base import VectorStore

__all__ = ["make_evaluator", "make_synthesizer", "write_pairs_testset"]


def make_synthesizer(
    store: VectorStore, collection: str, generator: Generator, log: Callable[[str], None] | None = None
) -> Callable[[Sequence[str], int, int], list[QAPair]]:
    """(document ids, n, seed) -> checked QA pairs written by `generator` from those documents' chunks."""

    def synthesize(document_ids: Sequence[str], n: int, seed: int) -> list[QAPair]:
        def progress(accepted: int, attempted: int) -> None:
            if log is not None and attempted % 10 == 0:
                log(f"  {accepted}/{n} questions kept after {attempted} written")

        result = generate_testset(store, collection, generator, n, seed, document_ids=document_ids, progress=progress)
        if log is not None:
            log(f"  {len(result.examples)} questions kept of {result.attempted} written; rejected: {result.rejected}")
        payloads = {p.id: p.payload for p in store.retrieve(collection, [s.chunk_id for s in result.examples])}
        return [
            QAPair(s.example.question, s.example.answers[0], RetrievedChunk(s.chunk_id, 1.0, payloads[s.chunk_id]))
            for s in result.examples
            if s.chunk_id in payloads
        ]

    return synthesize


def write_pairs_testset(pairs: Sequence[QAPair], path: Path) -> Path:
    """The pairs in the simple eval format (eval/datasets.py), gold document = the chunk's document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": f"test-{i}",
            "question": p.question,
            "answer": [p.answer],
            "gold_documents": [p.chunk.document_id],
        }
        for i, p in enumerate(pairs, 1)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_evaluator(
    settings: Settings, store: VectorStore, collection: str, folder: Path, embedder: Any = None
) -> Callable[[Generator, Generator, Sequence[QAPair]], dict[str, Any]]:
    """(base, adapted, test pairs) -> both runs' metrics and the paired comparison (adapter minus base)."""

    def evaluate(base: Generator, adapted: Generator, pairs: Sequence[QAPair]) -> dict[str, Any]:
        dataset = write_pairs_testset(pairs, folder / "testset.jsonl")
        spec = RunSpec(
            dataset=dataset, name="finetune-test", collection=collection, seed=settings.generator_training.seed
        )
        runs = {}
        for label, generator in (("base", base), ("adapter", adapted)):
            runs[label] = run_eval(
                spec, settings, store, output=folder / f"eval-{label}", generator=generator, embedder=embedder
            )
        comparison = compare_runs(runs["base"].run_dir, runs["adapter"].run_dir, metric="token_f1")
        return {
            "questions": len(pairs),
            "base_run": str(runs["base"].run_dir),
            "adapter_run": str(runs["adapter"].run_dir),
            "comparison": comparison.to_dict(),
        }

    return evaluate
