"""Result types that several stages share, so stages import types rather than each other.

Retrieval produces `RetrievedChunk`s in a `Retrieval`; prompting places them as `PromptChunk`s; answering returns an
`Answer` with its `Citation`s, extract mode's `Quote`s and the checker's `SentenceSupport`s. This module imports
nothing from the rest of `rag`, so any stage (and ingest, eval, ui) can depend on it without a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    # Glossary terms the query named and what they mean (rag/glossary.py), searched with the query: quoting
    # counts a sentence that prints a meaning as holding the term.
    expansion: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class PromptChunk:
    """A chunk as placed in the prompt under its citation number; `truncated` when only its start fitted."""

    number: int
    chunk: RetrievedChunk
    text: str
    truncated: bool


def source_label(chunk: RetrievedChunk) -> str:
    """'handbook.pdf, p. 3, Leave > Vacation': how a chunk is named in prompts and printed sources."""
    p = chunk.payload
    parts = [str(p.get("source_name") or p.get("source") or chunk.document_id or "unknown")]
    if p.get("record_id") and p.get("title"):
        parts[0] = str(p["title"])
    pages = p.get("pages") or []
    if pages:
        parts.append(f"p. {pages[0]}" if len(pages) == 1 else f"pp. {pages[0]}-{pages[-1]}")
    section = " > ".join(str(s) for s in p.get("section_path") or [])
    if section:
        parts.append(section)
    return ", ".join(parts)


@dataclass(frozen=True)
class Quote:
    """A quoted span: chunk `number` (as cited), character offsets into that chunk's text, and the quoted text.

    A table row is quoted as the row; `header` is its table's header row, shown above it.
    """

    number: int
    start: int
    end: int
    text: str
    score: float
    header: str | None = None


@dataclass(frozen=True)
class SentenceSupport:
    """How well one answer sentence is backed by its sources.

    `start`/`end` are offsets into the answer text; `source` is the number of the chunk whose sentence supports it
    best and `span` that sentence's offsets in the chunk's text; `score` combines word overlap and embedding
    similarity (0-1). `reason` says why an unsupported sentence is unsupported, in words a user can read.
    """

    text: str
    start: int
    end: int
    supported: bool
    score: float
    source: int | None
    span: tuple[int, int] | None
    cited: tuple[int, ...]
    missing_numbers: tuple[str, ...]
    missing_names: tuple[str, ...]
    wrong_citations: tuple[int, ...]
    reason: str | None


@dataclass(frozen=True)
class Citation:
    """A [n] marker in the answer and the chunk it points at."""

    number: int
    chunk_id: str
    document_id: str
    source: str
    label: str
    pages: tuple[int, ...]
    section: tuple[str, ...]
    char_start: int | None
    char_end: int | None


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


@dataclass(frozen=True)
class Answer:
    question: str
    query: str  # the standalone query retrieval used (differs from `question` for condensed follow-ups)
    text: str
    refused: bool
    refusal_reason: str | None  # "evidence" (weak retrieval, model not called), "model", "no-documents"
    citations: tuple[Citation, ...]
    chunks: tuple[PromptChunk, ...]  # what the prompt held, numbered as cited
    retrieved: tuple[RetrievedChunk, ...]  # everything retrieval returned, best first
    evidence: float | None
    dropped_citations: int
    timings_ms: dict[str, float]
    prompt_tokens: int
    completion_tokens: int
    model: str
    cached: bool = False
    mode: str = "generate"  # "extract" (quoted from the sources) or "generate"
    quotes: tuple[Quote, ...] = ()  # extract: the quoted spans, offsets into each cited chunk's text
    support: tuple[SentenceSupport, ...] = ()  # generate with answer.verify: each sentence's check
    removed: tuple[SentenceSupport, ...] = ()  # verify=strict: the unsupported sentences taken out
    answerability: float | None = None  # the best quotable sentence's score (refusal signal)

    @property
    def unsupported(self) -> tuple[SentenceSupport, ...]:
        return tuple(s for s in self.support if not s.supported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "query": self.query,
            "answer": self.text,
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "evidence": self.evidence,
            "citations": [asdict(c) for c in self.citations],
            "chunks": [
                {
                    "number": c.number,
                    "id": c.chunk.id,
                    "label": source_label(c.chunk),
                    "truncated": c.truncated,
                    "stage_scores": c.chunk.stage_scores,
                    "source": c.chunk.payload.get("source"),
                    "text": c.text,
                }
                for c in self.chunks
            ],
            "dropped_citations": self.dropped_citations,
            "timings_ms": self.timings_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "cached": self.cached,
            "mode": self.mode,
            "answerability": self.answerability,
            "quotes": [asdict(q) for q in self.quotes],
            "support": [asdict(x) for x in self.support],
            "removed": [asdict(x) for x in self.removed],
        }
