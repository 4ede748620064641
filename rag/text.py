"""The one sentence splitter and word normaliser that answering, checking, the UI and evaluation share.

Quoting, the answer checker, the UI's highlights and eval's groundedness must agree on what a sentence and a
content word are, or the numbers a user sees would differ from the numbers the benchmark reports.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

# Sentence ends: ., !, ?, or the CJK full stop (possibly repeated, possibly followed by a closing quote or
# bracket), then whitespace, then something that can start a sentence. "3.5" and "e.g.," never match because no
# space + capital follows the dot.
_SENTENCE_END = re.compile(r"""(?:[.!?]+["')\]]*\s+(?=["'(\[]?[A-Z0-9\u00C0-\u024F])|[。！？]\s*)""")
# Words whose trailing dot is not a sentence end even before a capital. Dotted abbreviations ("e.g.", "U.S.") and
# single-letter initials are recognised by shape, so they are not listed.
_ABBREVIATIONS_TEXT = (
    "mr mrs ms dr prof sr jr st mt vs etc fig figs vol approx inc ltd co corp dept est gen gov sen rep "
    "art sec ch para p pp jan feb mar apr jun jul aug sep sept oct nov dec"
)
_ABBREVIATIONS = frozenset(_ABBREVIATIONS_TEXT.split())
_LAST_WORD = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
# A run of text with no sentence end (a 5,000-character line, a list of numbers) is cut near this many characters,
# at a clause boundary or a space, so every sentence stays something a person can read and a model can embed.
MAX_SENTENCE_CHARS = 400
_SOFT_BREAK = re.compile(r"[;:,]\s+|\s+[-–—]\s+|\s+")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A small English stopword list in normalised form (apostrophes removed as normalize_answer does: "don't" -> "dont").
# Articles are absent because normalisation already drops them. Kept short on purpose: negations such as "not" and
# "no" stay content words, since an answer that flips a negation is not supported by the passage.
_STOPWORDS_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom whose this that these those am
    is are was were be been being have has had having do does did doing would should could can will shall may
    might must and but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here there when
    where why how all any both each few more most other some such only own same so than too very just also im
    ive id youre youve youd hes shes theyre theyve wed dont doesnt didnt isnt arent wasnt werent hasnt havent
    hadnt wont wouldnt cant couldnt shouldnt
    """
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        word = _LAST_WORD.search(text[cursor : match.start() + 1])
        if word and (len(word.group(1)) == 1 or "." in word.group(1) or word.group(1).lower() in _ABBREVIATIONS):
            continue
        spans.append((cursor, match.end()))
        cursor = match.end()
    spans.append((cursor, end))
    return spans


def _cut_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut a run longer than MAX_SENTENCE_CHARS at the last clause break or space before the limit."""
    out: list[tuple[int, int]] = []
    while end - start > MAX_SENTENCE_CHARS:
        limit = start + MAX_SENTENCE_CHARS
        cut = None
        for m in _SOFT_BREAK.finditer(text, start + MAX_SENTENCE_CHARS // 2, limit):
            cut = m.end()
        cut = cut or limit
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, stripped of surrounding whitespace, in order.

    Breaks at . ! ? followed by a capital or digit, at CJK full stops and at line breaks. A dot after a common
    abbreviation ("Dr.", "vs."), a dotted one ("e.g.", "U.S.") or a single-letter initial ("J. K. Rowling") does
    not end a sentence. A run with no boundary is cut near MAX_SENTENCE_CHARS at a clause break or space.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        line_end = pos + len(line)
        for a, b in _line_spans(text, pos, line_end):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if a < b:
                spans.extend(_cut_long(text, a, b))
        pos = line_end + 1
    return spans


def sentence_split(text: str) -> list[str]:
    """The sentences of `text` (see sentence_spans)."""
    return [text[a:b].strip() for a, b in sentence_spans(text) if text[a:b].strip()]


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    """Normalised word tokens (normalize_answer, split on whitespace)."""
    return normalize_answer(text).split()


def content_tokens(text: str) -> set[str]:
    """Distinct normalised tokens that are not stopwords."""
    return {token for token in tokens(text) if token not in STOPWORDS}


def lexical_support(sentence: str, passages: Sequence[str]) -> float:
    """Share of the sentence's distinct content tokens found in the single passage that contains the most of them.

    Tokens are normalised and stopwords dropped. The best single passage, not the union of all, because a claim
    stitched together from words scattered over unrelated passages is not supported by any of them. A sentence
    with no content token ("Yes.") claims nothing checkable and scores 1.0; with no passages, 0.0.
    """
    wanted = content_tokens(sentence)
    if not wanted:
        return 1.0
    best = max((len(wanted & set(tokens(passage))) for passage in passages), default=0)
    return best / len(wanted)
