"""A query's document constraint, inferred without a model from the collection's own document-card values.

"What was AMCOR's adjusted EBITDA for FY2023?" names an organisation and a year that the
collection's cards hold; retrieval can then look in those documents first. Only values
that exist in the collection are matched, and a combination no document has is relaxed
(and said so), so a wrong guess narrows the search to nothing only in `filter` mode.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rag.store.base import Condition, Filter, VectorStore

# Payload fields a document card writes (see ingest/cards.py); read from each document's first chunk.
CARD_FIELDS = ("organisation", "year", "quarter", "form", "doc_type")
_YEAR = r"(?:19[5-9]\d|20\d\d)"
_QUARTER_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_QUARTER = re.compile(
    r"\b(?:q([1-4])|([1-4])q|(first|second|third|fourth|1st|2nd|3rd|4th)[\s-]+quarter)(?=\b|\d|fy)", re.IGNORECASE
)
_YEARS = re.compile(rf"(?:\b|fy|q[1-4]|[1-4]q)({_YEAR})\b|\b(?:fy|fiscal(?:\s+year)?)\s*'?(\d\d)\b", re.IGNORECASE)
# Leading words too common to stand for an organisation on their own ("Best" of "Best Buy").
_COMMON_FIRST_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "best",
        "general",
        "american",
        "united",
        "first",
        "national",
        "international",
        "global",
        "new",
        "bank",
        "royal",
        "standard",
        "capital",
        "great",
        "southern",
        "northern",
        "western",
        "eastern",
        "pacific",
        "atlantic",
        "central",
        "public",
        "home",
        "health",
        "energy",
        "financial",
        "data",
        "digital",
        "smart",
        "open",
        "one",
        "world",
        "city",
        "state",
        "group",
        "company",
    ]
)
# A capitalised name followed by 's: "Apple's" names an organisation even when no card holds it.
_POSSESSIVE_NAME = re.compile(r"\b([A-Z][\w&.-]*(?:\s+[A-Z][\w&.-]*){0,2})['’]s\b")


def _normalise(text: str) -> str:
    text = re.sub(r"['’]s\b", "", text.lower()).replace("&", " ")
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text).split()) + " "


_LEGAL = frozenset(
    [
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "company",
        "co",
        "plc",
        "ltd",
        "limited",
        "llc",
        "llp",
        "lp",
        "gmbh",
        "ag",
        "sa",
        "nv",
        "bv",
        "se",
        "spa",
        "ab",
        "asa",
        "oyj",
        "kk",
        "pty",
        "group",
        "holdings",
    ]
)


def organisation_key(name: str) -> str:
    """Lowercase words without punctuation or trailing legal forms: "Best Buy Co., Inc." -> "best buy"."""
    words = _normalise(name).split()
    while words and words[-1] in _LEGAL:
        words.pop()
    return " ".join(words)


def merge_spellings(orgs: dict[str, set[str]], documents_of: Counter[str]) -> dict[str, tuple[str, ...]]:
    """One issuer whose name a PDF's letter spacing split ("MGM R ESORTS" on one cover, "MGM Resorts" on the others)
    is one organisation: keys equal without spaces merge into the one most documents carry."""
    merged: dict[str, set[str]] = {}
    for key in sorted(orgs, key=lambda k: (-documents_of[k], k)):
        home = next((m for m in merged if m.replace(" ", "") == key.replace(" ", "")), key)
        merged.setdefault(home, set()).update(orgs[key])
    return {k: tuple(sorted(v)) for k, v in merged.items()}


@dataclass(frozen=True)
class Facets:
    """The card values of a collection: organisation key -> its spellings, and the years, quarters, forms, types."""

    organisations: dict[str, tuple[str, ...]]
    years: frozenset[int]
    quarters: frozenset[int]
    forms: frozenset[str]
    doc_types: frozenset[str]
    documents: int

    @property
    def empty(self) -> bool:
        return not (self.organisations or self.years or self.quarters or self.forms or self.doc_types)


def collect_facets(store: VectorStore, collection: str) -> Facets:
    """Card values of every document, read from its first chunk (one point per document)."""
    orgs: dict[str, set[str]] = {}
    documents_of: Counter[str] = Counter()
    years: set[int] = set()
    quarters: set[int] = set()
    forms: set[str] = set()
    types: set[str] = set()
    documents = 0
    first = Filter((Condition("chunk_index", value=0),))
    for _, payload in store.scroll(collection, first, fields=list(CARD_FIELDS)):
        documents += 1
        org = payload.get("organisation")
        key = organisation_key(org) if isinstance(org, str) else ""
        if key:
            orgs.setdefault(key, set()).add(str(org))
            documents_of[key] += 1
        year = payload.get("year")
        for y in year if isinstance(year, list) else [year]:
            if isinstance(y, int):
                years.add(y)
        if isinstance(payload.get("quarter"), int):
            quarters.add(int(payload["quarter"]))
        if isinstance(payload.get("form"), str):
            forms.add(payload["form"])
        if isinstance(payload.get("doc_type"), str):
            types.add(payload["doc_type"])
    return Facets(
        merge_spellings(orgs, documents_of),
        frozenset(years),
        frozenset(quarters),
        frozenset(forms),
        frozenset(types),
        documents,
    )


@dataclass(frozen=True)
class InferredConstraint:
    """The document constraint a query implies; `filter` is None when nothing usable was named.

    `reasons` say which words matched which card values; `notes` say what was named but not used.
    """

    filter: Filter | None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.filter is None:
            head = "no document constraint inferred"
        else:
            conds = []
            for c in self.filter.conditions:
                values = c.any_of if c.any_of is not None else (c.value,)
                conds.append(f"{c.field}={'|'.join(str(v) for v in values)}")
            head = "inferred document constraint: " + ", ".join(conds)
        details = list(self.reasons) + list(self.notes)
        return head + (f" ({'; '.join(details)})" if details else "")

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.describe(), "reasons": list(self.reasons), "notes": list(self.notes)}


def _aliases(key: str, all_keys: list[str], spellings: tuple[str, ...] = ()) -> list[str]:
    """Ways a query names an organisation: its key, the key without spaces, a distinctive first word, and for a
    name joined by '&' ("Johnson & Johnson", "Procter & Gamble") its initials as written: "j&j", "jnj", "jj"."""
    out = [key]
    if any(re.search(r"\w\s*&\s*\w", sp) for sp in spellings) and len(key.split()) == 2:
        a, b = (w[0] for w in key.split())
        out += [f"{a} {b}", f"{a}n{b}", f"{a}{b}"]
    if " " in key:
        out.append(key.replace(" ", ""))
        firsts = [k.split()[0] for k in all_keys]
        first = key.split()[0]
        if len(first) >= 3 and first not in _COMMON_FIRST_WORDS and firsts.count(first) == 1:
            out.append(first)
    return out


_QUESTION_WORDS = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "did",
        "does",
        "do",
        "is",
        "was",
        "were",
        "are",
        "has",
        "have",
        "had",
        "can",
        "could",
        "will",
        "would",
        "should",
        "in",
        "as",
        "at",
        "for",
        "of",
        "by",
        "among",
        "based",
    ]
)


def _strip_question_words(name: str) -> str:
    """ "Did JnJ" -> "JnJ": a capitalised question word before a name is not part of it."""
    words = name.split()
    while words and words[0].lower() in _QUESTION_WORDS:
        words.pop(0)
    return " ".join(words)


def _named_years(query: str) -> list[int]:
    years = []
    for m in _YEARS.finditer(query):
        years.append(int(m.group(1)) if m.group(1) else 2000 + int(m.group(2)))
    return sorted(set(years))


def _named_quarters(query: str) -> list[int]:
    out = []
    for m in _QUARTER.finditer(query):
        out.append(int(m.group(1) or m.group(2) or _QUARTER_WORDS[m.group(3).lower()]))
    return sorted(set(out))


def infer_constraint(query: str, facets: Facets, store: VectorStore, collection: str) -> InferredConstraint:
    """Match the query's words against the collection's card values; keep each condition only if documents remain."""
    if facets.empty:
        # A BEIR/JSONL corpus, or a collection ingested before document cards existed (re-ingest to add them).
        return InferredConstraint(None, notes=("no document of this collection has an organisation, year or form",))
    norm = _normalise(query)
    wanted: list[tuple[Condition, str]] = []
    notes: list[str] = []

    keys = list(facets.organisations)
    matched = []
    for key in keys:
        for alias in _aliases(key, keys, facets.organisations[key]):
            if f" {alias} " in norm:
                matched.append((key, alias))
                break
    if matched:
        spellings = tuple(s for key, _ in matched for s in facets.organisations[key])
        said = ", ".join(f"'{alias}'" for _, alias in matched)
        wanted.append(
            (Condition("organisation", any_of=spellings), f"{said} names organisation {' / '.join(spellings)}")
        )
    else:
        unknown = [
            name
            for m in _POSSESSIVE_NAME.finditer(query)
            if (name := _strip_question_words(m.group(1))) and organisation_key(name) not in keys
        ]
        if unknown and facets.organisations:
            notes.append(f"'{unknown[0]}' is no organisation of this collection's documents: not used")

    years = _named_years(query)
    if years:
        known = [y for y in years if y in facets.years]
        if known:
            wanted.append((Condition("year", any_of=tuple(known)), f"year {', '.join(map(str, known))} named"))
        if len(known) < len(years):
            absent = [str(y) for y in years if y not in facets.years]
            notes.append(f"year {', '.join(absent)} named but no document is about it")

    quarters = _named_quarters(query)
    if quarters and facets.quarters:
        known_q = [q for q in quarters if q in facets.quarters]
        if known_q:
            wanted.append((Condition("quarter", any_of=tuple(known_q)), f"Q{', Q'.join(map(str, known_q))} named"))

    for form in sorted(facets.forms):
        code = form.lower().removeprefix("form ")  # "10-k": written "10-K", "10K" or "10 K" in queries
        written = {code.replace("-", ""), code.replace("-", " ")}
        if len(code) >= 2 and any(f" {w} " in norm for w in written):
            wanted.append((Condition("form", value=form), f"'{form}' named"))
            break

    if not wanted:
        return InferredConstraint(None, notes=tuple(notes) or ("the query names no card value of this collection",))
    kept: list[Condition] = []
    reasons: list[str] = []
    for condition, reason in wanted:
        trial = Filter((*kept, condition))
        if store.count(collection, trial) > 0:
            kept.append(condition)
            reasons.append(reason)
        else:
            notes.append(f"{reason}, but no document has it together with the rest: not used")
    return InferredConstraint(Filter(tuple(kept)) if kept else None, tuple(reasons), tuple(notes))
