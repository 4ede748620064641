"""Score one pipeline answer against its eval question: every per-question metric, and why it failed if it did.

Chunks are matched to gold documents by any name a dataset may use for them: the BEIR record id, the document id,
the part of a `<file>#<record>` document id after the '#', the source path, or the file name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eval.answer_metrics import (
    bleu,
    citation_correctness,
    exact_match,
    groundedness_embedding,
    groundedness_lexical,
    rouge_l,
    semantic_similarity,
    sentence_split,
    strip_citations,
    token_f1,
)
from eval.datasets import QAExample
from eval.metrics import context_precision, context_recall, hit_at_k, mrr_at_k, ndcg_at_k, recall_at_k

__all__ = [
    "FAILURES",
    "Thresholds",
    "chunk_keys",
    "failure_category",
    "gold_key",
    "score_answer",
]

# Failure categories, in the order reports list them. The first that applies is the root cause.
FAILURES = ("ok", "retrieval miss", "wrong refusal", "generation error", "missed refusal")
# Payload fields that can name a chunk's document in a dataset's gold ids, most specific first.
_KEY_FIELDS = ("record_id", "document_id", "source", "source_name")

Embed = Callable[[list[str]], npt.ArrayLike]
LlmJudge = Callable[[str, Sequence[str]], tuple[float, list[bool | None]]]


@dataclass(frozen=True)
class Thresholds:
    """Cut-offs that turn scores into yes/no judgments; recorded in run.json, since they change the figures."""

    lexical: float = 0.5  # lexical_support at or above which a sentence counts as supported
    embedding: float = 0.6  # cosine at or above which the embedding judge calls a sentence supported
    citation: float = 0.5  # lexical_support of the citing sentence by the cited chunk for a correct citation
    min_f1: float = 0.3  # token F1 under which a non-refused answer to an answerable question is a generation error


def chunk_keys(payload: Mapping[str, Any]) -> list[str]:
    """Every id a dataset may use for this chunk's document (see the module docstring), most specific first."""
    keys = [str(payload[f]) for f in _KEY_FIELDS if payload.get(f)]
    document_id = str(payload.get("document_id") or "")
    if "#" in document_id:
        keys.insert(1, document_id.rsplit("#", 1)[1])
    return keys


def gold_key(payload: Mapping[str, Any], gold: Collection[str]) -> str:
    """The gold id this chunk's document answers to, else the document's own id (record id or document id)."""
    keys = chunk_keys(payload)
    for key in keys:
        if key in gold:
            return key
    return keys[0] if keys else ""


def failure_category(
    *,
    unanswerable: bool,
    refused: bool,
    context_hit: bool | None,
    token_f1: float | None,
    min_f1: float = Thresholds.min_f1,
) -> str:
    """Why a question went wrong, root cause first, or "ok".

    Unanswerable: refusing is right, answering is a missed refusal. Answerable: no gold document in the context
    is a retrieval miss (the generator never had a chance), whatever it did next; otherwise a refusal is a wrong
    refusal, and an answer with token F1 under `min_f1` a generation error. `context_hit` None (no gold ids) skips
    the retrieval check; `token_f1` None (no reference answer) skips the answer check.
    """
    if unanswerable:
        return "ok" if refused else "missed refusal"
    if context_hit is False:
        return "retrieval miss"
    if refused:
        return "wrong refusal"
    if token_f1 is not None and token_f1 < min_f1:
        return "generation error"
    return "ok"


def _retrieval_metrics(ranking: Sequence[str], gold: Collection[str], k: int) -> dict[str, float]:
    relevant = {g: 1 for g in gold}
    return {
        f"hit@{k}": hit_at_k(ranking, relevant, k),
        f"recall@{k}": recall_at_k(ranking, relevant, k),
        f"mrr@{k}": mrr_at_k(ranking, relevant, k),
        f"ndcg@{k}": ndcg_at_k(ranking, relevant, k),
    }


def _one_pass(embed: Embed, texts: list[str]) -> Embed:
    """`embed` with `texts` encoded in a single call up front, later calls served from it (others passed through).

    A question's metrics ask for the answer, its sentences, the references and every passage sentence in three
    separate calls; one batch instead costs one forward pass and embeds a sentence the metrics share once.
    """
    unique = list(dict.fromkeys(t for t in texts if t))
    vectors = np.asarray(embed(unique), dtype=np.float64) if unique else np.zeros((0, 0))
    known = dict(zip(unique, vectors, strict=True))

    def lookup(batch: list[str]) -> npt.NDArray[np.float64]:
        missing = [t for t in dict.fromkeys(batch) if t not in known]
        if missing:
            known.update(zip(missing, np.asarray(embed(missing), dtype=np.float64), strict=True))
        return np.stack([known[t] for t in batch])

    return lookup


def score_answer(
    example: QAExample,
    answer: Any,
    *,
    k: int,
    embed: Embed,
    thresholds: Thresholds = Thresholds(),
    llm_judge: LlmJudge | None = None,
) -> dict[str, Any]:
    """One per_question.jsonl row: the answer (a rag.answering.Answer), what it was built from, every metric.

    Metrics that do not apply are absent, not 0: answer metrics need reference answers, retrieval metrics gold
    ids, groundedness and citation correctness an answer that was not a refusal.
    """
    gold = set(example.gold_document_ids)
    retrieved = [
        {
            "rank": rank,
            "chunk_id": c.id,
            "document_id": c.document_id,
            "gold_key": gold_key(c.payload, gold),
            "score": c.score,
        }
        for rank, c in enumerate(answer.retrieved, start=1)
    ]
    context = [
        {
            "number": c.number,
            "chunk_id": c.chunk.id,
            "gold_key": gold_key(c.chunk.payload, gold),
            "truncated": c.truncated,
        }
        for c in answer.chunks
    ]
    # The context is what the prompt held; a refusal on weak evidence built no prompt, so there it is what
    # retrieval found, which the prompt would have held.
    context_ids = [c["gold_key"] for c in context] or [r["gold_key"] for r in retrieved]
    text = strip_citations(answer.text)
    passages = [c.text for c in answer.chunks]
    gold_texts = [p.text for p in example.gold_passages]
    references = list(example.answers)
    sentences = [s for t in [text, *passages, *gold_texts, *references[:1]] for s in sentence_split(t)]
    embed = _one_pass(embed, [text, *references, *sentences])
    metrics: dict[str, float] = {"abstention_correct": float(answer.refused == example.unanswerable)}
    judges: dict[str, list[Any]] = {}
    checks: list[Any] = []

    if example.answers and not example.unanswerable:
        metrics["exact_match"] = exact_match(text, example.answers)
        metrics["token_f1"] = token_f1(text, example.answers)
        metrics["rouge_l"] = rouge_l(text, example.answers)
        metrics["bleu"] = bleu(text, example.answers)
        metrics["semantic_similarity"] = semantic_similarity(text, example.answers, embed)
    if gold and not example.unanswerable:
        metrics.update(_retrieval_metrics([r["gold_key"] for r in retrieved], gold, k))
        if context_ids:
            metrics["context_precision"] = context_precision(context_ids, gold)
        metrics["context_recall"] = context_recall(context_ids, gold)
    if not answer.refused and text:
        metrics["groundedness_lexical"], judges["lexical"] = groundedness_lexical(text, passages, thresholds.lexical)
        metrics["groundedness_embedding"], judges["embedding"] = groundedness_embedding(
            text, passages, embed, thresholds.embedding
        )
        if llm_judge is not None:
            metrics["groundedness_llm"], judges["llm"] = llm_judge(text, passages)
        share, checks = citation_correctness(
            answer.text, {c.number: c.text for c in answer.chunks}, thresholds.citation
        )
        if share is not None:
            metrics["citation_correctness"] = share
        if getattr(answer, "support", ()):
            # The serving checker's own verdict (answer.verify), the figure the app shows a user.
            metrics["checker_supported"] = sum(s.supported for s in answer.support) / len(answer.support)
    # The judges scored on reference answers, which are grounded in the gold passages by construction: how often
    # each judge calls a true claim unsupported (their miss rate), where the dataset ships the passages.
    if example.answers and example.gold_passages and not example.unanswerable:
        reference = example.answers[0]
        metrics["reference_groundedness_lexical"], _ = groundedness_lexical(reference, gold_texts, thresholds.lexical)
        metrics["reference_groundedness_embedding"], _ = groundedness_embedding(
            reference, gold_texts, embed, thresholds.embedding
        )

    by_number = {c.number: c for c in answer.citations}
    citations = [
        {
            "number": check.number,
            "chunk_id": by_number[check.number].chunk_id if check.number in by_number else None,
            "document_id": by_number[check.number].document_id if check.number in by_number else None,
            "sentence": check.sentence,
            "support": check.support,
            "supported": check.supported,
        }
        for check in checks
    ]
    context_hit = (metrics["context_recall"] > 0) if "context_recall" in metrics else None
    return {
        "id": example.id,
        "question": example.question,
        "unanswerable": example.unanswerable,
        "references": list(example.answers),
        "gold_ids": sorted(gold),
        "query": answer.query,
        "answer": answer.text,
        "refused": answer.refused,
        "refusal_reason": answer.refusal_reason,
        "mode": getattr(answer, "mode", "generate"),
        "answerability": getattr(answer, "answerability", None),
        "evidence": answer.evidence,
        "retrieved": retrieved,
        "context": context,
        "citations": citations,
        "dropped_citations": answer.dropped_citations,
        "metrics": metrics,
        "judges": judges,
        "latency_ms": dict(answer.timings_ms),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "model": answer.model,
        "failure": failure_category(
            unanswerable=example.unanswerable,
            refused=answer.refused,
            context_hit=context_hit,
            token_f1=metrics.get("token_f1"),
            min_f1=thresholds.min_f1,
        ),
    }
