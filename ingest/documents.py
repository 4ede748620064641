"""What a loader hands to the chunker: a document as an ordered list of typed text elements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Element categories the chunker treats specially; anything else is running text.
TITLE = "Title"
TABLE = "Table"
HEADER = "Header"
FOOTER = "Footer"
PAGE_BREAK = "PageBreak"


@dataclass(frozen=True)
class Element:
    """One structural unit of a document, in reading order.

    `text` is what goes into the document text: tables are rendered as Markdown
    (header row, separator row, one line per row) so that a chunk's character
    offsets point into the same string the user sees.
    """

    text: str
    category: str
    page_number: int | None = None
    # Heading level for titles (0 = top). None where the format does not say.
    depth: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    """A source file, or one record of a JSONL/BEIR corpus, as elements.

    `document_id` is deterministic: the absolute source path, plus `#<record id>`
    for records. `content_hash` changes exactly when the source content changes.
    """

    document_id: str
    source: str
    file_type: str
    content_hash: str
    elements: tuple[Element, ...]
    title: str | None = None
    record_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    card: DocumentCard | None = None


@dataclass(frozen=True)
class DocumentCard:
    """Who issued a document, when, and what it is: what tells look-alike documents apart.

    Built at ingest by `ingest.cards.build_card`; `origin` says where each field came from
    ("file metadata", "file name + first page", "first page", "form", ...).
    """

    title: str | None = None
    organisation: str | None = None
    author: str | None = None
    doc_type: str | None = None
    form: str | None = None
    years: tuple[int, ...] = ()
    quarter: int | None = None
    period: str | None = None
    date: str | None = None
    origin: dict[str, str] = field(default_factory=dict)
    # Signatures of the first page's first lines: a collection counts them to learn its cover-page boilerplate.
    first_lines: tuple[str, ...] = ()

    def short_form(self, exclude: frozenset[str] | set[str] = frozenset()) -> str:
        """Title · organisation · period, the fields that are known, for the front of each chunk.

        Values in `exclude` (the document's own headings, already in the section path) and values
        another part already contains are left out.
        """
        return " · ".join(self.short_parts(exclude))

    def short_parts(self, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
        parts: list[str] = []
        for value in (self.title, self.organisation, self.period):
            if not value or value in exclude:
                continue
            if any(value.lower() in p.lower() for p in parts):
                continue
            parts = [p for p in parts if p.lower() not in value.lower()] + [value]
        return parts

    def payload(self) -> dict[str, Any]:
        """The card's filterable payload fields (absent fields left out)."""
        out: dict[str, Any] = {
            "organisation": self.organisation,
            "author": self.author,
            "doc_type": self.doc_type,
            "form": self.form,
            "year": list(self.years) if self.years else None,
            "quarter": self.quarter,
            "period": self.period,
            "doc_date": self.date,
        }
        return {k: v for k, v in out.items() if v is not None}
