"""Tables of born-digital PDFs as Markdown: a statement's cell sits in a row with its line item under its period."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ingest.chunking import StructureChunker
from ingest.cleaning import clean_document
from ingest.documents import TABLE
from ingest.loaders import load_file
from ingest.loaders.pdf_tables import find_tables, looks_tabular, page_words
from rag.config import ChunkingSettings
from rag.extract import extract_answer

REPO_ROOT = Path(__file__).resolve().parents[3]
FINANCEBENCH = REPO_ROOT.parent / "shared" / "data" / "financebench" / "pdfs"
# Ulta Beauty's Q4 2023 earnings release: 9 pages, statements on pages 6-8 (no ruling lines).
ULTA = FINANCEBENCH / "ULTABEAUTY_2023Q4_EARNINGS.pdf"
# 3M's 2018 10-K: the cash-flow statement on page 60 (FinanceBench's capital expenditure question).
MMM = FINANCEBENCH / "3M_2018_10K.pdf"


def require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"FinanceBench PDF not found at {path} (shared data lives in ../shared/data beside the repo)")
    return path


def _rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()]


def test_a_balance_sheet_cell_sits_in_its_row_under_its_date() -> None:
    doc = load_file(require(ULTA))[0]
    tables = [el for el in doc.elements if el.category == TABLE]
    assert doc.metadata["pdf_tables"] == len(tables) >= 3
    sheet = next(el for el in tables if "Balance Sheets" in el.text.splitlines()[0])
    assert sheet.page_number == 7  # the page the balance sheet is printed on
    rows = _rows(sheet.text)
    header = rows[0]
    # The caption goes into the header's corner cell, the dates are the column headers.
    assert header[0].startswith("Condensed Consolidated Balance Sheets (In thousands)")
    assert "January 28, 2023" in header[1] and "January 29, 2022" in header[2]
    assert rows[1] == ["---"] * len(header)
    assert ["Total assets", "$5,370,411", "$4,764,379"] in rows
    assert ["Merchandise inventories, net", "1,603,451", "1,499,218"] in rows
    # Reading order: the table sits between the page's text before and after it.
    page = [el for el in doc.elements if el.page_number == 7]
    assert page.index(sheet) > 0 and all(el.category != TABLE or el is sheet for el in page)


def test_the_table_pass_can_be_turned_off() -> None:
    doc = load_file(require(ULTA), pdf_tables=False)[0]
    assert not [el for el in doc.elements if el.category == TABLE]
    assert "pdf_tables" not in doc.metadata
    # The same figures are still in the text, only without their row label and column header around them.
    assert any("5,370,411" in el.text and "|" not in el.text for el in doc.elements)


def test_no_word_or_figure_is_lost_to_a_table() -> None:
    """Every text line inside a table's band is replaced by the table, so its words must all be in the table."""
    token = re.compile(r"[A-Za-z]{3,}|\d[\d,.]*\d|\d")

    def counts(tables: bool) -> Counter[str]:
        doc = load_file(require(ULTA), pdf_tables=tables)[0]
        return Counter(token.findall(" ".join(el.text for el in doc.elements)))

    plain = counts(False)
    assert sum(plain.values()) > 2000
    assert plain - counts(True) == Counter()


def test_a_cash_flow_row_keeps_its_label_years_and_statement_name() -> None:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(require(MMM))
    try:
        textpage = pdf[59].get_textpage()  # page 60
        text = textpage.get_text_range()
        assert looks_tabular(text)
        tables = find_tables(page_words(textpage, text))
        textpage.close()
    finally:
        pdf.close()
    assert len(tables) == 1
    rows = _rows(tables[0].markdown)
    assert rows[0][1:] == ["2018", "2017", "2016"]
    assert "Consolidated Statement of Cash Flows" in rows[0][0] and "(Millions)" in rows[0][0]
    assert ["Purchases of property, plant and equipment (PP&E)", "(1,577)", "(1,373)", "(1,420)"] in rows
    # "$ 5,363": the dollar sign set apart from its figure joins it.
    assert ["Net income including noncontrolling interest", "$5,363", "$4,869", "$5,058"] in rows
    # A label wrapped onto the line with the figures is one row.
    assert ["Proceeds from sale of businesses, net of cash sold", "846", "1,065", "142"] in rows


def test_a_prose_page_has_no_table() -> None:
    paper = REPO_ROOT.parent / "shared" / "data" / "unstructured-example-docs" / "docs" / "pdf" / "reliance.pdf"
    doc = load_file(require(paper))[0]
    assert not [el for el in doc.elements if el.category == TABLE]


@pytest.fixture(scope="module")
def chunker(embedder: Any) -> StructureChunker:
    return StructureChunker(embedder.tokenizer, ChunkingSettings(chunk_tokens=128), embedder.max_tokens)


def test_a_pdf_table_is_chunked_by_rows_under_its_header_and_quoted_with_it(chunker: StructureChunker) -> None:
    doc = clean_document(load_file(require(ULTA))[0])
    chunks = [c for c in chunker.chunk(doc) if TABLE in c.element_types and 7 in c.pages]
    header = "| Condensed Consolidated Balance Sheets (In thousands) |"
    assert len(chunks) >= 2, "the balance sheet is too large for one 128-token chunk"
    sheet = [c for c in chunks if c.text.startswith(header)]
    assert len(sheet) >= 2 and all(c.pages == (7,) for c in sheet)
    # Every piece opens with the header row (caption and dates) and its separator, then whole rows.
    for c in sheet:
        lines = c.text.splitlines()
        assert lines[1].startswith("| ---") and all(line.startswith("| ") for line in lines)
    total = next(c for c in sheet if "| Total assets |" in c.text)
    quoted = extract_answer("What were total assets at January 28, 2023?", [(1, total.text)], None, None)
    best = max(quoted.quotes, key=lambda q: q.score)
    assert best.text == "| Total assets | $5,370,411 | $4,764,379 |"
    assert best.header is not None and best.header.startswith(header) and "January 28, 2023" in best.header
    # The answer shows the header row once, above the quoted rows of its table.
    assert quoted.text.startswith(best.header + "\n") and best.text in quoted.text
