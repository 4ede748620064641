"""Is a sentence supported by its sources? Numbers, names and words checked against the text of the cited chunks.

One implementation for the serving checker (`answer.verify`) and the eval harness's groundedness, so the numbers a
user sees in the app are the numbers a benchmark reports. The checks are deliberately literal: a number must appear
in a source with the same value (28 = "twenty-eight" = "28.0"; "$1,577 million" = "1,577" in a table "in millions" =
"1.6 billion" rounded), a name (a capitalised word inside a sentence) must appear in a source, and most of the
sentence's content words must come from one source sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.citations import CITATION
from rag.injection import unsupported_links
from rag.text import STOPWORDS, content_tokens, sentence_spans, tokens
from rag.types import SentenceSupport as SentenceSupport

_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 1e2, "thousand": 1e3, "million": 1e6, "mn": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9,
           "b": 1e9, "trillion": 1e12, "k": 1e3}  # fmt: skip
_WORD_NUMBER = re.compile(
    r"\b(?:" + "|".join(sorted(_SMALL, key=len, reverse=True)) + r")(?:[- ](?:one|two|three|four|five|six|seven|"
    r"eight|nine))?\b",
    re.I,
)
# 1,577 / 1.6 / 28 / 12.5% / (1,234) / 2023; an optional scale word right after ("1.6 billion", "$3bn").
_DIGITS = re.compile(
    r"(?<![\w.])\(?[$€£¥]?\s?(\d{1,3}(?:[,\u202f ]\d{3})+|\d+)(?:\.(\d+))?\)?\s?"
    r"(%|percent\b|per cent\b|(?:hundred|thousand|million|billion|trillion|mn|bn|k|m|b)\b)?",
    re.I,
)
# A capitalised word that does not start its sentence: a name, a place, an organisation, a product.
_NAME = re.compile(r"(?<=[\w,;:)\]] )([A-Z][a-zA-Z\u00C0-\u024F'&.-]{1,}(?:\s+[A-Z][a-zA-Z\u00C0-\u024F'&.-]+)*)")
# Citation markers as the answer stream writes them (rag/citations.py), with the space before them.
_MARKER = re.compile(rf"\s*(?:{CITATION.pattern})", re.I)
# Titles and sentence-internal capitals that are not names of anything a source must contain.
_NOT_NAMES_TEXT = (
    "I I'm I've According Answer Based The This That These Those It Its In On At As For From To By With Yes No "
    "Note However Also And But Or If When Where Which Who What Why How Source Sources Document Documents"
)
_NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())
_FIRST_WORD = re.compile(r"^[\W_]*([A-Z][a-zA-Z\u00C0-\u024F'\u2019&.-]*)")
# Words that open English sentences without being names (stopwords, -ly and -ing forms are excluded by rule).
_OPENERS_TEXT = (
    "Even Due Although Though Despite Since Unlike Like Many Several Every Overall Additionally Furthermore Moreover "
    "Therefore Thus Hence Instead Meanwhile Finally First Firstly Second Secondly Third Lastly Today Currently Please "
    "Sure Here There Yes No Question Context Passage Summary Example"
)
_OPENERS = frozenset(_OPENERS_TEXT.split())
# Negation cues in normalised form (apostrophes dropped: "isn't" -> "isnt"; tokenised text's "is n't" -> "is nt").
_NEGATIONS_TEXT = (
    "not no never cannot nor neither none nobody nothing nowhere nt dont doesnt didnt isnt arent wasnt werent "
    "hasnt havent hadnt wont wouldnt cant couldnt shouldnt"
)
_NEGATIONS = frozenset(_NEGATIONS_TEXT.split())
# A negation governs the next few content words ("is not a distinct breed" -> distinct, breed).
_NEGATION_REACH = 2
# A list number or letter on its own ("1.", "b)", "iv."): the splitter makes it a sentence, but it claims nothing.
_LIST_MARKER = re.compile(r"^\(?(?:\d{1,3}|[a-zA-Z]|[ivxlc]+)[.)]$")


@dataclass(frozen=True)
class Quantity:
    """A number as written (`text`) and its value; `scaled` also applies a scale word ("1.6 billion" -> 1.6e9)."""

    text: str
    value: float
    scaled: float
    decimals: int


def _number(whole: str, frac: str | None, unit: str | None, text: str) -> Quantity:
    value = float(re.sub(r"[,\u202f ]", "", whole) + (f".{frac}" if frac else ""))
    scale = _SCALES.get((unit or "").lower(), 1.0)
    return Quantity(text.strip(), value, value * scale, len(frac or ""))


def quantities(text: str) -> list[Quantity]:
    """Every number in `text`, in digits or in words ("twenty-eight"), with its scale word when it has one."""
    out: list[Quantity] = []
    for m in _DIGITS.finditer(text):
        out.append(_number(m.group(1), m.group(2), m.group(3), m.group(0)))
    for m in _WORD_NUMBER.finditer(text):
        if m.group(0).lower() in ("one", "zero"):
            continue  # "one of the", "zero in on": too often not a quantity to demand a source for it
        parts = re.split(r"[- ]", m.group(0).lower())
        value = float(sum(_SMALL.get(p, 0) for p in parts))
        tail = text[m.end() : m.end() + 12].lower().split()
        scale = _SCALES.get(tail[0], 1.0) if tail and tail[0] in ("hundred", "thousand", "million", "billion") else 1.0
        out.append(Quantity(m.group(0), value, value * scale, 0))
    return out


def _matches(claim: Quantity, source: Quantity) -> bool:
    """Same value at the claim's precision, with or without the scale word ("$1,577 million" = "1,577" in a table
    stated in millions; "1.6 billion" = "1,577 million" rounded to the claim's one decimal)."""
    if claim.value in (source.value, source.scaled) or claim.scaled in (source.value, source.scaled):
        return True
    scale = claim.scaled / claim.value if claim.value else 1.0
    for candidate in (source.scaled, source.value):
        # Rounding only counts when the source is more precise than the claim, never the reverse.
        rounds_to = round(candidate / scale, claim.decimals) == claim.value and candidate != 0
        if rounds_to and (source.decimals > claim.decimals or scale != 1.0):
            return True
    return False


def unsupported_numbers(sentence: str, sources: Sequence[str]) -> list[str]:
    """Numbers in `sentence` that no source states (citation markers are not numbers)."""
    claims = quantities(_MARKER.sub(" ", sentence))
    if not claims:
        return []
    known = [q for s in sources for q in quantities(s)]
    return [c.text for c in claims if not any(_matches(c, k) for k in known)]


def _fold(text: str) -> str:
    """Accents dropped ("Khloé" -> "Khloe"), so a name matches however a writer typed it."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _name_parts(word: str) -> list[str]:
    """A name word as normalised parts: the possessive dropped ("Gomez's" -> gomez, as tokenised text writes
    "Gomez 's"), hyphenated parts apart ("Jay-Z" -> jay, z, as in "Jay - Z"), accents folded."""
    word = re.sub(r"['\u2019]s?$", "", _fold(word).strip(".'\u2019"))
    return [t for part in re.split(r"[-\u2013]", word) for t in tokens(part)]


def _known_words(sources: Sequence[str]) -> set[str]:
    """The sources' normalised words, accents folded, hyphenated words also in parts ("Pre-Greek" -> pre, greek),
    each also without a possessive or plural s ("Funimation's", "eyes")."""
    text = _fold(" ".join(sources))
    known: set[str] = set()
    for t in tokens(text) + tokens(re.sub(r"[-\u2013]", " ", text)):
        bare = re.sub(r"\u2019s$", "", t)
        known.update((t, bare, bare[:-1] if bare.endswith("s") else bare))
    return known


def _opening_name(sentence: str) -> str | None:
    """The sentence's first word when it may be a name: capitalised, and not a word that any sentence could open
    with (a stopword, an article, an -ly adverb or -ing form, a discourse word such as "However" or "Overall")."""
    m = _FIRST_WORD.match(sentence)
    if not m:
        return None
    word = m.group(1).rstrip(".,;:")
    lower = word.lower()
    if word in _NOT_NAMES or word in _OPENERS or (len(word) > 4 and lower.endswith(("ly", "ing"))):
        return None
    parts = _name_parts(word)
    return word if parts and parts[0] not in STOPWORDS else None


def unsupported_names(sentence: str, sources: Sequence[str]) -> list[str]:
    """Capitalised words of `sentence` (names, places, organisations) that appear in no source.

    Inside a sentence a capital marks a name; the sentence's first word counts too unless it is a common opener
    (see _opening_name), so "Hamilton later joined the band" is checked like "later, Hamilton joined the band".
    """
    plain = _MARKER.sub("", sentence)
    known = _known_words(sources)
    candidates = [] if (first := _opening_name(plain)) is None else [first]
    if first is not None and any(f"{first.lower()}{end}" in known for end in ("", "s", "d", "ed", "ing")):
        candidates = []  # an opening word the sources use in lower case ("File expenses" / "filed"): a verb, not a name
    for m in _NAME.finditer(plain):
        candidates.extend(w for w in m.group(1).split() if w.strip(".'&-") and w not in _NOT_NAMES)
    missing = []
    for w in candidates:
        parts = [p for p in _name_parts(w) if p not in STOPWORDS]
        if any(p not in known for p in parts):
            missing.append(w.strip(".'"))
    return missing


def negations(words: Sequence[str]) -> tuple[list[list[str]], set[str]]:
    """The negations in normalised `words`, each as the content words it governs, and the content words that no
    negation governs."""
    scopes: list[list[str]] = []
    plain: set[str] = set()
    reach = 0
    for w in words:
        if w in _NEGATIONS:
            scopes.append([])
            reach = _NEGATION_REACH
        elif w not in STOPWORDS:
            if reach:
                scopes[-1].append(w)
                reach -= 1
            else:
                plain.add(w)
    return [scope for scope in scopes if scope], plain


def flipped_negation(sentence: str, source_sentence: str) -> str | None:
    """Why `sentence` reverses the polarity of `source_sentence` (the source sentence it paraphrases), or None.

    A negation in the claim whose governed words the source states plainly and never negates ("is not a distinct
    breed" against "is a distinct breed"), or the reverse. Word overlap cannot see this (one "not" among ten content
    words), nor can the embedding (a sentence and its negation embed close together). All governed words must match,
    so "was not passed to raise revenue, but to regulate trade" still supports "was passed to regulate trade".
    """
    claim_scopes, claim_plain = negations(tokens(sentence))
    source_scopes, source_plain = negations(tokens(source_sentence))
    claim_negated = {w for scope in claim_scopes for w in scope}
    source_negated = {w for scope in source_scopes for w in scope}
    for scope in claim_scopes:
        if set(scope) <= source_plain and not set(scope) & source_negated:
            return f"it negates what the source states ({' '.join(scope)})"
    for scope in source_scopes:
        if set(scope) <= claim_plain and not set(scope) & claim_negated:
            return f"the source negates it ({' '.join(scope)})"
    return None


Embed = Callable[[list[str]], "np.ndarray"]


def check_answer(
    answer: str,
    sources: dict[int, str],
    *,
    embed: Embed | None = None,
    min_score: float = 0.5,
) -> tuple[SentenceSupport, ...]:
    """Check every sentence of `answer` against `sources` (chunk number -> chunk text).

    A sentence that cites chunks ([n]) is checked against those; one that cites none, against every source. It is
    supported when every number and name in it appears in a checked source and its best source sentence scores at
    least `min_score`: the share of its content words found there, raised by the embedding cosine when `embed` is
    given (the mean of the two), and it does not reverse a negation of that sentence. A question or a lead-in ending
    in a colon needs no score (it states nothing); a list number alone ("1.") is not checked. A cited chunk that
    supports nothing of its sentence is a wrong citation.
    """
    results: list[SentenceSupport] = []
    # Each source sentence tokenised once, not once per answer sentence.
    source_sentences = {
        n: [(a, b, set(tokens(text[a:b]))) for a, b in sentence_spans(text)] for n, text in sources.items()
    }
    keys = [(n, i) for n, ss in source_sentences.items() for i in range(len(ss))]
    column = {key: c for c, key in enumerate(keys)}  # a source sentence's column in the similarity matrix
    pieces = []
    for a, b in sentence_spans(answer):
        raw = answer[a:b]
        plain = _MARKER.sub("", raw).strip()
        if not plain or not re.search(r"\w", plain):
            continue
        marked = (int(n) for m in CITATION.finditer(raw) for n in re.findall(r"\d+", m.group(1)))
        cited = tuple(dict.fromkeys(n for n in marked if n in sources))
        pieces.append((a, b, raw, plain, cited))
    sims: np.ndarray | None = None
    if embed is not None and pieces and column:
        flat = [sources[n][sa:sb] for n, ss in source_sentences.items() for sa, sb, _ in ss]
        vectors = np.asarray(embed([p[3] for p in pieces] + flat), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        sims = vectors[: len(pieces)] @ vectors[len(pieces) :].T
    for pi, (a, b, raw, plain, cited) in enumerate(pieces):
        pool = list(cited) or list(sources)
        texts = [sources[n] for n in pool]
        wanted = content_tokens(plain)
        best: tuple[float, int | None, tuple[int, int] | None] = (0.0, None, None)
        per_source: dict[int, float] = {}
        for n in pool:
            for i, (sa, sb, words) in enumerate(source_sentences[n]):
                score = len(wanted & words) / len(wanted) if wanted else 1.0
                if sims is not None:  # the mean of word overlap and embedding cosine
                    score = (score + max(0.0, float(sims[pi, column[(n, i)]]))) / 2
                per_source[n] = max(per_source.get(n, 0.0), score)
                if score > best[0]:
                    best = (score, n, (sa, sb))
        if _LIST_MARKER.match(plain):
            results.append(SentenceSupport(raw.strip(), a, b, True, 1.0, None, None, cited, (), (), (), None))
            continue
        numbers = tuple(unsupported_numbers(plain, texts))
        names = tuple(unsupported_names(plain, texts))
        wrong = tuple(n for n in cited if per_source.get(n, 0.0) < min_score / 2)
        reasons = []
        if best[1] is not None and best[2] is not None:
            flip = flipped_negation(plain, sources[best[1]][best[2][0] : best[2][1]])
            if flip:
                reasons.append(flip)
        if numbers:
            reasons.append(", ".join(numbers) + (" is" if len(numbers) == 1 else " are") + " in no source")
        if names:
            reasons.append(", ".join(names) + (" is" if len(names) == 1 else " are") + " in no source")
        # A link no source contains is how an injected document would exfiltrate the question (rag/injection.py).
        for link in unsupported_links(plain, texts):
            reasons.append(f"the link {link} is in no source")
        # A question or a lead-in ("The differences are:") states nothing a source could say; its names and
        # numbers are still checked.
        if best[0] < min_score and not plain.rstrip("\"')] ").endswith(("?", ":")):
            reasons.append("no source sentence says this" if cited or not sources else "no source says this")
        supported = not reasons
        results.append(
            SentenceSupport(
                raw.strip(), a, b, supported, round(best[0], 4), best[1], best[2], cited, numbers, names, wrong,
                "; ".join(reasons) or None,
            )
        )  # fmt: skip
    return tuple(results)
