"""Per-question scoring: gold-id matching, failure categories, and one answer scored by hand."""

from __future__ import annotations

from typing import Any

import pytest

from eval.datasets import GoldPassage, QAExample
from eval.scoring import FAILURES, Thresholds, chunk_keys, failure_category, gold_key, score_answer
from rag.answering import Answer, Citation
from rag.prompting import REFUSAL, PromptChunk
from rag.retrieval import RetrievedChunk
from tests.eval.test_answer_metrics import fake_embed


def test_a_chunk_answers_to_every_name_a_dataset_may_use() -> None:
    record = {"document_id": "/data/corpus.jsonl#p7", "source": "/data/corpus.jsonl", "source_name": "corpus.jsonl",
              "record_id": "p7"}  # fmt: skip
    assert chunk_keys(record) == ["p7", "p7", "/data/corpus.jsonl#p7", "/data/corpus.jsonl", "corpus.jsonl"]
    assert gold_key(record, {"p7"}) == "p7"
    handbook = {"document_id": "/docs/handbook.md", "source": "/docs/handbook.md", "source_name": "handbook.md"}
    assert gold_key(handbook, {"handbook.md"}) == "handbook.md"  # a spreadsheet names the file
    assert gold_key(handbook, {"/docs/handbook.md"}) == "/docs/handbook.md"  # or the document id
    assert gold_key(handbook, {"other.pdf"}) == "/docs/handbook.md"  # not gold: its own id


@pytest.mark.parametrize(
    ("unanswerable", "refused", "context_hit", "f1", "expected"),
    [
        (True, True, None, None, "ok"),
        (True, False, None, None, "missed refusal"),
        (False, False, False, 0.9, "retrieval miss"),  # a lucky answer without the gold document still missed
        (False, True, False, 0.0, "retrieval miss"),  # the refusal follows from the miss: root cause first
        (False, True, True, 0.0, "wrong refusal"),
        (False, False, True, 0.1, "generation error"),
        (False, False, True, 0.3, "ok"),  # min_f1 itself passes
        (False, False, None, 0.1, "generation error"),  # no gold ids: retrieval unchecked
        (False, False, True, None, "ok"),  # no reference answer: nothing to hold the answer against
    ],
)
def test_failure_category(
    unanswerable: bool, refused: bool, context_hit: bool | None, f1: float | None, expected: str
) -> None:
    assert expected in FAILURES
    got = failure_category(unanswerable=unanswerable, refused=refused, context_hit=context_hit, token_f1=f1)
    assert got == expected


def _chunk(chunk_id: str, source: str, text: str, score: float) -> RetrievedChunk:
    payload = {"document_id": f"/docs/{source}", "source": f"/docs/{source}", "source_name": source, "text": text}
    return RetrievedChunk(chunk_id, score, payload)


def _answer(text: str, retrieved: list[RetrievedChunk], in_prompt: int, refused: bool = False) -> Any:
    chunks = tuple(PromptChunk(i + 1, c, c.text, False) for i, c in enumerate(retrieved[:in_prompt]))
    citations = tuple(
        Citation(c.number, c.chunk.id, c.chunk.document_id, c.chunk.payload["source"], "", (), (), None, None)
        for c in chunks
        if f"[{c.number}]" in text
    )
    return Answer("q", "q", text, refused, "model" if refused else None, citations, chunks, tuple(retrieved), 0.8, 0,
                  {"retrieve": 1.0}, 100, 10, "scripted")  # fmt: skip


RETRIEVED = [
    _chunk("c1", "faq.html", "Green cheese is sold in Paris.", 0.9),
    _chunk("c2", "tower.md", "The tower is in Paris. It was built in 1889.", 0.8),
    _chunk("c3", "tower.md", "The tower is green.", 0.7),
    _chunk("c4", "other.txt", "Unrelated.", 0.6),
]


def test_an_answer_scored_by_hand() -> None:
    example = QAExample("t1", "When was the tower built?", ("built in 1889",), False, ("tower.md",))
    answer = _answer("The tower was built in 1889 [2]. Cheese is green [1].", RETRIEVED, in_prompt=3)
    row = score_answer(example, answer, k=4, embed=fake_embed)
    m = row["metrics"]
    # Answer text without markers: "tower was built in 1889 cheese is green" (8 tokens); reference "built in 1889"
    # (3): overlap 3 -> P 3/8, R 1 -> F1 = 2 * 3/8 / (11/8) = 6/11.
    assert m["token_f1"] == pytest.approx(6 / 11) and m["exact_match"] == 0.0
    # Ranking by document: faq.html (c1), tower.md (c2, c3 dropped as a repeat), other.txt. Gold tower.md at rank 2.
    assert m["hit@4"] == 1.0 and m["recall@4"] == 1.0 and m["mrr@4"] == 0.5
    # The prompt held c1, c2, c3: two of three chunks from tower.md; the one gold document is present.
    assert m["context_precision"] == pytest.approx(2 / 3) and m["context_recall"] == 1.0
    # Citations: "The tower was built in 1889" {tower, built, 1889} all in c2 -> supported; "Cheese is green"
    # {cheese, green} both in c1 -> supported.
    assert m["citation_correctness"] == 1.0
    assert [c["chunk_id"] for c in row["citations"]] == ["c2", "c1"]
    # Lexical groundedness against the prompt's chunks: both sentences fully supported.
    assert m["groundedness_lexical"] == 1.0 and row["judges"]["lexical"] == [1.0, 1.0]
    assert m["abstention_correct"] == 1.0
    assert row["failure"] == "ok"
    assert [r["gold_key"] for r in row["retrieved"]] == ["/docs/faq.html", "tower.md", "tower.md", "/docs/other.txt"]


def test_a_refusal_is_scored_as_a_refusal() -> None:
    example = QAExample("t2", "When was the tower built?", ("1889",), False, ("tower.md",))
    row = score_answer(example, _answer(REFUSAL, RETRIEVED, in_prompt=1, refused=True), k=4, embed=fake_embed)
    m = row["metrics"]
    assert m["token_f1"] == 0.0 and m["abstention_correct"] == 0.0
    # Groundedness and citations judge what an answer claims; a refusal claims nothing.
    assert "groundedness_lexical" not in m and "citation_correctness" not in m
    # The prompt held only c1 (faq.html): the gold document never reached the generator.
    assert m["context_recall"] == 0.0 and row["failure"] == "retrieval miss"

    unanswerable = QAExample("t3", "Who painted it?", (), True)
    row = score_answer(unanswerable, _answer(REFUSAL, RETRIEVED, 1, refused=True), k=4, embed=fake_embed)
    assert row["metrics"] == {"abstention_correct": 1.0} and row["failure"] == "ok"


def test_reference_answers_calibrate_the_judges_where_gold_passages_exist() -> None:
    passage = GoldPassage("p1", "Tower", "The tower is in Paris. It was built in 1889.")
    example = QAExample("t4", "Where is the tower?", ("The tower is in Paris.",), False, ("p1",), (passage,))
    answer = _answer("It is in Paris [1].", RETRIEVED, in_prompt=2)
    row = score_answer(example, answer, k=4, embed=fake_embed, thresholds=Thresholds(lexical=0.9))
    assert row["metrics"]["reference_groundedness_lexical"] == 1.0
    assert row["metrics"]["reference_groundedness_embedding"] == 1.0
    # No chunk is named p1, so retrieval missed it.
    assert row["metrics"]["hit@4"] == 0.0 and row["failure"] == "retrieval miss"
