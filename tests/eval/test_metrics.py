"""Retrieval metrics pinned on a hand-checked fixture, and cross-checked against pytrec_eval when installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import (
    context_precision,
    context_recall,
    doc_ranking_from_chunks,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# Five documents d1..d5, three queries. log2(2) = 1, log2(3) = 1.58496, log2(4) = 2, log2(6) = 2.58496.
RANKINGS: dict[str, list[str]] = {
    "q1": ["d3", "d2", "d1", "d4", "d5"],
    "q2": ["d1", "d2", "d3", "d4", "d5"],
    # d2 is retrieved twice: the copy at rank 4 is dropped, so d5 moves up to rank 4.
    "q3": ["d4", "d1", "d2", "d2", "d5"],
}
QRELS: dict[str, dict[str, int]] = {
    "q1": {"d1": 2, "d3": 1},
    "q2": {"d5": 1},
    # Grade 0 and a negative grade are judged but not relevant: no gain, not counted by recall.
    "q3": {"d2": 3, "d4": 0, "d1": -1},
}

# q1 @3: ranks d3 (1), d2 (0), d1 (2).
#   DCG  = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
#   IDCG = 2/log2(2) + 1/log2(3)             = 2 + 0.63093 = 2.63093
#   nDCG = 2 / 2.63093 = 0.76018; recall = 2/2; P = 2/3; first relevant at rank 1 -> MRR 1; hit 1
# q2 @3: d1, d2, d3 are all 0 -> every metric 0. @5: d5 at rank 5.
#   nDCG@5 = (1/log2(6)) / (1/log2(2)) = 0.38685; recall 1; P = 1/5; MRR = 1/5
# q3 @3: d4 (0), d1 (-1 -> 0), d2 (3).
#   DCG = 3/log2(4) = 1.5; IDCG = 3/log2(2) = 3; nDCG = 0.5; recall 1/1; P = 1/3; MRR = 1/3
EXPECTED_AT_3: dict[str, dict[str, float]] = {
    "q1": {"ndcg": 2 / (2 + 1 / math.log2(3)), "recall": 1.0, "precision": 2 / 3, "mrr": 1.0, "hit": 1.0},
    "q2": {"ndcg": 0.0, "recall": 0.0, "precision": 0.0, "mrr": 0.0, "hit": 0.0},
    "q3": {"ndcg": 0.5, "recall": 1.0, "precision": 1 / 3, "mrr": 1 / 3, "hit": 1.0},
}
METRICS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": mrr_at_k,
    "hit": hit_at_k,
}


@pytest.mark.parametrize("query_id", sorted(EXPECTED_AT_3))
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_fixture_at_3(query_id: str, metric: str) -> None:
    got = METRICS[metric](RANKINGS[query_id], QRELS[query_id], 3)
    assert got == pytest.approx(EXPECTED_AT_3[query_id][metric], abs=1e-12)


def test_fixture_hand_values() -> None:
    # The decimals in the comments above, so a wrong formula cannot hide behind a shared expression.
    assert ndcg_at_k(RANKINGS["q1"], QRELS["q1"], 3) == pytest.approx(0.76018, abs=1e-5)
    # Mean nDCG@3 over the three queries = (0.76018 + 0 + 0.5) / 3 = 0.42006
    mean = sum(ndcg_at_k(RANKINGS[q], QRELS[q], 3) for q in QRELS) / 3
    assert mean == pytest.approx(0.42006, abs=1e-5)


def test_q2_relevant_at_rank_5() -> None:
    ranked, relevant = RANKINGS["q2"], QRELS["q2"]
    assert ndcg_at_k(ranked, relevant, 5) == pytest.approx(0.38685, abs=1e-5)
    assert recall_at_k(ranked, relevant, 5) == 1.0
    assert precision_at_k(ranked, relevant, 5) == pytest.approx(0.2)
    assert mrr_at_k(ranked, relevant, 5) == pytest.approx(0.2)
    assert hit_at_k(ranked, relevant, 5) == 1.0


def test_k_1_ideal_is_best_grade() -> None:
    # q1 @1: d3 (grade 1) against the ideal d1 (grade 2): nDCG = 1/2; recall 1/2; P 1/1.
    assert ndcg_at_k(RANKINGS["q1"], QRELS["q1"], 1) == pytest.approx(0.5)
    assert recall_at_k(RANKINGS["q1"], QRELS["q1"], 1) == pytest.approx(0.5)
    assert precision_at_k(RANKINGS["q1"], QRELS["q1"], 1) == 1.0


def test_gain_is_linear_not_exponential() -> None:
    # Ranking [g=1, g=2]: linear (1 + 2/log2 3) / (2 + 1/log2 3) = 0.85972; 2^g - 1 would give 0.79671.
    assert ndcg_at_k(["a", "b"], {"a": 1, "b": 2}, 2) == pytest.approx(0.85972, abs=1e-5)


def test_duplicates_count_once() -> None:
    # q3 @4 without the duplicate: d4, d1, d2, d5 -> one relevant in 4 -> P = 1/4 (not 2/4).
    assert precision_at_k(RANKINGS["q3"], QRELS["q3"], 4) == pytest.approx(0.25)
    # A relevant id repeated at the top must not earn gain twice: nDCG stays at most 1.
    assert ndcg_at_k(["d2", "d2", "d2"], {"d2": 3}, 3) == pytest.approx(1.0)
    assert recall_at_k(["d2", "d2"], {"d2": 1, "d5": 1}, 2) == pytest.approx(0.5)


def test_short_and_empty_rankings() -> None:
    # Fewer than k retrieved: precision still divides by k, as trec_eval's P.k.
    assert precision_at_k(["d1"], {"d1": 1}, 5) == pytest.approx(0.2)
    assert ndcg_at_k(["d1"], {"d1": 1}, 5) == pytest.approx(1.0)
    for metric in METRICS.values():
        assert metric([], {"d1": 1}, 10) == 0.0


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("relevant", [{}, {"d1": 0, "d2": -1}])
def test_no_relevant_raises(metric: str, relevant: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="no relevant document"):
        METRICS[metric](["d1", "d2"], relevant, 3)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_k_must_be_positive(metric: str) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        METRICS[metric](["d1"], {"d1": 1}, 0)


def test_doc_ranking_from_chunks_keeps_best_chunk_order() -> None:
    hits = [("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.7), ("b", 0.1)]
    assert doc_ranking_from_chunks(hits) == ["a", "b", "c"]
    assert doc_ranking_from_chunks([]) == []


def test_doc_ranking_from_chunks_rejects_unsorted() -> None:
    with pytest.raises(ValueError, match="position 2"):
        doc_ranking_from_chunks([("a", 0.9), ("b", 0.5), ("c", 0.6)])


def test_matches_pytrec_eval_on_random_rankings() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pip install pytrec-eval-terrier to cross-check")
    rng = np.random.default_rng(1234)
    doc_ids = [f"d{i}" for i in range(30)]
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, dict[str, float]] = {}
    rankings: dict[str, list[str]] = {}
    for q in range(50):
        query_id = f"q{q}"
        judged = rng.choice(doc_ids, size=int(rng.integers(1, 12)), replace=False)
        grades = rng.integers(-1, 4, size=judged.size)
        grades[0] = max(int(grades[0]), 1)  # at least one relevant, else the query is skipped
        qrels[query_id] = {str(d): int(g) for d, g in zip(judged, grades, strict=True)}
        ranking = [str(d) for d in rng.permutation(doc_ids)[: int(rng.integers(1, 25))]]
        rankings[query_id] = ranking
        # Distinct descending scores: trec_eval re-sorts by score and breaks ties by doc id.
        runs[query_id] = {d: float(len(ranking) - i) for i, d in enumerate(ranking)}
    cuts = (1, 3, 5, 10, 20)
    measures = {f"{m}.{','.join(map(str, cuts))}" for m in ("ndcg_cut", "recall", "P")}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(runs)
    for query_id, ranking in rankings.items():
        for k in cuts:
            ref = reference[query_id]
            assert ndcg_at_k(ranking, qrels[query_id], k) == pytest.approx(ref[f"ndcg_cut_{k}"], abs=1e-9)
            assert recall_at_k(ranking, qrels[query_id], k) == pytest.approx(ref[f"recall_{k}"], abs=1e-9)
            assert precision_at_k(ranking, qrels[query_id], k) == pytest.approx(ref[f"P_{k}"], abs=1e-9)


def test_context_precision_and_recall_count_chunks_and_documents() -> None:
    # Five prompt chunks from documents a, a, b, c, a; relevant documents a and d.
    # Precision: chunks from a relevant document / chunks = 3/5 (each chunk of a counts).
    # Recall: relevant documents with a chunk in the context = {a} of {a, d} = 1/2.
    context = ["a", "a", "b", "c", "a"]
    assert context_precision(context, {"a", "d"}) == pytest.approx(0.6)
    assert context_recall(context, {"a", "d"}) == pytest.approx(0.5)
    assert context_recall([], {"a"}) == 0.0
    with pytest.raises(ValueError, match="context is empty"):
        context_precision([], {"a"})
    with pytest.raises(ValueError, match="no relevant document"):
        context_recall(["a"], set())
