"""Text cleaning between parsing and chunking: Unicode, whitespace, hyphenation, running headers/footers."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import replace

import ftfy

from ingest.documents import FOOTER, HEADER, PAGE_BREAK, TABLE, Element, ParsedDocument

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


def clean_document(doc: ParsedDocument) -> ParsedDocument:
    """A copy of `doc` with cleaned elements; headers, footers, page breaks and empty elements dropped."""
    running = find_running_lines(doc.elements)
    kept: list[Element] = []
    for el in doc.elements:
        if el.category in (HEADER, FOOTER, PAGE_BREAK):
            continue
        text = clean_text(el.text, keep_layout=el.category == TABLE)
        if not text or (running and _signature(text) in running):
            continue
        kept.append(replace(el, text=text))
    return replace(doc, elements=tuple(kept))
