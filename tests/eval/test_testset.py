"""Synthetic test sets: reply parsing, each quality filter, a keyed generator over samples/ (exact rejection counts,
seeded order), and the JSONL round trip through load_generic. The real model runs in tests/eval/test_eval_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eval.datasets import load_generic
from eval.testset import REJECTIONS, check_pair, generate_testset, parse_reply, write_testset
from rag.errors import UsageError
from tests.eval.conftest import KeyedGenerator


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Question: When does it open?\nAnswer: at 9:00", ("When does it open?", "at 9:00")),
        ('Sure!\nquestion:  Who signs?\n\nANSWER: "the team lead"\nThat is all.', ("Who signs?", "the team lead")),
        ("Question: Where is\nthe desk?\nAnswer: front", ("Where is the desk?", "front")),
        ("Q: When?\nA: now", None),
        ("Question: When?\nAnswer:   \nlater", None),  # an empty answer line is not an answer
        ("The passage is about leave.", None),
    ],
)
def test_parse_reply(reply: str, expected: tuple[str, str] | None) -> None:
    assert parse_reply(reply) == expected


CHUNK = (
    "Core hours are 10:00 to 16:00, Monday to Friday. Outside core hours, employees arrange their time with their "
    "team lead."
)


@pytest.mark.parametrize(
    ("question", "answer", "accepted", "reason"),
    [
        ("When must staff be at work?", "10:00 to 16:00", [], None),
        ("When must staff be at work?", " ".join(["hours"] * 31), [], "answer too long"),
        # {1000, 1600, monday, saturday}: 3 of 4 in the chunk = 0.75 < 0.8.
        ("When must staff be at work?", "10:00 to 16:00, Monday to Saturday", [], "answer not in chunk"),
        ("Who do employees arrange time with, their team lead?", "their team lead", [], "answer in question"),
        # The first sentence as a question: token F1 1.0 with it.
        ("Core hours are 10:00 to 16:00, Monday to Friday?", "team lead", [], "question copies the chunk"),
        ("When must staff be at work?", "10:00 to 16:00", ["When must the staff be at work?"], "duplicate question"),
    ],
)
def test_each_filter(question: str, answer: str, accepted: list[str], reason: str | None) -> None:
    assert reason is None or reason in REJECTIONS
    assert check_pair(question, answer, CHUNK, accepted) == reason


REPLIES = {
    "28 days of paid leave": "Question: How much paid leave does a full-time employee get each year?\nAnswer: 28 days",
    # The same question from another chunk: whichever comes second in the seeded order is the duplicate.
    "Report sickness": "Question: How much paid leave does a full-time employee get per year?\nAnswer: team lead",
    "at least 14 characters": "Question: What is the minimum password length?\nAnswer: 14 characters",
    "Hotel, per night": "Question: What is the hotel limit per night?\nAnswer: 150 EUR",
    "Core hours are": "Question: Core hours are 10:00 to 16:00, Monday to Friday?\nAnswer: their team lead",
    "full-disk encryption": "Question: Which laptops are encrypted?\nAnswer: " + " ".join(["encrypted"] * 31),
    "warranty covers": "Question: How long is the warranty?\nAnswer: 36 months",
}  # the torque FAQ gets the default reply, which has no Question:/Answer: shape


def test_generate_over_samples(samples_index: Any, tmp_path: Path) -> None:
    _settings, store = samples_index
    seen: list[tuple[int, int]] = []
    generator = KeyedGenerator(REPLIES, default="Sure! Here is a question about torque.")
    result = generate_testset(store, "documents", generator, 10, seed=0, progress=lambda a, t: seen.append((a, t)))
    # 11 chunks (card context takes part of each window): 2 are too short to ask about; 9 go to the generator.
    assert (result.chunks, result.skipped_short, result.attempted) == (11, 2, 9)
    assert result.rejected == {
        "unparseable": 2,  # the torque FAQ's two chunks get the default reply
        "answer not in chunk": 1,  # 36 months: the FAQ says 24
        "answer too long": 1,
        "answer in question": 0,
        "question copies the chunk": 1,
        "duplicate question": 1,
    }
    questions = {e.example.question for e in result.examples}
    assert len(result.examples) == 3 and len(result.examples) + sum(result.rejected.values()) == result.attempted
    assert {"What is the minimum password length?", "What is the hotel limit per night?"} <= questions
    assert [t for _a, t in seen] == list(range(1, 10)) and seen[-1][0] == 3
    password = next(e for e in result.examples if "password" in e.example.question)
    assert password.example.gold_document_ids[0].endswith("security-policy.txt")
    assert "14 characters" in password.context and password.chunk_id

    # The file is the simple format: load_generic reads the same questions back.
    path = write_testset(result.examples, tmp_path / "synthetic.jsonl")
    assert load_generic(path) == [e.example for e in result.examples]

    # Seeded: the same seed draws chunks in the same order, another seed in another.
    again = KeyedGenerator(REPLIES, default="Sure!")
    assert generate_testset(store, "documents", again, 10, seed=0).examples == result.examples
    other = KeyedGenerator(REPLIES, default="Sure!")
    generate_testset(store, "documents", other, 10, seed=1)
    assert [c[-1].content for c in other.calls] != [c[-1].content for c in generator.calls]


def test_draw_limited_to_some_documents(samples_index: Any) -> None:
    _settings, store = samples_index
    faq = next(p["document_id"] for _, p in store.scroll("documents", fields=["document_id", "source_name"])
               if p["source_name"] == "product-faq.html")  # fmt: skip
    generator = KeyedGenerator(REPLIES, default="Sure!")
    result = generate_testset(store, "documents", generator, 10, seed=0, document_ids=[faq])
    # The FAQ has two chunks: the warranty one (36 months: not in the chunk) and the torque one (unparseable).
    assert result.chunks == 2 and result.attempted == 2 and not result.examples
    assert result.rejected["answer not in chunk"] == 1 and result.rejected["unparseable"] == 1
    with pytest.raises(UsageError, match="document_ids is empty"):
        generate_testset(store, "documents", generator, 1, document_ids=[])
    with pytest.raises(UsageError, match="the given documents have no chunk"):
        generate_testset(store, "documents", generator, 1, document_ids=["nope"])


def test_generation_stops_at_n_or_max_attempts(samples_index: Any) -> None:
    _settings, store = samples_index
    generator = KeyedGenerator({}, default="Question: What is it?\nAnswer: nothing at all here")
    result = generate_testset(store, "documents", generator, 5, seed=0, max_attempts=2)
    assert result.attempted == 2 and len(generator.calls) == 2 and result.rejected["answer not in chunk"] == 2
    with pytest.raises(UsageError, match="at least 1"):
        generate_testset(store, "documents", generator, 0)
