"""Quoting the row a question means: glossary meanings, tables split over chunks, long questions (rag/extract.py).

Word matching only (no embedder), on rows as financial statements print them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag.extract import extract_answer
from rag.glossary import Glossary
from tests.conftest import SHARED_DATA, require

CASH_FLOWS = """| 3M Company and Subsidiaries Consolidated Statement of Cash Flows (Millions) | 2018 | 2017 |
| --- | --- | --- |
| Net cash provided by (used in) operating activities | 6,439 | 6,240 |
| Purchases of property, plant and equipment (PP&E) | (1,577) | (1,373) |
| Proceeds from sale of PP&E and other assets | 262 | 49 |"""

HEADER = "| Consolidated Balance Sheets (Dollars in millions) | MAY 31, 2019 | MAY 31, 2018 |\n| --- | --- | --- |\n"
FIRST_PIECE = HEADER + "| Retained earnings | 1,643 | 3,517 |\n| TOTAL ASSETS | $23,717 | $22,536 |"
LATER_PIECE = HEADER + "| Inventories | 5,622 | 5,261 |\n| Total current assets | 16,525 | 15,134 |"
# stanley-cups.csv as the CSV loader writes it: a title row above the rule, the column row under it
STANLEY_CUPS = (
    "| Stanley Cups | | |\n| --- | --- | --- |\n| Team | Location | Stanley Cups |\n"
    "| Blues | STL | 1 |\n| Flyers | PHI | 2 |\n| Maple Leafs | TOR | 13 |"
)


def _quote(query: str, chunks: list[tuple[int, str]], **kwargs: Any) -> str:
    expansion = Glossary.load(["finance"]).expand(query).matches
    return extract_answer(query, chunks, None, None, max_quotes=1, expansion=expansion, **kwargs).text


def test_a_glossary_term_finds_the_row_that_prints_its_meaning() -> None:
    # "capital expenditure" shares no word with "Purchases of property, plant and equipment".
    question = "What is the FY2018 capital expenditure amount for 3M?"
    assert "(1,577)" in _quote(question, [(1, CASH_FLOWS)])
    without = extract_answer(question, [(1, CASH_FLOWS)], None, None, max_quotes=1).text
    assert "(1,577)" not in without


def test_a_table_split_over_chunks_is_ranked_as_one_table() -> None:
    # The later piece of the same balance sheet ranked third; its row is the one the question names.
    chunks = [(1, FIRST_PIECE), (2, "Nike designs and sells athletic footwear."), (3, LATER_PIECE)]
    answer = _quote("How much total current assets did Nike have at the end of FY2019?", chunks)
    assert "| Total current assets | 16,525 | 15,134 | [3]" in answer
    assert answer.startswith("| Consolidated Balance Sheets")  # the header shown above the row


def test_rows_continued_without_their_header_are_still_quoted() -> None:
    continued = (
        "| Purchase of property, plant and equipment | (154) | | | | (144) | | | |\n"
        "| Movement in working capital | 493 | | | | 572 | | | |"
    )
    answer = _quote("What was the capex?", [(1, continued)])
    assert answer == "| Purchase of property, plant and equipment | (154) | | | | (144) | | | | [1]"


def test_a_long_question_still_picks_the_row_it_names() -> None:
    # Instructions that no candidate holds must not drown the words that single out the row.
    question = (
        "We need to calculate a financial metric by using information only provided within the balance sheet. "
        "Please answer the following question: what is the year end FY2019 total current assets (in USD millions)?"
    )
    assert "16,525" in _quote(question, [(1, FIRST_PIECE), (2, LATER_PIECE)])


PDFS = SHARED_DATA / "financebench" / "pdfs"
AMCOR = "AMCOR_2023Q4_EARNINGS.pdf"  # 14 pages; its cash-flow rows say "Purchase of property, plant and equipment"


@pytest.fixture(scope="module")
def amcor(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store

    settings = load_settings("test", [f"data_dir={tmp_path_factory.mktemp('amcor')}"])
    with build_store(settings) as store:
        report = ingest_paths([require(PDFS / AMCOR)], settings, store, embedder, collection="filings")
    assert report.files_failed == 0
    return settings


def test_capex_on_a_real_earnings_release_is_answered_from_the_cash_flow_rows(amcor: Any, embedder: Any) -> None:
    from rag.factory import build_pipeline, build_store

    question = "What were Amcor's capital expenditures in fiscal 2023?"
    with build_store(amcor) as store:
        answer = build_pipeline(amcor, store, "filings", embedder=embedder).ask(question)
        plain = amcor.model_copy(update={"retrieval": amcor.retrieval.model_copy(update={"glossaries": []})})
        before = build_pipeline(plain, store, "filings", embedder=embedder).ask(question)
    assert not answer.refused
    assert "Purchase of property, plant" in answer.text and "527" in answer.text  # the fiscal-year figure
    assert all(Path(c.source).name == AMCOR and 9 <= min(c.pages) <= 12 for c in answer.citations)
    assert "Purchase of property" not in before.text  # without the glossary: outlook prose, no figure


def test_rag_query_says_which_glossary_terms_it_searched(amcor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import main

    common = ["--config", "test", "--set", f"data_dir={amcor.data_dir}", "--collection", "filings"]
    assert main(["query", "Amcor capex in fiscal 2023", *common]) == 0
    out = capsys.readouterr().out
    assert "glossary: 'capex' -> purchases of property, plant and equipment" in out
    assert "retrieval.glossaries=['finance']" in out
    assert main(["query", "Amcor capex in fiscal 2023", *common, "--set", "retrieval.glossaries=[]"]) == 0
    assert "glossary" not in capsys.readouterr().out


def test_an_amount_question_quotes_the_figure_before_prose_on_the_topic() -> None:
    chunk = (
        "Capital expenditure supports growth across the business segments.\n\n"
        "| Cash flows (Millions) | 2018 | 2017 |\n| --- | --- | --- |\n| Capital expenditure | (1,577) | (1,373) |"
    )
    how_much = "How much was the capital expenditure?"
    assert "(1,577)" in extract_answer(how_much, [(1, chunk)], None, None, max_quotes=1, amount_weight=0.1).text
    assert "(1,577)" not in extract_answer(how_much, [(1, chunk)], None, None, max_quotes=1).text
    why = "Why does the company invest in capital expenditure?"  # asks for no amount: the prose answers
    assert extract_answer(why, [(1, chunk)], None, None, max_quotes=1, amount_weight=0.1).text.startswith("Capital")


def test_a_header_cell_with_a_full_stop_stays_one_row() -> None:
    # Microsoft's income statement header: "| Item 8 ITEM 8. FINANCIAL STATEMENTS ... | 2016 | 2015 |". Split at
    # ". " it was quoted as prose and its rows lost their header; the next piece of the table repeats it.
    first = (
        "| Item 8 ITEM 8. FINANCIAL STATEMENTS INCOME STATEMENTS | 2016 | 2015 |\n| --- | --- | --- |\n"
        "| Total revenue | 85,320 | 93,580 |\n| Cost of revenue: | | |"
    )
    later = "| Item 8 … STATEMENTS | 2016 | 2015 |\n|-|-|-|\n| Total cost of revenue | 32,780 | 33,038 |"
    question = "What is the FY2016 COGS for Microsoft in USD?"
    answer = _quote(question, [(1, first), (2, "Prose."), (3, later)], amount_weight=0.1)
    assert answer == "| Item 8 … STATEMENTS | 2016 | 2015 |\n| Total cost of revenue | 32,780 | 33,038 | [3]"


def test_a_spreadsheet_title_row_in_the_header_slot_is_a_title() -> None:
    # The CSV loader puts a sheet's title row above the rule and the column row under it (stanley-cups.csv).
    answer = _quote("How many Stanley Cups have the Maple Leafs won?", [(1, STANLEY_CUPS)])
    assert answer == "| Team | Location | Stanley Cups |\n| Maple Leafs | TOR | 13 | [1]"

FOOTBALLER = "National team Year Apps Goals\n\nWales\n\n1989 1 0\n\n1992 3 0\n\n1994 3 0"


def test_only_the_row_the_question_names_and_no_stray_figures_are_quoted() -> None:
    # The demo's collection: a footballer's caps ranked first (figures for "how many"), the CSV fifth. Before, the
    # answer quoted "1989 1 0 ..." under the Maple Leafs row, or the Blues and Flyers rows beside it.
    chunks = [(1, FOOTBALLER), (2, "Ice hockey is played on a rink."), (5, STANLEY_CUPS)]
    answer = extract_answer("How many Stanley Cups have the Maple Leafs won?", chunks, None, None, amount_weight=0.1)
    assert answer.text == "| Team | Location | Stanley Cups |\n| Maple Leafs | TOR | 13 | [5]"


def test_a_question_about_the_whole_table_still_gets_its_rows() -> None:
    answer = extract_answer("Stanley Cups by team", [(1, STANLEY_CUPS)], None, None).text
    assert "| Blues | STL | 1 |" in answer and "| Maple Leafs | TOR | 13 |" in answer
