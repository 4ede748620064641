"""Questions that ask for an amount, and the chunks that print amounts.

"What was 3M's FY2018 capital expenditure in USD millions?" is answered by a row of figures, not by the MD&A
paragraph that talks about capital spending in words; "how many days of paid leave" by the sentence with the number.
When the query asks for an amount, retrieval ranks chunks that hold amounts higher (`retrieval.amount_prior`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.store.base import ScoredPoint

# A question asking for a quantity: how much / many, totals, money, units, ratios and rates.
_ASKS = re.compile(
    r"\b(?:how\s+(?:much|many|long|large|big)|amount|total|number\s+of|value\s+of|figure|usd|eur|gbp|dollars?|"
    r"euros?|pounds|millions?|billions?|thousands?|percent(?:age)?|ratio|rate|margin|growth|average|sum)\b|[$%€£]",
    re.IGNORECASE,
)
# An amount as documents print it: 1,577 / (1,373) / $5.4 / 12.5% / 0.67 / 28; a year (1900-2099) is a date, not one.
_AMOUNT = re.compile(
    r"(?<![\w.,])(?:[$€£]\s?)?\(?\d{1,3}(?:,\d{3})+(?:\.\d+)?\)?"
    r"|(?<![\w.,])[$€£]\s?\d+(?:\.\d+)?"
    r"|(?<![\w.,])\d+(?:\.\d+)?\s?%"
    r"|(?<![\w.,])\d+\.\d+(?![\w.,])"
    r"|(?<![\w.,/-])(?!(?:19|20)\d\d(?!\d))\d+(?![\w.,/-])"
)
# Amounts at which a chunk counts as fully "holding figures": a statement row has two or three, a table many.
_SATURATION = 5


def asks_for_amount(query: str) -> bool:
    return _ASKS.search(query) is not None


def amount_count(text: str) -> int:
    return len(_AMOUNT.findall(text))


def favour_amounts(points: Sequence[ScoredPoint], prior: float) -> list[tuple[ScoredPoint, float, float]]:
    """The points re-ordered by their fused score scaled to 0-1 over this list plus `prior` x the share of amounts
    they hold (saturating at five), each as (point, that score, its amount bonus). The fused scores' scale differs
    per fusion and mode, hence the scaling."""
    if not points:
        return []
    scores = [p.score for p in points]
    low, span = min(scores), (max(scores) - min(scores)) or 1.0
    ranked = []
    for p in points:
        bonus = prior * min(1.0, amount_count(str(p.payload.get("text", ""))) / _SATURATION)
        ranked.append((p, (p.score - low) / span + bonus, bonus))
    return sorted(ranked, key=lambda r: -r[1])
