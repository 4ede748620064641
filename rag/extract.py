"""Quoted answers: the sentences (or table rows) of the retrieved chunks that best answer the question, verbatim.

No generator: every word of the answer is a word of a source, so it cannot invent a number. Each candidate sentence
is scored by a mix of its embedding cosine to the query and the IDF-weighted share of the query's words it contains;
the best few are kept within a budget, in document order per chunk, each followed by its citation. The same best
score is the answer's answerability: too low, and the honest answer is that the documents do not say.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from rag.amounts import amount_count, asks_for_amount
from rag.injection import instruction_spans, without_instructions
from rag.text import STOPWORDS, sentence_spans, tokens
from rag.types import Quote as Quote

# Question words that carry no topic: "how many days" should match a sentence on days, not on "many".
_QUESTION_WORDS_TEXT = "many much get got give given tell please say says said know kind type"
_QUESTION_WORDS = frozenset(_QUESTION_WORDS_TEXT.split())
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|[\s:|-]+\|\s*$")


@dataclass(frozen=True)
class Extraction:
    quotes: tuple[Quote, ...]  # in answer order
    best_score: float  # the best sentence's match to the query (0-1) without ranking priors: answerability

    @property
    def text(self) -> str:
        """The quotes, each run of one chunk followed by its [n]; table rows under their header, once per run."""
        parts: list[str] = []
        for i, q in enumerate(self.quotes):
            prev = self.quotes[i - 1] if i else None
            last_of_run = i + 1 == len(self.quotes) or self.quotes[i + 1].number != q.number
            same_table = prev is not None and prev.number == q.number and prev.header == q.header
            body = q.text if not q.header or same_table else f"{q.header}\n{q.text}"
            parts.append(body + (f" [{q.number}]" if last_of_run else ""))
        if all(q.header is None for q in self.quotes):
            return " ".join(parts)
        return "\n".join(parts)


@dataclass(frozen=True)
class _Unit:
    number: int
    rank: int
    start: int
    end: int
    text: str  # what is quoted
    scored: str  # what is scored: a table row with its title and header rows
    header: str | None = None


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _units(number: int, rank: int, text: str) -> list[_Unit]:
    """Sentences of a chunk; each row of a Markdown table is a unit that carries its table's header row.

    The header is the row right above the table's rule line (`| --- |`) when at least half of its cells are filled;
    rows above it, or a sparse row in its place, are titles ("| Stanley Cups | | |" over a spreadsheet's columns),
    kept as context for scoring, and then the first filled row is the header. A table continued from the previous
    chunk without its header still quotes its rows: their header is "" (none to show).
    """
    out: list[_Unit] = []
    header: str | None = None
    titles: list[str] = []
    spans = _pieces(text)
    for i, (a, b) in enumerate(spans):
        piece = text[a:b]
        if not _TABLE_ROW.match(piece):
            header, titles = None, []
            out.append(_Unit(number, rank, a, b, piece, piece))
            continue
        if _TABLE_RULE.match(piece):
            continue
        if header is None:
            following = text[spans[i + 1][0] : spans[i + 1][1]] if i + 1 < len(spans) else ""
            filled = _filled(piece)
            if _TABLE_RULE.match(following) and filled:
                header = piece
                continue
            if _TABLE_RULE.match(following) or _rule_below(text, spans[i + 1 :]):
                titles.append(piece)  # a title row: the header is further down, or is the next filled row
                continue
            if titles and filled:
                header = piece  # a spreadsheet's column row under its title row (the title took the rule)
                continue
            header = ""  # rows continued from another chunk: no header here
        context = " ".join([*titles, header])
        out.append(_Unit(number, rank, a, b, piece, f"{context} {piece}".strip(), header))
    return out


_TABLE_LINE = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.MULTILINE)


def _pieces(text: str) -> list[tuple[int, int]]:
    """Sentence spans of the prose, each table row whole: a row's cell may hold ". " ("Item 8. FINANCIAL
    STATEMENTS"), which must not cut the row in two."""
    out: list[tuple[int, int]] = []
    pos = 0
    for m in _TABLE_LINE.finditer(text):
        out.extend((pos + a, pos + b) for a, b in sentence_spans(text[pos : m.start()]))
        out.append((m.start(), m.end()))
        pos = m.end()
    out.extend((pos + a, pos + b) for a, b in sentence_spans(text[pos:]))
    return out


def _columns(header: str | None) -> str:
    """A table header's column labels, its first cell (the title, often shortened in repeats) left out."""
    if not header:
        return ""
    cells = _cells(header)
    labels = " | ".join(c.lower() for c in cells[1:])
    return labels if labels.strip(" |") else " | ".join(c.lower() for c in cells)


def _filled(row: str) -> bool:
    """At least half of the row's cells hold something (a header, not a title row)."""
    cells = _cells(row)
    return sum(bool(c) for c in cells) * 2 >= len(cells)


def _rule_below(text: str, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the table these spans continue has its rule line further down (before the table ends)."""
    for a, b in spans:
        piece = text[a:b]
        if not _TABLE_ROW.match(piece):
            return False
        if _TABLE_RULE.match(piece):
            return True
    return False


def query_terms(query: str) -> list[str]:
    """The query's topic words: normalised, stopwords and bare question words dropped."""
    return [t for t in dict.fromkeys(tokens(query)) if t not in STOPWORDS and t not in _QUESTION_WORDS]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _meanings(query: list[str], expansion: Sequence[tuple[str, Sequence[str]]]) -> dict[str, list[frozenset[str]]]:
    """For each query word of a glossary term, the meanings (content words, singular) that stand for it."""
    out: dict[str, list[frozenset[str]]] = {}
    for found, means in expansion:
        phrases = [frozenset(_singular(t) for t in tokens(m) if t not in STOPWORDS) for m in means]
        for word in tokens(found):
            if word in query:
                out.setdefault(word, []).extend(p for p in phrases if p)
    return out


def _lexical(
    query: list[str], units: list[_Unit], expansion: Sequence[tuple[str, Sequence[str]]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """IDF-weighted share of the query's words in each unit; IDF over the candidate units themselves, so a word
    every candidate shares (the topic everyone retrieved on) counts less than the one that singles out the answer.
    A word of a glossary term ("capex") counts as present in a unit that prints one of its meanings whole
    ("Purchases of property, plant and equipment").

    Two shares: of all the query's words (how well a unit answers: answerability), and of those some candidate
    holds (which unit answers best: a long question's instructions, "Please answer using the balance sheet", are
    in no candidate and would otherwise shrink every unit's word match until the embedding alone decides)."""
    if not query or not units:
        zeros = np.zeros(len(units), dtype=np.float32)
        return zeros, zeros
    meanings = _meanings(query, expansion)
    bags = [set(tokens(u.scored)) for u in units]
    if meanings:
        for bag in bags:
            singular = {_singular(t) for t in bag}
            bag.update(w for w, phrases in meanings.items() if any(p <= singular for p in phrases))
    df = Counter(t for bag in bags for t in query if t in bag)
    n = len(units)
    weight = {t: math.log(1 + (n + 1) / (df[t] + 0.5)) for t in query}
    matched = np.array([sum(weight[t] for t in query if t in bag) for bag in bags], dtype=np.float32)
    present = sum(weight[t] for t in query if df[t]) or 1.0
    return matched / sum(weight.values()), matched / present


def extract_answer(
    query: str,
    chunks: Sequence[tuple[int, str]],
    embed: Callable[[list[str]], np.ndarray] | None,
    query_vector: np.ndarray | None,
    *,
    dense_weight: float = 0.6,
    rank_weight: float = 0.5,
    max_quotes: int = 4,
    max_chars: int = 600,
    keep_ratio: float = 0.5,
    same_chunk_bonus: float = 0.05,
    min_words: int = 3,
    expansion: Sequence[tuple[str, Sequence[str]]] = (),
    amount_weight: float = 0.0,
) -> Extraction:
    """Quote the best sentences of `chunks` ((citation number, text), best-ranked first) for `query`.

    score = dense_weight x cosine(query, sentence) + (1 - dense_weight) x IDF-weighted query-word share, plus
    `rank_weight` / (1 + chunk rank) so that between equals the chunk retrieval ranked higher wins. The best one is
    always quoted; more, up to `max_quotes` and `max_chars`, while they score at least `keep_ratio` x the best.
    `expansion` holds the glossary terms the query named with their meanings (rag/glossary.py). When the query asks
    for an amount (rag/amounts.py), a sentence or row that prints amounts gets up to `amount_weight` more.
    """
    units = [u for rank, (number, text) in enumerate(chunks) for u in _units(number, rank, text)]
    # A heading line ("Forecasting") or a stray fragment is no answer; table rows always carry their header.
    units = [u for u in units if len(tokens(u.text)) >= min_words or u.header is not None]
    # Text addressed to a model ("Ignorez les instructions...", "Assistant: ...") is never quoted (rag/injection.py).
    flagged = {number: instruction_spans(text) for number, text in chunks}
    units = [v for u in units for v in without_instructions([u], flagged[u.number])]
    if not units:
        return Extraction((), 0.0)
    terms = query_terms(query)
    lexical, lexical_present = _lexical(terms, units, expansion)
    if embed is not None and query_vector is not None and dense_weight > 0:
        vectors = np.asarray(embed([u.scored for u in units]), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        q = np.asarray(query_vector, dtype=np.float32)
        dense = np.clip(vectors @ (q / (np.linalg.norm(q) + 1e-12)), 0.0, 1.0)
        match = float((dense_weight * dense + (1 - dense_weight) * lexical).max())
        scores = dense_weight * dense + (1 - dense_weight) * lexical_present
    else:
        match, scores = float(lexical.max()), lexical_present
    # `match` is how well the best sentence answers, before the ranking priors below.
    # A table split over several chunks is one table: its rows share the rank of its best-ranked piece, so the row
    # the question names wins over a row of the same table that happened to land in a higher-ranked chunk.
    # Pieces are told apart by their column labels (the header without its first cell): a piece may repeat the
    # header with a shortened title cell (ingest/chunking.py).
    table_rank: dict[str, int] = {}
    keys = [_columns(u.header) for u in units]
    for u, key in zip(units, keys, strict=True):
        if key:
            table_rank[key] = min(table_rank.get(key, u.rank), u.rank)
    ranks = [table_rank[key] if key else u.rank for u, key in zip(units, keys, strict=True)]
    scores = scores + np.array([rank_weight / (1 + r) for r in ranks], dtype=np.float32)
    if amount_weight and asks_for_amount(query):
        scores = scores + np.array([amount_weight * min(1.0, amount_count(u.text) / 2) for u in units], np.float32)
    best = float(scores.max())
    home = units[int(scores.argmax())].number  # the best unit's chunk
    if same_chunk_bonus:
        # Answers read best as one passage: the best sentence's neighbours in its own chunk come first.
        scores = scores + np.array([same_chunk_bonus if u.number == home else 0.0 for u in units], dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    # The question's words in a unit's own text, its table header and title left out: rows that hold them are the
    # rows asked about.
    own = _lexical(terms, [replace(u, scored=u.text) for u in units], expansion)[1] > 0
    row_named = units[order[0]].header is not None and bool(own[order[0]])
    chosen = [int(order[0])]
    used = len(units[order[0]].text)
    for i in order[1:]:
        if len(chosen) >= max_quotes or scores[i] < keep_ratio * (best + same_chunk_bonus):
            break
        if used + len(units[i].text) > max_chars:
            continue
        if units[i].header is not None and row_named and not own[i]:
            continue  # the question names a row ("Maple Leafs"): the table's other rows are not the answer
        if units[i].number != home and terms and not lexical_present[i]:
            # From another chunk, a unit that holds none of the question's words is there on its chunk's rank and
            # its numbers alone (the demo quoted a footballer's "1989 1 0" under the Stanley Cup row).
            continue
        chosen.append(int(i))
        used += len(units[i].text)
    # Quotes of one chunk read in document order; chunks in the order of their best quote.
    first = {units[i].number: pos for pos, i in reversed(list(enumerate(chosen)))}
    chosen.sort(key=lambda i: (first[units[i].number], units[i].start))
    quotes = tuple(
        Quote(units[i].number, units[i].start, units[i].end, units[i].text, float(scores[i]), units[i].header)
        for i in chosen
    )
    return Extraction(_merge(quotes, dict(chunks)), min(1.0, match))


def _merge(quotes: tuple[Quote, ...], texts: dict[int, str]) -> tuple[Quote, ...]:
    """Adjacent sentences of one chunk become one quote (the text between them is only whitespace)."""
    out: list[Quote] = []
    for q in quotes:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.number == q.number
            and prev.header is None
            and q.header is None
            and not texts[q.number][prev.end : q.start].strip()
        ):
            text = texts[q.number][prev.start : q.end]
            out[-1] = Quote(q.number, prev.start, q.end, text, max(prev.score, q.score))
        else:
            out.append(q)
    return tuple(out)
