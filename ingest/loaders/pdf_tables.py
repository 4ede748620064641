"""Tables of born-digital PDF pages as Markdown: row labels, column headers and the caption, from PDFium word boxes.

Financial statements rarely draw ruling lines, so tables are found from how their words sit: a row is a
label on the left and values (numbers, dashes) separated from it and from each other by wide gaps; values
of one column overlap horizontally from row to row; the rows above the first value row whose words sit over
the columns are the header (years, periods), and short lines just above that are the caption ("Consolidated
Statement of Cash Flows"). Only pages whose text has many lines ending in numbers are looked at (`looks_tabular`),
so prose pages cost one regex pass. Measured with bench/pdf_parsers.py (README has the figures).
"""

from __future__ import annotations

import ctypes
import itertools
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from ingest.loaders.layout import Line

# A value cell: a number with its currency, sign, parentheses, thousands separators and percent sign,
# or a dash standing for nil. "(1,577)", "$5,363", "12.5%", "—".
_VALUE = re.compile(
    r"^[(\[]?[-+\u2212]?[$\u20ac\u00a3\u00a5]?\s?[(]?[-+\u2212]?(?:\d[\d,]*)(?:\.\d+)?[)\]]?\s?%?[)*]?$"
)
_DASH = re.compile(r"^[-\u2013\u2014\u2012]{1,3}$")
_YEAR = re.compile(r"^(?:FY\s?)?(?:19|20)\d\d[*]?$")
_CURRENCY = frozenset({"$", "\u20ac", "\u00a3", "\u00a5", "US$"})
_CLOSERS = frozenset({"%", ")", "%)"})
# A line of page text that ends in a number after at least one more number: the gate for the table pass.
_NUMBERED_LINE = re.compile(r"(?:^|\s)[($]?\d[\d,.]*\)?%?(?:\s+\S+)*?\s+[($]?[-\u2014\d][\d,.]*\)?%?\s*$")

# Gates, measured on FinanceBench 10-K pages: statement pages have 20-60 such lines, prose pages 0-2.
MIN_NUMBERED_LINES = 4
# A table needs this many rows with values; fewer is a sentence or two that happen to line up.
MIN_VALUE_ROWS = 3
# Label-only rows allowed between value rows (sub-headings such as "Cash Flows from Investing Activities").
MAX_LABEL_RUN = 4
# Points around a table's top and bottom baselines within which a text line belongs to it.
_BAND = 2.0


class _Word(NamedTuple):  # a NamedTuple: built ~20k times for a statement-heavy 10-Q, 3x cheaper than a dataclass
    text: str
    x0: float
    x1: float
    y: float  # baseline, PDF user space (up is larger)
    height: float


@dataclass
class _Segment:
    """Words of one row close enough to be one cell."""

    text: str
    x0: float
    x1: float

    @cached_property  # read only once the row's words are merged: the text no longer changes
    def is_value(self) -> bool:
        return bool(_VALUE.match(self.text) or _DASH.match(self.text))


@dataclass
class _Row:
    y: float
    segments: list[_Segment]
    label: str = ""
    cells: list[_Segment] = field(default_factory=list)

    @cached_property
    def is_value_row(self) -> bool:
        """Values in at least half of the cells: a header with footnote marks ("Period (1) Share") is not one."""
        values = sum(c.is_value for c in self.cells)
        return values > 0 and 2 * values >= len(self.cells)

    @cached_property
    def is_year_row(self) -> bool:
        """A header of years ("(Millions) 2018 2017 2016"): values in form, but a header in role."""
        return bool(self.cells) and all(_YEAR.match(c.text) for c in self.cells)


@dataclass(frozen=True)
class PdfTable:
    """One table of a page: its Markdown, and the baselines of its top and bottom rows (to replace those lines)."""

    markdown: str
    top: float
    bottom: float
    rows: int
    columns: int


def looks_tabular(text: str) -> bool:
    """Cheap gate: enough lines of the page text end in a number with another number before it."""
    count = 0
    for line in text.splitlines():
        if _NUMBERED_LINE.search(line):
            count += 1
            if count >= MIN_NUMBERED_LINES:
                return True
    return False


def page_words(textpage: Any, text: str) -> list[_Word]:
    """Whitespace-separated words of a PDFium text page with their boxes (left of the first char, right of the last)."""
    import pypdfium2.raw as pdfium_c

    # Five ctypes calls per word, bound once here with the handle and out-parameters ready: this loop is most
    # of the table pass's cost.
    page = getattr(textpage, "raw", textpage)
    index_of = pdfium_c.FPDFText_GetCharIndexFromTextIndex
    char_box = pdfium_c.FPDFText_GetCharBox
    char_origin = pdfium_c.FPDFText_GetCharOrigin
    left, right, bottom, top, ox, oy = (ctypes.c_double() for _ in range(6))
    box_refs = (ctypes.byref(left), ctypes.byref(right), ctypes.byref(bottom), ctypes.byref(top))
    origin_refs = (ctypes.byref(ox), ctypes.byref(oy))
    words: list[_Word] = []
    for match in re.finditer(r"\S+", text):
        first = index_of(page, match.start())
        last = index_of(page, match.end() - 1)
        if first < 0 or last < 0:
            continue  # a character PDFium generated (a space or line break): no box
        if not char_box(page, first, *box_refs):
            continue
        x0, height = left.value, top.value - bottom.value
        if not char_box(page, last, *box_refs):
            continue
        x1 = right.value
        y = oy.value if char_origin(page, first, *origin_refs) else bottom.value
        if x1 < x0:  # rotated or right-to-left text: not a table this module can read
            continue
        words.append(_Word(match.group(), x0, x1, y, height))
    return words


def find_tables(words: Sequence[_Word]) -> list[PdfTable]:
    """Tables among a page's words, top to bottom."""
    if not words:
        return []
    heights = sorted(w.height for w in words if w.height > 0)
    # Cap height of the page's text: digits and capitals are ~0.7 em tall.
    cap = heights[len(heights) // 2] if heights else 7.0
    em = max(4.0, cap / 0.7)
    rows = _rows(words, tol=max(1.5, 0.4 * cap), gap=0.8 * em)
    if len(rows) < MIN_VALUE_ROWS:
        return []
    pitches = [a.y - b.y for a, b in itertools.pairwise(rows) if a.y - b.y > 0.5]
    pitch = statistics.median(pitches) if pitches else 1.2 * em
    tables: list[PdfTable] = []
    used_until = -1
    for start, end in _blocks(rows, pitch):
        if start <= used_until:
            continue
        table = _build(rows, start, end, pitch, em, used_until)
        if table is not None:
            tables.append(table)
            used_until = end
    return tables


def _rows(words: Sequence[_Word], tol: float, gap: float) -> list[_Row]:
    """Words grouped into rows by baseline (top of the page first), each row cut into segments at wide gaps."""
    ordered = sorted(words, key=lambda w: (-w.y, w.x0))
    groups: list[list[_Word]] = []
    for word in ordered:
        if groups and abs(groups[-1][0].y - word.y) <= tol:
            groups[-1].append(word)
        else:
            groups.append([word])
    rows: list[_Row] = []
    for group in groups:
        group.sort(key=lambda w: w.x0)
        segments: list[_Segment] = []
        for word in group:
            prev = segments[-1] if segments else None
            if prev is not None and word.x0 - prev.x1 <= gap and word.text not in _CURRENCY:
                joiner = "" if prev.text in _CURRENCY else " "
                prev.text, prev.x1 = f"{prev.text}{joiner}{word.text}", max(prev.x1, word.x1)
            else:
                segments.append(_Segment(word.text, word.x0, word.x1))
        rows.append(_split_row(_Row(statistics.median(w.y for w in group), _attach_symbols(segments))))
    return rows


def _attach_symbols(segments: list[_Segment]) -> list[_Segment]:
    """A currency sign set apart from its number joins it ("$ 5,363" -> "$5,363"); so does a trailing "%" or ")"."""
    out: list[_Segment] = []
    pending: _Segment | None = None
    for seg in segments:
        if pending is not None:
            if seg.is_value:
                seg = _Segment(pending.text + seg.text, pending.x0, seg.x1)
            else:
                out.append(pending)
            pending = None
        if seg.text in _CURRENCY:
            pending = seg
            continue
        if seg.text in _CLOSERS and out and out[-1].is_value:
            out[-1] = _Segment(out[-1].text + seg.text, out[-1].x0, seg.x1)
            continue
        out.append(seg)
    if pending is not None:
        out.append(pending)
    return out


def _split_row(row: _Row) -> _Row:
    """The first segment is the row label unless it is a value; the rest are cells."""
    segs = row.segments
    if segs and not segs[0].is_value:
        row.label, row.cells = segs[0].text, segs[1:]
    else:
        row.label, row.cells = "", list(segs)
    return row


def _blocks(rows: list[_Row], pitch: float) -> list[tuple[int, int]]:
    """(first, last) row indices of runs of value rows, with short label-only runs between them."""
    blocks: list[tuple[int, int]] = []
    start: int | None = None
    last_value: int | None = None
    for i, row in enumerate(rows):
        value = row.is_value_row and not row.is_year_row
        if value:
            near = last_value is not None and rows[last_value].y - row.y <= (i - last_value + 2) * pitch
            if start is None or last_value is None or i - last_value - 1 > MAX_LABEL_RUN or not near:
                if start is not None and last_value is not None:
                    blocks.append((start, last_value))
                start = i
            last_value = i
    if start is not None and last_value is not None:
        blocks.append((start, last_value))
    return blocks


def _columns(rows: Sequence[_Row]) -> list[tuple[float, float]]:
    """Column intervals: cells of the value rows whose horizontal extents overlap, merged."""
    spans = sorted((c.x0, c.x1) for r in rows if r.is_value_row for c in r.cells)
    columns: list[list[float]] = []
    for x0, x1 in spans:
        if columns and x0 <= columns[-1][1]:
            columns[-1][1] = max(columns[-1][1], x1)
        else:
            columns.append([x0, x1])
    return [(a, b) for a, b in columns]


def _column_of(seg: _Segment, columns: list[tuple[float, float]]) -> list[int]:
    """The columns a cell belongs to: those it overlaps (several for a header spanning them), else the nearest."""
    overlaps = [(min(seg.x1, b) - max(seg.x0, a), k) for k, (a, b) in enumerate(columns)]
    hit = [k for o, k in overlaps if o > 0]
    if hit:
        return hit
    centre = (seg.x0 + seg.x1) / 2
    return [min(range(len(columns)), key=lambda k: abs(centre - (columns[k][0] + columns[k][1]) / 2))]


def _without_stray_rows(body: list[_Row]) -> tuple[list[_Row], list[tuple[float, float]]]:
    """The block minus value rows at its edges whose values make a column of their own ("See notes ... 38":
    a page number), and the columns of what is left."""
    while True:
        value_rows = [r for r in body if r.is_value_row]
        columns = _columns(value_rows)
        if len(value_rows) <= MIN_VALUE_ROWS:
            return body, columns
        support = [0] * len(columns)
        for row in value_rows:
            for k in {k for c in row.cells for k in _column_of(c, columns)}:
                support[k] += 1
        weak = {k for k, n in enumerate(support) if n < 2}
        stray = [
            r
            for r in (body[0], body[-1])
            if r.is_value_row and all(set(_column_of(c, columns)) <= weak for c in r.cells)
        ]
        if not stray:
            return body, columns
        body = [r for r in body if r not in stray]
        while body and not body[-1].is_value_row:
            body.pop()  # the table ends with its last value row; a note below it is text


def _build(rows: list[_Row], start: int, end: int, pitch: float, em: float, floor: int) -> PdfTable | None:
    """The table of value rows rows[start..end] with its header rows and caption above; None if it is no table.

    `floor` is the last row of the previous table on the page: header and caption rows are looked for below it.
    """
    body, columns = _without_stray_rows(rows[start : end + 1])
    value_rows = [r for r in body if r.is_value_row]
    if not columns or len(value_rows) < MIN_VALUE_ROWS:
        return None
    # A stray row cut from the top is looked at again as a header row: every line in the band is in the table.
    start = next(k for k in range(start, end + 1) if rows[k] is body[0])
    area = columns[0][0]  # where values start
    if len(columns) == 1 and len(value_rows) < 2 * MIN_VALUE_ROWS:
        return None  # one value column needs more evidence than a few numbered lines
    if sum(len(r.label) > 0 for r in value_rows) < len(value_rows) // 2:
        return None  # mostly unlabeled numbers: a chart's axis or a list of figures, not a statement

    # Sub-headings above the first value row ("Cash Flows from Operating Activities") belong to the body.
    i = start - 1
    prev_y = rows[start].y
    while i > floor and start - i <= 2:
        row = rows[i]
        if row.cells or row.is_year_row or row.y - prev_y > 2.2 * pitch:
            break
        if not row.label or row.segments[-1].x1 > area - em:
            break
        body.insert(0, row)
        prev_y = row.y
        i -= 1
    # Header rows: directly above, with something over the columns (years, "December 31,", segment names).
    header: list[_Row] = []
    while i > floor and len(header) < 4:
        row = rows[i]
        if row.y - prev_y > 2.6 * pitch:
            break
        over = [s for s in row.segments if s.x1 > area - em]
        if not over or (row.label.rstrip().endswith(".") and not row.cells):
            break
        header.insert(0, row)
        prev_y = row.y
        i -= 1
    # Caption: up to four short lines just above the header (statement name, company, period, unit).
    caption: list[str] = []
    while i > floor and len(caption) < 4:
        row = rows[i]
        text = " ".join(s.text for s in row.segments)
        if row.y - prev_y > 2.6 * pitch or len(text) > 100 or text.endswith((".", ";", ",")) or row.is_value_row:
            break
        caption.insert(0, text)
        prev_y = row.y
        i -= 1

    width = len(columns)
    head_cells = [""] * width
    corner: list[str] = []
    for row in header:
        for seg in row.segments:
            if seg.x1 <= area - em / 2 or seg.x0 < area - 2 * em:  # the label area, or a title across it
                corner.append(seg.text)
                continue
            for k in _column_of(seg, columns):
                head_cells[k] = f"{head_cells[k]} {seg.text}".strip()
    corner_text = " ".join([*caption, *corner])

    lines = [
        _md_row([corner_text, *head_cells]),
        "|" + "|".join([" --- "] * (width + 1)) + "|",
    ]
    pending_label = ""
    data_rows = 0
    for row in body:
        if not row.is_value_row and not row.cells:
            if pending_label and row.label[:1].islower():
                pending_label = f"{pending_label} {row.label}"  # a label wrapped over two lines
                continue
            if pending_label:
                lines.append(_md_row([pending_label] + [""] * width))
            pending_label = row.label
            continue
        label = row.label
        if pending_label and (not label or label[:1].islower()):
            label = f"{pending_label} {label}".strip()  # a label wrapped onto the row with the values
        elif pending_label:
            lines.append(_md_row([pending_label] + [""] * width))
        pending_label = ""
        cells = [""] * width
        for seg in row.cells:
            k = _column_of(seg, columns)[-1]
            cells[k] = f"{cells[k]} {seg.text}".strip()
        lines.append(_md_row([label, *cells]))
        data_rows += 1
    if pending_label:
        lines.append(_md_row([pending_label] + [""] * width))
    top = (header[0] if header else body[0]).y
    return PdfTable("\n".join(lines), top=top, bottom=body[-1].y, rows=data_rows, columns=width)


def with_tables(lines: list[Line], tables: Sequence[PdfTable]) -> list[Line]:
    """The page's lines with each table's lines (baselines within its top and bottom rows) replaced by the table,
    placed where its first line was: reading order and page stay those of the text around it."""
    if not tables:
        return lines
    out: list[Line] = []
    placed: set[int] = set()
    for line in lines:
        hit = None
        if line.y is not None:
            hit = next((k for k, t in enumerate(tables) if t.bottom - _BAND <= line.y <= t.top + _BAND), None)
        if hit is None:
            out.append(line)
        elif hit not in placed:
            placed.add(hit)
            out.append(Line(text=tables[hit].markdown, y=tables[hit].top, size=None, blank_before=True, table=True))
    return out


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in cells) + " |"
