"""What every generator backend shares: the message and option types, the token stream, the `Generator` interface
with stop strings applied for every backend, and chat-template token counting.

Backends (`rag.generation.transformers`, `rag.generation.openai`) import this module, never each other.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rag.config import GeneratorSettings
from rag.errors import UsageError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    """Per-call decoding options; defaults come from the generator settings."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, **changes: Any) -> GenerationOptions:
        values: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
        }
        values.update({k: v for k, v in changes.items() if v is not None})
        return cls(**values)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    finish_reason: str = ""


@dataclass
class TokenStream:
    """Iterate for text deltas; `stats` is complete once the iteration ends. `close()` stops generation early."""

    deltas: Iterator[str]
    stats: GenerationStats = field(default_factory=GenerationStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for delta in self.deltas:
                self.text += delta
                yield delta
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()

    def read(self) -> str:
        for _ in self:
            pass
        return self.text


class Generator(ABC):
    """A chat model: count tokens of a conversation, stream a reply to it."""

    settings: GeneratorSettings

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Prompt + completion tokens the model accepts."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of plain text in this model's tokenizer (or a safe estimate of them)."""

    @abstractmethod
    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the whole chat-templated prompt, generation prompt included."""

    @abstractmethod
    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        """Yield text deltas, filling `stream.stats` as it goes; stop when `stream._stop` is set."""

    def warm_up(self) -> None:  # noqa: B027 - a backend with nothing to load keeps this no-op
        """Load weights or check the server now rather than on the first question."""

    def identity(self) -> dict[str, Any]:
        """What decides the generator's output: part of the answer cache key."""
        return {"kind": self.settings.kind, "name": self.name, "adapter": self.settings.adapter}

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> TokenStream:
        options = options or GenerationOptions.from_settings(self.settings)
        if not messages:
            raise UsageError("nothing to generate from: the conversation is empty")
        stream = TokenStream(iter(()))
        stream.deltas = _with_stop_strings(self._stream(messages, options, stream), options.stop, stream)
        return stream

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> tuple[str, GenerationStats]:
        stream = self.stream(messages, options)
        return stream.read(), stream.stats


def _with_stop_strings(deltas: Iterator[str], stops: tuple[str, ...], stream: TokenStream) -> Iterator[str]:
    """Cut the output at the first stop string, holding back just enough text to see one that spans deltas."""
    if not stops:
        yield from deltas
        return
    hold = max(len(s) for s in stops) - 1
    pending = ""
    for delta in deltas:
        pending += delta
        cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if pending[:cut]:
                yield pending[:cut]
            stream.stats.finish_reason = "stop"
            stream.close()
            close = getattr(deltas, "close", None)
            if close is not None:
                close()  # run the backend's cleanup now (join its thread, fill its stats), not at garbage collection
            return
        if len(pending) > hold:
            yield pending[: len(pending) - hold]
            pending = pending[len(pending) - hold :]
    if pending:
        yield pending


def chat_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of the conversation rendered by the tokenizer's chat template, generation prompt included."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(str(rendered), add_special_tokens=False)["input_ids"])
