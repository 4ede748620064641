"""Amount questions favour chunks that print amounts (rag/amounts.py)."""

from __future__ import annotations

from rag.amounts import amount_count, asks_for_amount, favour_amounts
from rag.store.base import ScoredPoint


def test_questions_that_ask_for_an_amount() -> None:
    for q in (
        "What is the FY2018 capital expenditure amount (in USD millions) for 3M?",
        "How many days of paid leave do employees get?",
        "What was the gross margin in 2022?",
        "Revenue growth between FY2019 and FY2020 in %",
    ):
        assert asks_for_amount(q), q
    for q in ("Who is the CEO of Amcor?", "What industry does AMCOR primarily operate in?", "minimum password"):
        assert not asks_for_amount(q), q


def test_amounts_as_statements_print_them_and_years_are_not_amounts() -> None:
    assert amount_count("| Purchases of PP&E | (1,577) | (1,373) | $5.4 billion | 12.5% | 0.67 | 28 days") == 6
    assert amount_count("As of December 31, 2018 and 2017, see Note 16") == 1  # 16: not the years, not "31,"
    assert amount_count("We have audited the consolidated balance sheets as of June 30, 2023 and 2022") == 0


def test_a_chunk_of_figures_overtakes_prose_that_ranked_just_above_it() -> None:
    prose = ScoredPoint("a", 1.90, {"text": "Capital spending supports growth across our businesses."})
    row = ScoredPoint(
        "b", 1.85, {"text": "| Purchases of property, plant and equipment | (1,577) | (1,373) | (1,420) |"}
    )
    far = ScoredPoint("c", 1.20, {"text": "| Total | 1 | 2 | 3 | 4 | 5 |"})
    ranked = favour_amounts([prose, row, far], prior=0.3)
    assert [p.id for p, _, _ in ranked] == ["b", "a", "c"]
    scores = [s for _, s, _ in ranked]
    assert scores == sorted(scores, reverse=True) and ranked[0][2] == 0.3 * 3 / 5
    assert [p.id for p, _, _ in favour_amounts([prose, row, far], prior=0.0)] == ["a", "b", "c"]
