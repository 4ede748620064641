"""Request bodies of the HTTP API, validated by pydantic: OpenAI's chat request (plus our filters) and retrieve.

Fields OpenAI clients send that do not change a RAG answer (`user`, `seed`, `presence_penalty`...) are accepted
and ignored, so tools built for OpenAI (Open WebUI, LibreChat) work unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.types import Mode


class TextPart(BaseModel):
    """One part of a multi-part message; only text parts carry a question."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. `model` names the collection to answer from."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="the collection to answer from (GET /v1/models lists them)")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one answer per request")
    # Extensions (the openai client sends them with extra_body=...), as `rag ask --filter/--mode/--no-rerank`.
    filters: list[str] = Field(default_factory=list, description="payload filters, as `rag query --filter`")
    retrieval_mode: Mode | None = Field(None, description="hybrid, dense or sparse (default: retrieval.mode)")
    rerank: bool = True

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class RetrieveRequest(BaseModel):
    """POST /v1/retrieve: ranked chunks for a query, as `rag query --json`."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    collection: str | None = Field(None, min_length=1, description="default: store.collection")
    top_k: int | None = Field(None, ge=1, le=1000)
    mode: Mode | None = None
    filters: list[str] = Field(default_factory=list, description="payload filters, as `rag query --filter`")
    rerank: bool = True


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its clients turn into a typed exception carrying the message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
