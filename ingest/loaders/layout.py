"""Paragraphs from positioned PDF text lines: rebuilt from baselines and font sizes, classified with cheap rules.

Every PDF text parser (pypdf, pypdfium2, pdfminer) hands this module lines with the baseline y and
font size of their first run; it returns Title / NarrativeText / ListItem / Header / Footer elements.
No spaCy: that is what keeps PDF parsing fast.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ingest.documents import TABLE, TITLE, Element


class _Block(NamedTuple):
    """A paragraph of a PDF page, classified."""

    category: str
    text: str
    depth: int | None = None
    size: float | None = None


@dataclass
class Line:
    """One text line as a PDF parser emits it, with where and how large it was drawn."""

    text: str
    y: float | None
    size: float | None
    blank_before: bool = False
    # A whole table already rendered as Markdown (ingest/loaders/pdf_tables.py): one Table element of its own.
    table: bool = False


CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BULLET = re.compile(
    r"^\s*([\u2022\u25e6\u25aa\u25ab\u2023\u2043\u25cf\u25cb\u25a0\u25a1\u2013\u2014*\-]|\(?[a-zA-Z0-9]{1,3}[.)])\s+\S"
)
_UNICODE_BULLET = re.compile(r"^\s*[\u2022\u25e6\u25aa\u25ab\u2023\u2043\u25cf\u25cb\u25a0\u25a1\u2013\u2014*\-]\s+\S")
_NUMBERED_ITEM = re.compile(r"^\(?(?:\d{1,2}|[a-z])[.)]\s+[A-Z]")
_NUMBERED_HEADING = re.compile(r"^(?P<num>\d{1,2}(?:\.\d{1,2}){0,4})\.?\s+[A-Z]")
_ROMAN_OR_LETTER_HEADING = re.compile(r"^(?:[IVXLC]{1,6}|[A-Z])\.\s+[A-Z]")
_SENTENCE_END = re.compile(r"[.!?:;][\"'\u201d\u2019)\]]*$")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?$", re.IGNORECASE)


def layout_elements(pages: list[list[Line]]) -> tuple[list[Element], str | None]:
    """The elements of all pages in reading order, and the first heading set larger than the body text.

    Running headers and footers are found across pages, so this needs the whole document at once.
    """
    body_size = _mode_size(line for lines in pages for line in lines)
    leading = _line_gaps_by_size(pages)
    header_keys, footer_keys = _repeated_margin_lines(pages)

    elements: list[Element] = []
    prominent_title: str | None = None
    for page_number, lines in enumerate(pages, start=1):
        for block in _page_elements(lines, body_size, leading, header_keys, footer_keys):
            elements.append(
                Element(text=block.text, category=block.category, page_number=page_number, depth=block.depth)
            )
            if prominent_title is None and block.category == TITLE and _is_larger(block.size, body_size):
                prominent_title = block.text
    return elements, prominent_title


def _mode_size(lines: Iterator[Line]) -> float | None:
    weights: Counter[float] = Counter()
    for line in lines:
        if line.size is not None:
            weights[line.size] += len(line.text)
    return weights.most_common(1)[0][0] if weights else None


def _line_gaps_by_size(pages: list[list[Line]]) -> dict[float, float]:
    """The leading (baseline-to-baseline distance inside a paragraph) for each font size.

    A low percentile of the gaps, not the median: in double-spaced text such as a memo the
    paragraph gaps can outnumber the in-paragraph ones.
    """
    samples: dict[float, list[float]] = {}
    for lines in pages:
        for prev, cur in itertools.pairwise(lines):
            if prev.y is None or cur.y is None or prev.size is None or prev.size != cur.size:
                continue
            gap = prev.y - cur.y
            # Below 0.8 x size the lines overlap (sub/superscripts, table cells side by side).
            if 0.8 * prev.size <= gap <= 4 * prev.size:
                samples.setdefault(prev.size, []).append(gap)
    leading = {}
    for size, gaps in samples.items():
        if len(gaps) >= 3:
            gaps.sort()
            leading[size] = gaps[len(gaps) // 10]
    return leading


def _margin_key(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _repeated_margin_lines(pages: list[list[Line]]) -> tuple[set[str], set[str]]:
    """Keys of first/last lines that repeat on most pages (running headers and footers)."""
    non_empty = [lines for lines in pages if lines]
    if len(non_empty) < 3:
        return set(), set()
    firsts = Counter(_margin_key(lines[0].text) for lines in non_empty)
    lasts = Counter(_margin_key(lines[-1].text) for lines in non_empty)
    threshold = max(3, len(non_empty) // 2)
    return (
        {key for key, count in firsts.items() if count >= threshold},
        {key for key, count in lasts.items() if count >= threshold},
    )


def _page_elements(
    lines: list[Line],
    body_size: float | None,
    leading: dict[float, float],
    header_keys: set[str],
    footer_keys: set[str],
) -> Iterator[_Block]:
    """The paragraphs of a page, classified, in the parser's reading order."""
    if not lines:
        return
    start, end = 0, len(lines)
    header = footer = None
    if _margin_key(lines[0].text) in header_keys or (len(lines) > 1 and _PAGE_NUMBER.match(lines[0].text)):
        header, start = lines[0], 1
    if end - start > 0 and (_margin_key(lines[-1].text) in footer_keys or _PAGE_NUMBER.match(lines[-1].text)):
        footer, end = lines[-1], end - 1
    if header is not None:
        yield _Block("Header", header.text)

    body = lines[start:end]
    typical_len = _typical_line_length(body)
    paragraph: list[Line] = []
    for line in body:
        if line.table:
            if paragraph:
                yield _classify(paragraph, body_size)
                paragraph = []
            yield _Block(TABLE, line.text)
            continue
        if paragraph and _starts_paragraph(paragraph[-1], line, body_size, leading, typical_len):
            yield _classify(paragraph, body_size)
            paragraph = []
        paragraph.append(line)
    if paragraph:
        yield _classify(paragraph, body_size)

    if footer is not None:
        yield _Block("Footer", footer.text)


def _typical_line_length(lines: list[Line]) -> int:
    lengths = sorted(len(line.text) for line in lines if not line.table)
    if not lengths:
        return 0
    # 80th percentile: full lines of justified text, ignoring long outliers.
    return lengths[min(len(lengths) - 1, int(0.8 * len(lengths)))]


def _starts_paragraph(
    prev: Line, cur: Line, body_size: float | None, leading: dict[float, float], typical_len: int
) -> bool:
    if cur.blank_before:
        return True
    if prev.size is not None and cur.size is not None and abs(prev.size - cur.size) > 0.75:
        return True
    if prev.y is not None and cur.y is not None:
        size = cur.size or body_size or 10.0
        expected = leading.get(size)
        if expected is None:
            body_leading = leading.get(body_size) if body_size is not None else None
            expected = body_leading * size / body_size if body_leading and body_size else 1.2 * size
        gap = prev.y - cur.y
        # Moving up the page means a new column or block; a gap well over the leading is a break.
        if gap < -0.5 * expected or gap > 1.4 * expected:
            return True
    if _UNICODE_BULLET.match(cur.text) or _NUMBERED_ITEM.match(cur.text):
        return True
    if _BULLET.match(cur.text) and _SENTENCE_END.search(prev.text):
        return True
    if typical_len >= 30:
        if _SENTENCE_END.search(prev.text) and len(prev.text) < 0.75 * typical_len:
            return True
        # A short line that does not end mid-word or mid-clause: a heading or a caption.
        short = len(prev.text) < 0.5 * typical_len and len(prev.text.split()) <= 12
        if short and not prev.text.endswith(("-", ",")):
            return True
    return False


def _classify(paragraph: list[Line], body_size: float | None) -> _Block:
    text = paragraph[0].text
    for line in paragraph[1:]:
        # Keep "hyphen-\nated" visible: the cleaner decides whether it was a soft hyphen.
        joiner = "\n" if len(text) > 1 and text.endswith("-") and text[-2].isalpha() else " "
        text = f"{text}{joiner}{line.text}"
    size = paragraph[0].size
    if _UNICODE_BULLET.match(text):
        return _Block("ListItem", text, size=size)
    if _is_title(text, len(paragraph), size, body_size):
        match = _NUMBERED_HEADING.match(text)
        return _Block(TITLE, text, match.group("num").count(".") if match else None, size)
    if _BULLET.match(text):
        return _Block("ListItem", text, size=size)
    return _Block("NarrativeText", text, size=size)


def _is_larger(size: float | None, body_size: float | None) -> bool:
    return size is not None and body_size is not None and size >= body_size + 1.0


def _is_title(text: str, n_lines: int, size: float | None, body_size: float | None) -> bool:
    words = text.split()
    if not words or len(words) > 15 or n_lines > 3 or len(text) > 150:
        return False
    if text.endswith((".", ",", ";", ":")) and not _ROMAN_OR_LETTER_HEADING.match(text):
        return False
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if letters < 2 or letters < 0.5 * len(visible) or "@" in text or "://" in text:
        return False
    larger = _is_larger(size, body_size)
    smaller = size is not None and body_size is not None and size < body_size - 0.25
    if larger:
        return True
    if smaller:
        return False
    if _NUMBERED_HEADING.match(text) or _ROMAN_OR_LETTER_HEADING.match(text):
        return len(words) <= 10
    alpha_words = [w for w in words if w[0].isalpha()]
    capitalized = sum(w[0].isupper() for w in alpha_words)
    return n_lines == 1 and len(words) <= 8 and bool(alpha_words) and capitalized / len(alpha_words) > 0.5
