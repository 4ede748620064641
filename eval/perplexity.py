"""How likely the generator finds the reference answer given the gold context: loss on the answer tokens only.

The prompt is the one serving builds (rag/prompting.build_prompt) with the gold passages as the retrieved chunks,
so the figure tracks what fine-tuning on that prompt format changes. Local transformers models only: a server
behind the OpenAI API returns no log-probabilities of given text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rag.config import AnswerSettings
from rag.generation import Generator, TransformersGenerator
from rag.prompting import build_prompt
from rag.retrieval import RetrievedChunk

__all__ = ["AnswerLoss", "answer_loss", "perplexity_unsupported"]

# Tokens reserved beyond the reference's own when fitting the gold context: a margin for tokenizer merges.
_ANSWER_SLACK = 8


@dataclass(frozen=True)
class AnswerLoss:
    """Mean negative log-likelihood (nats) per reference-answer token, and how many tokens it averages."""

    nll: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


def perplexity_unsupported(generator: Generator) -> str | None:
    """Why perplexity cannot be measured with this generator, or None when it can."""
    if not isinstance(generator, TransformersGenerator):
        return (
            f"perplexity skipped: generator {generator.name!r} is not a local transformers model, so its "
            "probabilities of given text are out of reach; it needs generator.kind=transformers"
        )
    return None


def answer_loss(
    generator: TransformersGenerator,
    question: str,
    reference: str,
    context: Sequence[RetrievedChunk],
    answer_settings: AnswerSettings,
) -> AnswerLoss:
    """Loss of `generator` (a TransformersGenerator) on `reference` after the answer prompt holding `context`.

    Only the reference's own tokens are scored, as the model would generate them after the prompt's assistant
    header; the end-of-turn marker is not. Scoring it too measured "28 days" as less likely with the gold passage
    than with an unrelated one (SmolLM2-135M wants to go on "...of paid leave" and pays 9 nats to stop), so short
    references would be ranked by how willing the model is to stop, not by what it knows.
    """
    import torch

    tokenizer = generator.tokenizer
    budget = generator.count_tokens(reference) + _ANSWER_SLACK
    prompt = build_prompt(question, context, generator, answer_settings, budget)
    chat = [{"role": m.role, "content": m.content} for m in prompt.messages]
    prompt_text = str(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    answer_ids = list(tokenizer(reference.strip(), add_special_tokens=False)["input_ids"])
    if not answer_ids:
        raise ValueError("the reference answer is empty: there is nothing to score")
    input_ids = torch.tensor([prompt_ids + answer_ids], device=generator.device)
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids], device=generator.device)  # -100: not scored
    with torch.inference_mode():
        loss = generator.model(input_ids=input_ids, labels=labels).loss
    return AnswerLoss(nll=float(loss.item()), tokens=len(answer_ids))
