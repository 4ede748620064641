"""Groundedness judged by the configured generator: one SUPPORTED/UNSUPPORTED verdict per answer sentence.

Worth its cost with a capable model (a GPU-served 7B+); a 135M model's verdicts are close to noise, which is why
the lexical and embedding judges in eval/answer_metrics.py are always computed beside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from eval.answer_metrics import sentence_split, strip_citations
from rag.generation import GenerationOptions, Generator, Message
from rag.prompting import neutralize

__all__ = ["JUDGE_SYSTEM_PROMPT", "groundedness_llm", "judge_claim", "parse_verdict"]

JUDGE_SYSTEM_PROMPT = (
    "You check a claim against numbered passages. Reply with exactly one word: SUPPORTED if the passages state "
    "the claim, UNSUPPORTED if they do not or if they contradict it."
)
# One word is the whole reply; a few tokens of slack for a leading space or a trailing period.
_VERDICT_TOKENS = 4
# Prompt tokens kept free beyond the reply: chat-template framing the per-piece counts do not see.
_MARGIN_TOKENS = 32
_UNSUPPORTED = re.compile(r"\b(UNSUPPORTED|NOT\s+SUPPORTED|NO)\b", re.I)
_SUPPORTED = re.compile(r"\b(SUPPORTED|YES)\b", re.I)


def parse_verdict(reply: str) -> bool | None:
    """True for SUPPORTED (or yes), False for UNSUPPORTED (or no), None when the reply says neither."""
    if _UNSUPPORTED.search(reply):
        return False
    if _SUPPORTED.search(reply):
        return True
    return None


def _messages(claim: str, passages: Sequence[str], generator: Generator) -> list[Message]:
    def build(blocks: Sequence[str]) -> list[Message]:
        context = "\n\n".join(blocks) if blocks else "(no passages)"
        user = f"Passages:\n{context}\n\nClaim: {neutralize(claim)}\n\nIs the claim supported by the passages?"
        return [Message("system", JUDGE_SYSTEM_PROMPT), Message("user", user)]

    # Passages in order while they fit the window: the judge sees what the answer prompt held, which already fit
    # the same model, so cutting only happens for a generator with a smaller window than the answering one.
    room = generator.context_window - generator.count_prompt_tokens(build([])) - _VERDICT_TOKENS - _MARGIN_TOKENS
    blocks: list[str] = []
    for number, passage in enumerate(passages, start=1):
        block = f"[{number}] {neutralize(passage).strip()}"
        cost = generator.count_tokens(block) + 2
        if cost > room:
            break
        blocks.append(block)
        room -= cost
    return build(blocks)


def judge_claim(claim: str, passages: Sequence[str], generator: Generator) -> bool | None:
    """The generator's verdict on one claim (greedy decoding, so reruns agree); None if it answered neither."""
    options = GenerationOptions(max_new_tokens=_VERDICT_TOKENS, temperature=0.0)
    reply, _stats = generator.generate(_messages(claim, passages, generator), options)
    return parse_verdict(reply)


def groundedness_llm(answer: str, passages: Sequence[str], generator: Generator) -> tuple[float, list[bool | None]]:
    """(share of answer sentences the generator calls SUPPORTED, each sentence's verdict in order).

    A verdict the model did not give (None) counts as unsupported: an unparseable judge must not inflate the
    score. Empty answer: (1.0, []), as the other groundedness judges.
    """
    verdicts = [judge_claim(strip_citations(s), passages, generator) for s in sentence_split(answer)]
    if not verdicts:
        return 1.0, []
    return sum(v is True for v in verdicts) / len(verdicts), verdicts
