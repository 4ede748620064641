"""Synthetic question/answer pairs written by the generator from indexed chunks, for users with no test set.

Chunks are drawn at random (seeded), the generator writes one question and a short answer per chunk in a fixed
format, and pairs that fail a check are rejected with a counted reason: the answer must come from the chunk,
the question must not copy a chunk sentence, and near-identical questions are kept once. The output is the simple
JSONL of eval/datasets.py (load_generic reads it back) with two extra columns, `chunk_id` and `context` (the
chunk's text), which `rag finetune generator` uses as the gold passage.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.answer_metrics import lexical_support, sentence_split, token_f1
from eval.datasets import QAExample
from rag.errors import UsageError
from rag.generation import GenerationOptions, Generator, Message
from rag.prompting import neutralize
from rag.store.base import Condition, Filter, VectorStore

__all__ = [
    "REJECTIONS",
    "SyntheticExample",
    "TestsetFilters",
    "TestsetResult",
    "check_pair",
    "default_testset_path",
    "generate_testset",
    "parse_reply",
    "write_testset",
]

REJECTIONS = (
    "unparseable",
    "answer not in chunk",
    "answer too long",
    "answer in question",
    "question copies the chunk",
    "duplicate question",
)
SYSTEM_PROMPT = "You write one exam question about a passage, and its short answer taken from the passage."
INSTRUCTION = (
    "Write one question that the passage answers, in your own words, and its answer: a few words copied from the "
    "passage. Reply in exactly this format:\nQuestion: <the question>\nAnswer: <the answer>"
)
_REPLY = re.compile(r"question\s*:\s*(?P<question>.+?)\s*\n+\s*answer[ \t]*:[ \t]*(?P<answer>[^\n]+)", re.I | re.S)
# Chunks are fetched by id in batches this size: one round trip per batch instead of per chunk.
_FETCH_BATCH = 32


@dataclass(frozen=True)
class TestsetFilters:
    """When a generated pair is kept; every threshold is on SQuAD-normalised tokens (eval/answer_metrics.py)."""

    min_support: float = 0.8  # share of the answer's content words that must appear in the chunk
    max_copy_f1: float = 0.8  # token F1 of the question with a chunk sentence at or above which it is a copy
    max_answer_words: int = 30  # a "short answer" longer than this is a paraphrase of the chunk, not an answer
    duplicate_f1: float = 0.8  # token F1 with an accepted question at or above which it is a duplicate
    min_chunk_words: int = 20  # chunks shorter than this (titles, table cells) are not asked about


@dataclass(frozen=True)
class SyntheticExample:
    """A generated question with the chunk it was written from."""

    example: QAExample
    chunk_id: str
    context: str

    def to_json(self) -> dict[str, Any]:
        e = self.example
        return {
            "id": e.id,
            "question": e.question,
            "answer": list(e.answers),
            "gold_documents": list(e.gold_document_ids),
            "chunk_id": self.chunk_id,
            "context": self.context,
        }


@dataclass(frozen=True)
class TestsetResult:
    examples: tuple[SyntheticExample, ...]
    rejected: dict[str, int]  # reason -> count, every reason of REJECTIONS present
    attempted: int  # chunks the generator was asked about
    chunks: int  # chunks drawn from: the collection's, or the given documents'
    skipped_short: int  # chunks drawn but under min_chunk_words

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": len(self.examples),
            "attempted": self.attempted,
            "chunks": self.chunks,
            "skipped_short": self.skipped_short,
            "rejected": self.rejected,
        }


def parse_reply(text: str) -> tuple[str, str] | None:
    """(question, answer) from a "Question: ...\\nAnswer: ..." reply, or None when the reply has another shape."""
    match = _REPLY.search(text)
    if match is None:
        return None
    question = " ".join(match.group("question").split())
    answer = match.group("answer").strip().strip('"').strip()
    if not question or not answer:
        return None
    return question, answer


def check_pair(
    question: str,
    answer: str,
    chunk_text: str,
    accepted: Sequence[str],
    filters: TestsetFilters = TestsetFilters(),
) -> str | None:
    """The reason (one of REJECTIONS) to drop this pair, or None to keep it; checks run cheapest first."""
    if len(answer.split()) > filters.max_answer_words:
        return "answer too long"
    if lexical_support(answer, [chunk_text]) < filters.min_support:
        return "answer not in chunk"
    # An answer whose every content word is in the question ("Who founded Acme?" -> "Acme's founder") tests nothing.
    if lexical_support(answer, [question]) >= 1.0:
        return "answer in question"
    if any(token_f1(question, sentence) >= filters.max_copy_f1 for sentence in sentence_split(chunk_text)):
        return "question copies the chunk"
    if any(token_f1(question, previous) >= filters.duplicate_f1 for previous in accepted):
        return "duplicate question"
    return None


# One worked example before the real passage: without it SmolLM2-135M answered in free prose (8 of 8 replies
# unparseable on samples/); with it, every reply kept the Question:/Answer: shape.
_DEMO_PASSAGE = "Visitors sign in at the front desk. The office opens at 9:00 on weekdays and closes at 17:00."
_DEMO_REPLY = "Question: When does the office open on weekdays?\nAnswer: at 9:00"


def _messages(chunk_text: str) -> list[Message]:
    return [
        Message("system", SYSTEM_PROMPT),
        Message("user", f"Passage:\n{_DEMO_PASSAGE}\n\n{INSTRUCTION}"),
        Message("assistant", _DEMO_REPLY),
        Message("user", f"Passage:\n{neutralize(chunk_text)}\n\n{INSTRUCTION}"),
    ]


def generate_testset(
    store: VectorStore,
    collection: str,
    generator: Generator,
    n: int,
    seed: int = 0,
    *,
    filters: TestsetFilters = TestsetFilters(),
    max_attempts: int | None = None,
    max_new_tokens: int = 64,
    progress: Callable[[int, int], None] | None = None,
    document_ids: Sequence[str] | None = None,
) -> TestsetResult:
    """Up to `n` checked pairs from chunks drawn in a seeded order; stops after `max_attempts` (default 3n) calls.

    Greedy decoding, and chunk ids sorted before the seeded shuffle, so a seed gives the same test set on any
    backend. `document_ids` limits the draw to those documents' chunks (fine-tuning writes questions per document
    split). `progress(accepted, attempted)` is called after each generation.
    """
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if document_ids is not None and not document_ids:
        raise UsageError("document_ids is empty: give at least one document to draw chunks from")
    # document_id has a payload index, so the store does the filtering.
    only = None if document_ids is None else Filter((Condition("document_id", any_of=tuple(document_ids)),))
    ids = sorted(point_id for point_id, _ in store.scroll(collection, flt=only, fields=["document_id"]))
    if not ids:
        where = "the given documents have no chunk in" if only is not None else "nothing to draw from in"
        raise UsageError(f"{where} collection {collection!r}: ingest documents before generating questions")
    random.Random(seed).shuffle(ids)
    limit = max_attempts if max_attempts is not None else 3 * n
    options = GenerationOptions.from_settings(generator.settings, max_new_tokens=max_new_tokens, temperature=0.0)
    accepted: list[SyntheticExample] = []
    rejected: Counter[str] = Counter()
    attempted = skipped = 0
    for start in range(0, len(ids), _FETCH_BATCH):
        if len(accepted) >= n or attempted >= limit:
            break
        for point in store.retrieve(collection, ids[start : start + _FETCH_BATCH]):
            if len(accepted) >= n or attempted >= limit:
                break
            text = str(point.payload.get("text", ""))
            if len(text.split()) < filters.min_chunk_words:
                skipped += 1
                continue
            attempted += 1
            reply, _stats = generator.generate(_messages(text), options)
            parsed = parse_reply(reply)
            questions = [s.example.question for s in accepted]
            reason = "unparseable" if parsed is None else check_pair(*parsed, text, questions, filters)
            if reason is not None:
                rejected[reason] += 1
            else:
                assert parsed is not None
                question, answer = parsed
                example = QAExample(
                    id=f"synthetic-{len(accepted) + 1}",
                    question=question,
                    answers=(answer,),
                    unanswerable=False,
                    gold_document_ids=(str(point.payload.get("document_id", "")),),
                )
                accepted.append(SyntheticExample(example, point.id, text))
            if progress is not None:
                progress(len(accepted), attempted)
    return TestsetResult(
        examples=tuple(accepted),
        rejected={reason: rejected.get(reason, 0) for reason in REJECTIONS},
        attempted=attempted,
        chunks=len(ids),
        skipped_short=skipped,
    )


def default_testset_path(data_dir: Path, collection: str, n: int, seed: int) -> Path:
    """`<data_dir>/eval-testsets/<collection>-n<n>-seed<seed>.jsonl`."""
    return data_dir / "eval-testsets" / f"{collection}-n{n}-seed{seed}.jsonl"


def write_testset(examples: Sequence[SyntheticExample], path: Path) -> Path:
    """The simple JSONL format (one question per line), readable by eval.datasets.load_generic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
    return path
