"""Is a page's text layer readable? A cheap check that sends garbled text layers to OCR.

A PDF can carry a text layer that is not the text on the page: a font whose ToUnicode map is wrong or missing
(every letter shifted: "Wkh srolf|" for "The policy"), a bad OCR layer under a scan, glyphs without a Unicode
value ("(cid:12)", U+FFFD, private-use code points). The page still looks right, so nothing else notices; the
chunks are nonsense. Two signals, both language-agnostic enough for Latin, Cyrillic, Greek and CJK text:

- the share of whitespace-separated tokens that look like words or numbers (letters with at most internal
  hyphens or apostrophes, or digits with separators, with ordinary punctuation around): ~0.9 on prose and
  statements, ~0.1 on the shifted layer;
- for text in Latin letters, the share of vowels among letters: 0.35-0.45 in English, German, French, Spanish,
  Italian and Dutch, about 0.15 once letters are shifted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EDGE = "\"'([{‘“«¿¡*•"
_TAIL = "\"')]}’”».,;:!?%*"
# Tokens of table furniture and placeholders ("|" between Markdown cells, "---" rules, "—" for nil, a lone "$")
# say nothing about whether letters are mapped right: they are left out of the count. Counted, the pipes of a
# statement with many empty cells made a page look garbled (Amazon's 10-K equity statement: 45% plain).
_NEUTRAL = re.compile(r"^[|:\-—–_$€£¥%*•·]+$")
_WORD = re.compile(r"^[^\W\d_]+(?:[-'’.][^\W\d_]+)*\.?$")
_NUMBER = re.compile(r"^[$€£¥]?[-+]?\(?\d[\d.,:/%-]*\)?%?$")
_BROKEN = re.compile(r"\(cid:\d+\)|[\ufffd\ue000-\uf8ff]")
_LETTER = re.compile(r"[^\W\d_]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_ASCII_VOWEL = re.compile(r"[aeiouyAEIOUY]")
MIN_TOKENS = 20  # below this a page has too little text to judge (a title page, a figure caption)
MIN_PLAIN_SHARE = 0.5
MIN_VOWEL_SHARE = 0.25


@dataclass(frozen=True)
class TextQuality:
    tokens: int
    plain_share: float  # tokens that look like words or numbers
    vowel_share: float | None  # vowels among ASCII letters, when most letters are ASCII
    broken: int  # (cid:N) tokens, U+FFFD and private-use characters

    @property
    def score(self) -> float:
        """Higher is more readable; used to choose between a text layer and its OCR."""
        vowels = 1.0 if self.vowel_share is None else min(1.0, self.vowel_share / 0.35)
        return self.plain_share * vowels / (1.0 + self.broken / max(1, self.tokens))

    def garbled(self) -> str | None:
        """Why the text layer looks garbled, or None (also when there is too little text to judge)."""
        if self.broken > max(3, self.tokens // 10):
            return f"{self.broken} unmapped glyphs"
        if self.vowel_share is not None and self.vowel_share < MIN_VOWEL_SHARE:  # judged on >= 60 letters
            return f"only {self.vowel_share:.0%} of its letters are vowels"
        if self.tokens >= MIN_TOKENS and self.plain_share < MIN_PLAIN_SHARE:
            return f"only {self.plain_share:.0%} of its tokens look like words or numbers"
        return None


def _plain(token: str) -> bool:
    core = token.lstrip(_EDGE).rstrip(_TAIL)
    return not core or bool(_WORD.match(core) or _NUMBER.match(core))


def text_quality(text: str) -> TextQuality:
    tokens = [t for t in text.split() if not _NEUTRAL.match(t)]
    broken = len(_BROKEN.findall(text))
    plain = sum(_plain(t) for t in tokens)
    letters = len(_LETTER.findall(text))
    ascii_letters = len(_ASCII_LETTER.findall(text))
    vowel_share = None
    if ascii_letters >= 60 and ascii_letters >= 0.7 * letters:
        vowel_share = len(_ASCII_VOWEL.findall(text)) / ascii_letters
    return TextQuality(len(tokens), plain / len(tokens) if tokens else 1.0, vowel_share, broken)
