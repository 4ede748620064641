"""The LLM groundedness judge with a scripted generator: verdict parsing, one call per sentence, the prompt."""

from __future__ import annotations

import pytest

from eval.llm_judge import groundedness_llm, parse_verdict
from tests.rag.test_answering import ScriptedGenerator


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("SUPPORTED", True),
        (" Supported.", True),
        ("Yes", True),
        ("UNSUPPORTED", False),  # contains "SUPPORTED": the negative is checked first
        ("Not supported", False),
        ("no", False),
        ("The claim is about towers.", None),
    ],
)
def test_parse_verdict(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


def test_one_verdict_per_sentence() -> None:
    generator = ScriptedGenerator("SUPPORTED", "UNSUPPORTED", "I think so")
    share, verdicts = groundedness_llm(
        "The tower is in Paris [1]. It is green. It is tall.", ["The tower is in Paris.", "It is tall."], generator
    )
    # One SUPPORTED of three; the unparseable third counts as unsupported but stays visible as None.
    assert verdicts == [True, False, None] and share == pytest.approx(1 / 3)
    first = generator.calls[0]
    assert first[0].role == "system" and "SUPPORTED" in first[0].content
    user = first[-1].content
    assert "[1] The tower is in Paris." in user and "[2] It is tall." in user
    assert "Claim: The tower is in Paris ." in user  # the citation marker is not part of the claim
    assert groundedness_llm("", ["x"], generator) == (1.0, [])


class SmallWindow(ScriptedGenerator):
    @property
    def context_window(self) -> int:
        return 100


def test_passages_that_do_not_fit_the_window_are_left_out() -> None:
    generator = SmallWindow("SUPPORTED")
    # The empty prompt is 50 words (this generator's tokens): 100 - 50 - 4 reply - 32 margin = 14 for passages;
    # "[1] one two three" costs 4 + 2, the 41-word second passage does not fit in the 8 left.
    groundedness_llm("Short claim.", ["one two three", "many words " * 20], generator)
    user = generator.calls[0][-1].content
    assert "[1] one two three" in user and "[2]" not in user
