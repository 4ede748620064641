"""Perplexity of the bundled generator on a reference answer: prompt tokens masked, gold context helps."""

from __future__ import annotations

from typing import Any

import pytest

from eval.perplexity import answer_loss, perplexity_unsupported
from rag.config import AnswerSettings
from rag.retrieval import RetrievedChunk
from tests.rag.test_answering import ScriptedGenerator

pytestmark = pytest.mark.integration

QUESTION = "How many days of paid leave do full-time employees get?"
GOLD = RetrievedChunk("g", 1.0, {"text": "Every full-time employee gets 28 days of paid leave per calendar year.",
                                 "title": "Paid leave", "record_id": "g", "document_id": "g"})  # fmt: skip
OTHER = RetrievedChunk("o", 1.0, {"text": "The TW-200 covers 20 to 200 newton-metres, clockwise and counter-clockwise.",
                                  "title": "Torque", "record_id": "o", "document_id": "o"})  # fmt: skip


def test_the_gold_context_makes_the_reference_likelier(generator: Any) -> None:
    with_gold = answer_loss(generator, QUESTION, "28 days", [GOLD], AnswerSettings())
    without = answer_loss(generator, QUESTION, "28 days", [OTHER], AnswerSettings())
    # Only the reference's tokens are scored ("2", "8", " days"), not the prompt and not the end-of-turn marker.
    expected = len(generator.tokenizer("28 days", add_special_tokens=False)["input_ids"])
    assert with_gold.tokens == without.tokens == expected == 3
    # Measured: 1.12 nats per token with the gold passage, 2.95 with the unrelated one ("8" after "2": 0.1 vs 4.0).
    assert 0 < with_gold.nll < without.nll - 1.0
    assert with_gold.perplexity == pytest.approx(2.718281828**with_gold.nll, rel=1e-6)


def test_backends_without_weights_are_skipped_with_a_reason() -> None:
    reason = perplexity_unsupported(ScriptedGenerator())
    assert reason is not None and "perplexity skipped" in reason
