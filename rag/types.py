"""Result types that several stages share, so stages import types rather than each other.

Retrieval produces `RetrievedChunk`s in a `Retrieval`; prompting places them as `PromptChunk`s. This module
imports nothing from the rest of `rag`, so any stage (and ingest, eval, ui) can depend on it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# How a query is matched: dense vectors, BM25 sparse vectors, or both fused.
Mode = Literal["hybrid", "dense", "sparse"]


@dataclass(frozen=True)
class RetrievedChunk:
    """A chunk found for a query, with its fused (or single-list) score and payload."""

    id: str
    score: float
    payload: dict[str, Any]
    # Score from each stage that saw the chunk: "dense", "sparse" or "fusion", then "rerank".
    stage_scores: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))

    @property
    def document_id(self) -> str:
        return str(self.payload.get("document_id", ""))


@dataclass(frozen=True)
class Retrieval:
    query: str
    mode: str
    chunks: tuple[RetrievedChunk, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The query's dense embedding when the mode computed one: later stages (the answer's evidence) reuse it.
    query_vector: Any = None


@dataclass(frozen=True)
class PromptChunk:
    """A chunk as placed in the prompt under its citation number; `truncated` when only its start fitted."""

    number: int
    chunk: RetrievedChunk
    text: str
    truncated: bool
