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
from dataclasses import dataclass

import numpy as np

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
            body = q.text if q.header is None or same_table else f"{q.header}\n{q.text}"
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

    The header is the first row with at least half of its cells filled: a spreadsheet's title row above it
    ("| Stanley Cups | | |") is kept as context for scoring, not taken for the header.
    """
    out: list[_Unit] = []
    header: str | None = None
    titles: list[str] = []
    for a, b in sentence_spans(text):
        piece = text[a:b]
        if not _TABLE_ROW.match(piece):
            header, titles = None, []
            out.append(_Unit(number, rank, a, b, piece, piece))
            continue
        if _TABLE_RULE.match(piece):
            continue
        if header is None:
            cells = _cells(piece)
            if sum(bool(c) for c in cells) * 2 >= len(cells):
                header = piece
            else:
                titles.append(piece)
            continue
        context = " ".join([*titles, header])
        out.append(_Unit(number, rank, a, b, piece, f"{context} {piece}", header))
    return out


def query_terms(query: str) -> list[str]:
    """The query's topic words: normalised, stopwords and bare question words dropped."""
    return [t for t in dict.fromkeys(tokens(query)) if t not in STOPWORDS and t not in _QUESTION_WORDS]


def _lexical(query: list[str], units: list[_Unit]) -> np.ndarray:
    """IDF-weighted share of the query's words in each unit; IDF over the candidate units themselves, so a word
    every candidate shares (the topic everyone retrieved on) counts less than the one that singles out the answer."""
    if not query or not units:
        return np.zeros(len(units), dtype=np.float32)
    bags = [set(tokens(u.scored)) for u in units]
    df = Counter(t for bag in bags for t in query if t in bag)
    n = len(units)
    weight = {t: math.log(1 + (n + 1) / (df[t] + 0.5)) for t in query}
    total = sum(weight.values())
    return np.array([sum(weight[t] for t in query if t in bag) / total for bag in bags], dtype=np.float32)


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
) -> Extraction:
    """Quote the best sentences of `chunks` ((citation number, text), best-ranked first) for `query`.

    score = dense_weight x cosine(query, sentence) + (1 - dense_weight) x IDF-weighted query-word share, plus
    `rank_weight` / (1 + chunk rank) so that between equals the chunk retrieval ranked higher wins. The best one is
    always quoted; more, up to `max_quotes` and `max_chars`, while they score at least `keep_ratio` x the best.
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
    lexical = _lexical(terms, units)
    if embed is not None and query_vector is not None and dense_weight > 0:
        vectors = np.asarray(embed([u.scored for u in units]), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        q = np.asarray(query_vector, dtype=np.float32)
        dense = np.clip(vectors @ (q / (np.linalg.norm(q) + 1e-12)), 0.0, 1.0)
        scores = dense_weight * dense + (1 - dense_weight) * lexical
    else:
        scores = lexical
    match = float(scores.max())  # how well the best sentence answers, before the ranking priors below
    scores = scores + np.array([rank_weight / (1 + u.rank) for u in units], dtype=np.float32)
    best = float(scores.max())
    if same_chunk_bonus:
        # Answers read best as one passage: the best sentence's neighbours in its own chunk come first.
        home = units[int(scores.argmax())].number
        scores = scores + np.array([same_chunk_bonus if u.number == home else 0.0 for u in units], dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    chosen = [int(order[0])]
    used = len(units[order[0]].text)
    for i in order[1:]:
        if len(chosen) >= max_quotes or scores[i] < keep_ratio * (best + same_chunk_bonus):
            break
        if used + len(units[i].text) > max_chars:
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
