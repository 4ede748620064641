"""Structure-aware chunking: sections from titles, whole tables, sentence packing to a token budget.

Sizes are counted with the embedder's own tokenizer, and every chunk's embedded
text (document card + section path + chunk text + special tokens) fits the embedder's
window: a longer chunk would be silently truncated by the model, which is a bug here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.documents import TABLE, TITLE, Element, ParsedDocument
from rag.config import ChunkingSettings

ELEMENT_SEPARATOR = "\n\n"
HEADING_SEPARATOR = " > "
CARD_SEPARATOR = " · "
# Sentence ends: terminal punctuation (plus closing quotes/brackets) then whitespace, or a newline.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_TABLE_SEPARATOR_ROW = re.compile(r"^\|?\s*:?-{3,}")
# Special tokens a BERT-style encoder adds ([CLS] ... [SEP]); checked against the tokenizer below.
_SPECIAL_TOKENS_FALLBACK = 2


class Tokenizer(Protocol):
    def __call__(self, text: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Chunk:
    """A piece of a document that gets one vector.

    `text` is a slice of the document text (`document_text[char_start:char_end]`),
    except for a table split by rows, whose header rows are repeated before the slice.
    `embed_text` is what is embedded and BM25-indexed: the document card's short form
    (title · organisation · period), the section path, then the text. Only `text` is stored
    and cited; the context exists so that look-alike chunks of different documents differ.
    """

    index: int
    text: str
    embed_text: str
    char_start: int
    char_end: int
    pages: tuple[int, ...]
    section_path: tuple[str, ...]
    element_types: tuple[str, ...]
    token_count: int

    @property
    def chunk_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    page: int | None
    category: str
    section: tuple[str, ...]
    is_title: bool = False
    # For one row of a table too large for a chunk: the header rows' offsets.
    table_header: tuple[int, int] | None = None
    table_id: int = -1
    # The header repeated above the rows when the document's own is too long to repeat (cells shortened).
    header_text: str | None = None


def build_document_text(elements: Sequence[Element]) -> tuple[str, list[int]]:
    """The document text chunks point into, and where each element starts in it."""
    starts: list[int] = []
    pos = 0
    for el in elements:
        starts.append(pos)
        pos += len(el.text) + len(ELEMENT_SEPARATOR)
    return ELEMENT_SEPARATOR.join(el.text for el in elements), starts


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line of `text`, whitespace between them excluded.

    Not rag.text's splitter (which quoting, the checker, the UI and eval share) on purpose: these spans are where
    chunks may end, so changing them re-chunks documents (new chunk text and ids on the next ingest). This one
    also breaks at "S. aureus", "Fig. 2", "e.g. the", a lower-case or symbol start, and never cuts a long run
    at 400 characters; measured, rag.text's would change the chunks of 91 of the first 1,000 SciFact abstracts
    (chunk_tokens=200) and of none of samples/ or tests/ingest/test_chunking.py.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.start() + len(m.group(0).rstrip())  # keep closing quotes with their sentence
        if end > pos and text[pos:end].strip():
            spans.append((pos, end))
        pos = m.end()
    if pos < len(text) and text[pos:].strip():
        spans.append((pos, len(text)))
    return spans


class StructureChunker:
    """Turns a cleaned ParsedDocument into Chunks that fit `min(chunk_tokens, model window)`."""

    def __init__(self, tokenizer: Tokenizer, settings: ChunkingSettings, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.limit = min(settings.chunk_tokens, max_tokens)
        self.special = self._count_special()
        if self.limit - self.special - settings.heading_tokens < 16:
            raise ValueError(
                f"chunking.chunk_tokens={settings.chunk_tokens} leaves no room for text after "
                f"{settings.heading_tokens} heading tokens"
            )

    def _count_special(self) -> int:
        try:
            with_special = len(self.tokenizer("a", add_special_tokens=True)["input_ids"])
            without = len(self.tokenizer("a", add_special_tokens=False)["input_ids"])
            return with_special - without
        except (TypeError, KeyError):
            return _SPECIAL_TOKENS_FALLBACK

    def _token_counts(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def _hard_split(self, text: str, offset: int, budget: int) -> list[tuple[int, int]]:
        """Cut a sentence longer than the budget at token boundaries."""
        enc = self.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        offsets = enc["offset_mapping"]
        spans = []
        for i in range(0, len(offsets), budget):
            piece = offsets[i : i + budget]
            start, end = piece[0][0], piece[-1][1]
            if text[start:end].strip():
                spans.append((offset + start, offset + end))
        return spans

    # -- units --------------------------------------------------------------------------
    def _units(self, doc: ParsedDocument, doc_text: str, starts: list[int], budget: int) -> list[_Unit]:
        raw: list[_Unit] = []
        stack: list[tuple[int, str]] = []  # (depth, title)
        for n, (el, base) in enumerate(zip(doc.elements, starts, strict=True)):
            if el.category == TITLE and len(el.text) <= 300:
                depth = el.depth if el.depth is not None else 0
                while stack and stack[-1][0] >= depth:
                    stack.pop()
                stack.append((depth, el.text.replace("\n", " ")))
                section = tuple(t for _, t in stack)
                raw.append(_Unit(base, base + len(el.text), 0, el.page_number, el.category, section, True))
                continue
            section = tuple(t for _, t in stack)
            if el.category == TABLE:
                raw.extend(self._table_units(el, base, section, n))
                continue
            for s, e in split_sentences(el.text):
                raw.append(_Unit(base + s, base + e, 0, el.page_number, el.category, section))
        counts = self._token_counts([doc_text[u.start : u.end] for u in raw])
        units: list[_Unit] = []
        for unit, tokens in zip(raw, counts, strict=True):
            unit.tokens = tokens
            if tokens <= budget:
                units.append(unit)
                continue
            if unit.category == TABLE and unit.table_header is None:
                units.extend(self._split_table_unit(unit, doc_text, budget))
                continue
            for s, e in self._hard_split(doc_text[unit.start : unit.end], unit.start, budget):
                piece = _Unit(s, e, 0, unit.page, unit.category, unit.section, unit.is_title)
                piece.table_header, piece.table_id = unit.table_header, unit.table_id
                units.append(piece)
        for unit in units:
            if unit.tokens == 0:
                unit.tokens = self._token_counts([doc_text[unit.start : unit.end]])[0]
        return units

    @staticmethod
    def _table_units(el: Element, base: int, section: tuple[str, ...], table_id: int) -> list[_Unit]:
        unit = _Unit(base, base + len(el.text), 0, el.page_number, TABLE, section)
        unit.table_id = table_id
        return [unit]

    def _split_table_unit(self, unit: _Unit, doc_text: str, budget: int) -> list[_Unit]:
        """Rows of a table too big for one chunk, each knowing the header rows to repeat."""
        text = doc_text[unit.start : unit.end]
        line_spans: list[tuple[int, int]] = []
        pos = 0
        for line in text.split("\n"):
            if line.strip():
                line_spans.append((pos, pos + len(line)))
            pos += len(line) + 1
        header_lines = 1
        if len(line_spans) > 1 and _TABLE_SEPARATOR_ROW.match(text[line_spans[1][0] : line_spans[1][1]]):
            header_lines = 2
        header: tuple[int, int] | None = (unit.start + line_spans[0][0], unit.start + line_spans[header_lines - 1][1])
        header_tokens = self._token_counts([doc_text[unit.start + line_spans[0][0] : header[1]]])[0] if header else 0
        rows: list[_Unit] = []
        header_text: str | None = None
        full_tokens = header_tokens
        if header is not None and header_tokens > budget // 2:
            # A header too long to repeat (a statement's title and units merged into its first cell, nine columns):
            # the full one stays in place as text, and the rows repeat it with shortened cells, so that a row in a
            # later chunk still says which column is which year.
            compact = self._compact_header(doc_text[header[0] : header[1]], budget // 2)
            if compact is None:
                header_lines, header = 0, None  # not even shortened: split the table as plain text
            else:
                header_text, header_tokens = compact
                full = _Unit(header[0], header[1], 0, unit.page, TABLE, unit.section)
                full.table_id = unit.table_id
                full.tokens = full_tokens
                if full.tokens <= budget:
                    rows.append(full)
                else:
                    for ps, pe in self._hard_split(doc_text[header[0] : header[1]], header[0], budget):
                        rows.append(_Unit(ps, pe, 0, unit.page, TABLE, unit.section))
        spans = line_spans[header_lines:] if header is not None else line_spans
        row_budget = budget - (header_tokens + 1 if header is not None else 0)
        for s, e in spans:
            start, end = unit.start + s, unit.start + e
            tokens = self._token_counts([doc_text[start:end]])[0]
            pieces = (
                [(start, end)] if tokens <= row_budget else self._hard_split(doc_text[start:end], start, row_budget)
            )
            for ps, pe in pieces:
                row = _Unit(ps, pe, 0, unit.page, TABLE, unit.section)
                row.table_header, row.table_id, row.header_text = header, unit.table_id, header_text
                rows.append(row)
        if header is not None and header_text is None and rows:
            rows[0].start = header[0]  # the first group shows the header in place
        return rows

    def _compact_header(self, text: str, limit: int) -> tuple[str, int] | None:
        """The header row with each cell cut to its first and last words (a rule line under it), within `limit`
        tokens; None when even one word per cell does not fit."""
        lines = [ln for ln in text.split("\n") if ln.strip()]
        cells = [c.strip() for c in lines[0].strip().strip("|").split("|")]
        for words in (12, 8, 6, 4, 2, 1):
            short = []
            for cell in cells:
                w = cell.split()
                keep = w if len(w) <= words else [*w[: (words + 1) // 2], "…", *w[len(w) - words // 2 :]]
                short.append(" ".join(x for x in keep if x))
            row = "| " + " | ".join(short) + " |\n|" + "-|" * len(cells)
            tokens = self._token_counts([row])[0]
            if tokens <= limit:
                return row, tokens
        return None

    # -- packing -----------------------------------------------------------------------
    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        if not doc.elements:
            return []
        doc_text, starts = build_document_text(doc.elements)
        has_titles = any(el.category == TITLE for el in doc.elements)
        heading = self.settings.heading_tokens if has_titles else 0
        card_line = self._card_line(doc)
        card_cost = self._token_counts([card_line])[0] + 1 if card_line else 0  # +1: the newline after it
        budget = self.limit - self.special - heading - card_cost
        units = self._units(doc, doc_text, starts, budget)

        groups: list[list[_Unit]] = []
        cur: list[_Unit] = []
        cur_tokens = 0

        def content_tokens(us: list[_Unit]) -> int:
            return sum(u.tokens for u in us if not u.is_title)

        def close(carry_overlap: bool) -> None:
            nonlocal cur, cur_tokens
            if not cur:
                return
            groups.append(cur)
            carried: list[_Unit] = []
            if carry_overlap and self.settings.overlap_tokens > 0:
                total = 0
                for u in reversed(cur):
                    if u.is_title or u.category == TABLE or total + u.tokens > self.settings.overlap_tokens:
                        break
                    carried.insert(0, u)
                    total += u.tokens
            cur, cur_tokens = carried, sum(u.tokens for u in carried)

        for unit in units:
            row = unit.table_header is not None
            prev_row = bool(cur) and cur[-1].table_header is not None
            if row and (not prev_row or cur[-1].table_id != unit.table_id):
                if prev_row or content_tokens(cur) > 0:
                    close(False)  # a split table starts its own chunks, after its titles
            elif not row and prev_row:
                close(False)
            elif unit.is_title and cur and content_tokens(cur) >= self.settings.min_chunk_tokens:
                close(False)  # a new section
            cost = unit.tokens + (1 if cur else 0)
            if row and not cur and unit.start != self._header_start(unit):
                cost += self._header_cost(doc_text, unit)
            if cur and cur_tokens + cost > budget:
                close(not row and not unit.is_title)
                while cur and cur_tokens + unit.tokens + 1 > budget:  # overlap must not crowd out the unit
                    cur_tokens -= cur.pop(0).tokens
                cost = unit.tokens + (1 if cur else 0)
                if row and not cur and unit.start != self._header_start(unit):
                    cost += self._header_cost(doc_text, unit)
            cur.append(unit)
            cur_tokens += cost
        close(False)
        return self._materialise(groups, doc_text, card_line)

    def _card_line(self, doc: ParsedDocument) -> str:
        """The card's short form, minus what the document's own headings already say, cut to `card_tokens`.

        The title is kept last to be cut: organisation and period are what tell look-alikes apart.
        """
        budget = self.settings.card_tokens
        if doc.card is None or budget == 0:
            return ""
        headings = {el.text.replace("\n", " ") for el in doc.elements if el.category == TITLE}
        parts = doc.card.short_parts(headings)
        if not parts:
            return ""
        line = CARD_SEPARATOR.join(parts)
        if self._token_counts([line])[0] <= budget:
            return line
        title = parts[0] if parts[0] == doc.card.title else ""
        rest = doc.card.short_parts(headings | {title}) if title else parts  # the period again, once the title goes
        tail = CARD_SEPARATOR.join(rest)
        room = budget - (self._token_counts([CARD_SEPARATOR + tail])[0] if tail else 0) - 1
        if title and room >= 4:
            enc = self.tokenizer(title, add_special_tokens=False, return_offsets_mapping=True)
            keep = enc["offset_mapping"][:room]
            cut = title[: keep[-1][1]].rstrip() + "…"
            return CARD_SEPARATOR.join([cut, *rest]) if rest else cut
        if tail and self._token_counts([tail])[0] <= budget:
            return tail
        enc = self.tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)
        keep = enc["offset_mapping"][: budget - 1]
        return tail[: keep[-1][1]].rstrip() + "…" if keep else ""

    @staticmethod
    def _header_start(unit: _Unit) -> int:
        """Where the repeated header would start; -1 when it is a shortened copy (always repeated)."""
        return -1 if unit.header_text is not None or unit.table_header is None else unit.table_header[0]

    @staticmethod
    def _header_of(doc_text: str, unit: _Unit) -> str:
        assert unit.table_header is not None
        return unit.header_text or doc_text[unit.table_header[0] : unit.table_header[1]]

    def _header_cost(self, doc_text: str, unit: _Unit) -> int:
        return self._token_counts([self._header_of(doc_text, unit)])[0] + 1

    def _materialise(self, groups: list[list[_Unit]], doc_text: str, card_line: str = "") -> list[Chunk]:
        chunks: list[Chunk] = []
        seen: set[str] = set()
        drafts: list[tuple[str, str, int, int, list[_Unit]]] = []
        for group in groups:
            start, end = group[0].start, group[-1].end
            text = doc_text[start:end]
            if group[0].table_header is not None and start != self._header_start(group[0]):
                text = self._header_of(doc_text, group[0]) + "\n" + text
            content = [u for u in group if not u.is_title] or group
            section = content[0].section
            own_titles = {doc_text[u.start : u.end] for u in group if u.is_title}
            prefix_parts = [t for t in section if t not in own_titles]
            prefix = self._fit_heading(HEADING_SEPARATOR.join(prefix_parts))
            embed_text = f"{prefix}\n\n{text}" if prefix else text
            if card_line:
                embed_text = f"{card_line}\n{embed_text}"
            drafts.append((text, embed_text, start, end, group))
        counts = self._token_counts([d[1] for d in drafts])
        for (text, embed_text, start, end, group), tokens in zip(drafts, counts, strict=True):
            total = tokens + self.special
            if total > self.limit:
                # Tokenizers are not perfectly additive across sentence joins; re-split
                # rather than let the model truncate.
                raise AssertionError(f"chunk of {total} tokens exceeds the limit of {self.limit}: chunker bug")
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if digest in seen:  # exact duplicate chunk within the document
                continue
            seen.add(digest)
            content = [u for u in group if not u.is_title] or group
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text,
                    embed_text=embed_text,
                    char_start=start,
                    char_end=end,
                    pages=tuple(sorted({u.page for u in group if u.page is not None})),
                    section_path=content[0].section,
                    element_types=tuple(dict.fromkeys(u.category for u in group)),
                    token_count=total,
                )
            )
        return chunks

    def _fit_heading(self, heading: str) -> str:
        """The section path, cut from the left (keeping the nearest titles) to the heading budget."""
        budget = self.settings.heading_tokens
        if not heading or budget == 0:
            return ""
        if self._token_counts([heading])[0] <= budget - 1:
            return heading
        enc = self.tokenizer(heading, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        keep = offsets[-(budget - 2) :]
        return "…" + heading[keep[0][0] :] if keep else ""
