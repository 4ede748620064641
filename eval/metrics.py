"""Retrieval metrics for one query, as pure functions of a ranking and graded relevance judgments.

Definitions follow trec_eval as called by BEIR through pytrec_eval, so our figures compare with published ones.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

__all__ = [
    "context_precision",
    "context_recall",
    "doc_ranking_from_chunks",
    "hit_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]


def _check(relevant: Mapping[str, int], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not any(grade > 0 for grade in relevant.values()):
        # trec_eval cannot score such a query either; callers skip it rather than count it as 0 or 1.
        raise ValueError("query has no relevant document (every grade <= 0 or no judgments); skip it before scoring")


def _top_k(ranked: Sequence[str], k: int) -> list[str]:
    """The first k distinct ids: a repeated id keeps its first rank and later copies are dropped, not scored."""
    seen: set[str] = set()
    top: list[str] = []
    for doc_id in ranked:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        top.append(doc_id)
        if len(top) == k:
            break
    return top


def _hits(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> list[bool]:
    return [relevant.get(doc_id, 0) > 0 for doc_id in _top_k(ranked, k)]


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k as trec_eval's `ndcg_cut.k` (what BEIR reports).

    Gain is the grade itself (linear, not 2**grade - 1) and grades <= 0 give 0: that is trec_eval's default,
    checked against pytrec_eval (ranking [g=1, g=2] scores 0.8597 linear, 0.7967 exponential; it gives 0.8597).
    The discount is log2(rank + 1) with rank from 1; the ideal DCG ranks every judged grade > 0 best first.
    """
    _check(relevant, k)
    dcg = sum(
        max(relevant.get(doc_id, 0), 0) / math.log2(rank + 1) for rank, doc_id in enumerate(_top_k(ranked, k), start=1)
    )
    ideal_grades = sorted((grade for grade in relevant.values() if grade > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal_grades, start=1))
    return dcg / ideal


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of all relevant ids found in the top k (trec_eval `recall.k`: the denominator is not capped at k)."""
    _check(relevant, k)
    n_relevant = sum(1 for grade in relevant.values() if grade > 0)
    return sum(_hits(ranked, relevant, k)) / n_relevant


def precision_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Relevant ids in the top k divided by k, even when fewer than k ids were retrieved (trec_eval `P.k`)."""
    _check(relevant, k)
    return sum(_hits(ranked, relevant, k)) / k


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant id within the top k, else 0 (averaged over queries this is MRR@k)."""
    _check(relevant, k)
    for rank, hit in enumerate(_hits(ranked, relevant, k), start=1):
        if hit:
            return 1.0 / rank
    return 0.0


def hit_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1.0 if any relevant id is in the top k, else 0.0 (a float so it averages like the other metrics)."""
    _check(relevant, k)
    return 1.0 if any(_hits(ranked, relevant, k)) else 0.0


def doc_ranking_from_chunks(chunk_hits: Sequence[tuple[str, float]]) -> list[str]:
    """Turn chunk-level (document id, score) pairs, sorted best first, into a document ranking.

    A document ranks by its best chunk: since the input is sorted, that is its first occurrence, so order is kept
    and later chunks of the same document are dropped. Judgments are per document, so metrics need this ranking.
    """
    for position in range(1, len(chunk_hits)):
        if chunk_hits[position][1] > chunk_hits[position - 1][1]:
            # Unsorted input would silently rank a document by a chunk that is not its best.
            raise ValueError(
                f"chunk hits must be sorted by score, best first: position {position} has score "
                f"{chunk_hits[position][1]} above the previous {chunk_hits[position - 1][1]}"
            )
    return list(dict.fromkeys(doc_id for doc_id, _score in chunk_hits))


def context_precision(context: Sequence[str], relevant: Collection[str]) -> float:
    """Share of the chunks given to the generator that come from a relevant document.

    `context` holds one document id per chunk, repeats kept: three chunks of one relevant document are three
    relevant chunks, and two chunks of an irrelevant one are two wasted slots of the prompt.
    """
    if not context:
        raise ValueError("the context is empty: context precision is undefined (the prompt held no chunk)")
    return sum(doc_id in relevant for doc_id in context) / len(context)


def context_recall(context: Sequence[str], relevant: Collection[str]) -> float:
    """Share of the relevant documents with at least one chunk in the context (0.0 for an empty context)."""
    if not relevant:
        raise ValueError("no relevant document: context recall is undefined; skip the question before scoring")
    present = set(context)
    return sum(doc_id in present for doc_id in set(relevant)) / len(set(relevant))
