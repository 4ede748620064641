"""Feedback lines: what is stored for an answer and a refusal (ui/feedback.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answering import Answer, make_citations
from rag.prompting import PromptChunk
from rag.retrieval import RetrievedChunk
from ui.feedback import append_feedback, feedback_record

CHUNK = RetrievedChunk(
    "id-1",
    0.9,
    {"document_id": "/d/handbook.md", "source": "/d/handbook.md", "source_name": "handbook.md", "text": "28 days"},
    {"fusion": 0.9},
)
OTHER = RetrievedChunk("id-2", 0.5, {"document_id": "/d/faq.html", "source_name": "faq.html", "text": "torque"})


def answer(refused: bool = False) -> Answer:
    chunks = () if refused else (PromptChunk(1, CHUNK, CHUNK.text, False), PromptChunk(2, OTHER, OTHER.text, False))
    citations = () if refused else make_citations([1], chunks)
    text = "The documents do not say." if refused else "28 days [1]."
    reason = "evidence" if refused else None
    return Answer("q?", "q?", text, refused, reason, citations, chunks, (CHUNK, OTHER), 0.8, 0, {}, 10, 5, "m")


def test_an_answer_is_stored_with_its_sources_and_which_were_cited() -> None:
    record = feedback_record(answer(), "up", "documents")
    assert (record["rating"], record["question"], record["answer"], record["collection"]) == (
        "up",
        "q?",
        "28 days [1].",
        "documents",
    )
    assert [(s["number"], s["label"], s["cited"]) for s in record["sources"]] == [
        (1, "handbook.md", True),
        (2, "faq.html", False),
    ]


def test_a_refusal_is_stored_with_the_closest_passages() -> None:
    record = feedback_record(answer(refused=True), "down", "documents")
    assert record["refused"] and record["refusal_reason"] == "evidence"
    assert [s["chunk_id"] for s in record["sources"]] == ["id-1", "id-2"]


def test_append_feedback_writes_one_json_line_each(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "feedback.jsonl"
    append_feedback(path, feedback_record(answer(), "up", "documents"))
    append_feedback(path, feedback_record(answer(), "down", "documents"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["rating"] for line in lines] == ["up", "down"]


def test_only_up_or_down() -> None:
    with pytest.raises(ValueError):
        feedback_record(answer(), "meh", "documents")
