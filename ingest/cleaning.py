"""Text cleaning between parsing and chunking: Unicode, whitespace, hyphenation, running headers/footers, and
personal data replaced by placeholders for a collection that asks for it (ingest.redact_pii)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ftfy

from ingest.documents import FOOTER, HEADER, PAGE_BREAK, TABLE, Element, ParsedDocument
from rag.config import Settings

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
# "hyph-\nenation": a lowercase letter, a hyphen at line end, a lowercase continuation.
_HYPHEN_BREAK = re.compile(r"(?<=[a-z])-\n(?=[a-z])")
_DIGITS = re.compile(r"\d+")

# A line seen at the top or bottom of at least this share of pages is a running header/footer.
RUNNING_SHARE = 0.5
RUNNING_MIN_PAGES = 3
_EDGE_LINES = 2


def clean_text(text: str, *, keep_layout: bool = False) -> str:
    """Mojibake repaired, NFKC, no zero-width characters, one space between words, de-hyphenated lines.

    `keep_layout` (tables) keeps each line's content but still normalises Unicode.
    """
    # Text decoded with the wrong code page once and saved again ("1985â€“86") is common in
    # exported company files; ftfy undoes it (31 ms for the 48 kB norwich-city.txt sample).
    text = ftfy.fix_text(text, uncurl_quotes=False, normalization=None)
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    if keep_layout:
        return text.strip()
    text = _HYPHEN_BREAK.sub("", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def _signature(text: str) -> str:
    # Page numbers differ from page to page ("Page 3 of 10"): compare with digits masked.
    return _DIGITS.sub("#", text.lower()).strip()


def find_running_lines(elements: tuple[Element, ...] | list[Element]) -> set[str]:
    """Signatures of short elements repeated at the top or bottom of most pages."""
    by_page: dict[int, list[Element]] = defaultdict(list)
    for el in elements:
        if el.page_number is not None and el.category != TABLE:
            by_page[el.page_number].append(el)
    pages = len(by_page)
    if pages < RUNNING_MIN_PAGES:
        return set()
    seen: Counter[str] = Counter()
    for page_elements in by_page.values():
        edge = page_elements[:_EDGE_LINES] + page_elements[-_EDGE_LINES:]
        seen.update({_signature(el.text) for el in edge if len(el.text) <= 200})
    threshold = max(RUNNING_MIN_PAGES, RUNNING_SHARE * pages)
    return {sig for sig, n in seen.items() if n >= threshold and sig}


def clean_document(doc: ParsedDocument, redact: Callable[[str], str] | None = None) -> ParsedDocument:
    """A copy of `doc` with cleaned elements; headers, footers, page breaks and empty elements dropped.

    `redact` (see `ingest_redactor`) rewrites each element's text, the title and the metadata's strings (a DOCX
    author, an e-mail's sender), so the card, the chunks and their payload are built from the redacted text.
    """
    running = find_running_lines(doc.elements)
    kept: list[Element] = []
    for el in doc.elements:
        if el.category in (HEADER, FOOTER, PAGE_BREAK):
            continue
        text = clean_text(el.text, keep_layout=el.category == TABLE)
        if not text or (running and _signature(text) in running):
            continue
        kept.append(replace(el, text=redact(text) if redact else text))
    if redact is None:
        return replace(doc, elements=tuple(kept))
    return replace(
        doc,
        elements=tuple(kept),
        title=redact(doc.title) if doc.title else doc.title,
        metadata={key: _redact_value(value, redact) for key, value in doc.metadata.items()},
    )


def _redact_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v, redact) for v in value)
    if isinstance(value, dict):
        return {k: _redact_value(v, redact) for k, v in value.items()}
    return value


def ingest_redactor(settings: Settings) -> Callable[[str], str] | None:
    """The redaction ingest applies (privacy.entities, names with privacy.redact_names), or None when
    ingest.redact_pii is off. One redactor per process and privacy settings: workers build theirs once."""
    if not settings.ingest.redact_pii:
        return None
    from rag.privacy import build_redactor

    return build_redactor(settings.privacy).redact
