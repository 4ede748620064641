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
