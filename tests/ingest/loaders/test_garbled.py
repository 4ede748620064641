"""A PDF whose text layer is not the text on the page is detected and OCRed (ingest/loaders/garbled.py).

The fixture is a real scan: a born-digital page of the example documents rendered at 200 dpi and made into a
searchable PDF by tesseract, whose font's ToUnicode map is then shifted by three code points, as a broken font
does: the page still shows "LayoutParser: A Unified Toolkit", its text layer says "Od|rxwSduvhu=# D# Xqlilhg#".
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ingest.loaders import OcrOptions, load_file
from ingest.loaders.garbled import text_quality

PAPER = Path(__file__).resolve().parents[4] / "shared" / "data" / "unstructured-example-docs" / "docs" / "pdf"
PAPER = PAPER / "layout-parser-paper-fast.pdf"
PROSE = (
    "Every full-time employee gets 28 days of paid leave per calendar year, in addition to public holidays. "
    "Part-time employees get a pro-rata share. Up to five unused days can be carried over to the next year; "
    "they expire on 31 March. Revenue was $1,577 million (2017: $1,373 million), up 14.8%."
)


def _shift(text: str, by: int) -> str:
    return "".join(chr(ord(c) + by) for c in text)


def test_prose_and_figures_read_as_text_and_a_shifted_layer_does_not() -> None:
    assert text_quality(PROSE).garbled() is None
    assert text_quality(PROSE).score > 0.9
    shifted = text_quality(_shift(PROSE, 3))  # spaces become '#': no token looks like a word
    assert shifted.garbled() is not None and shifted.score < 0.2
    letters_only = " ".join(_shift(word, 3) for word in PROSE.split())  # spaces kept: the vowels give it away
    assert "vowels" in (text_quality(letters_only).garbled() or "")
    assert text_quality("(cid:12)(cid:7) " * 10).garbled() == "20 unmapped glyphs"
    assert text_quality("Total 1,577 (1,373) 14.8% $5,363 2018").garbled() is None  # too short to judge


@pytest.fixture(scope="module")
def garbled_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PAPER.is_file():
        pytest.skip(f"example documents not found at {PAPER}")
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract makes the searchable PDF of this test: apt-get install tesseract-ocr")
    import pikepdf
    import pypdfium2 as pdfium

    folder = tmp_path_factory.mktemp("garbled")
    page = pdfium.PdfDocument(PAPER)[0]
    page.render(scale=200 / 72).to_pil().save(folder / "page.png")
    subprocess.run(
        ["tesseract", str(folder / "page.png"), str(folder / "scan"), "pdf"], check=True, capture_output=True
    )
    with pikepdf.open(folder / "scan.pdf") as pdf:
        for font in pdf.pages[0].Resources.Font.values():
            cmap = font.ToUnicode.read_bytes()
            assert b"<0000> <FFFF> <0000>" in cmap, cmap  # tesseract's identity map
            font.ToUnicode.write(cmap.replace(b"<0000> <FFFF> <0000>", b"<0000> <FFFF> <0003>"))
        pdf.save(folder / "garbled.pdf")
    return folder / "garbled.pdf"


def test_a_garbled_text_layer_is_read_by_ocr(garbled_pdf: Path) -> None:
    layer = pdfium_text(garbled_pdf)
    assert "Xqlilhg" in layer and "Unified" not in layer  # the fixture is what it claims
    doc = load_file(garbled_pdf)[0]
    assert doc.metadata["garbled_pages"] == [1] and doc.metadata["ocr_pages"] == [1]
    text = " ".join(e.text for e in doc.elements)
    assert "Unified Toolkit" in text and "Xqlilhg" not in text


def test_without_ocr_the_garbled_page_is_reported_not_hidden(garbled_pdf: Path) -> None:
    doc = load_file(garbled_pdf, ocr=OcrOptions(engine="none"))[0]
    assert doc.metadata["garbled_pages"] == [1] and doc.metadata["garbled_pages_kept"] == [1]
    assert "ingest.ocr.engine=none" in doc.metadata["ocr"]


def pdfium_text(path: Path) -> str:
    import pypdfium2 as pdfium

    return str(pdfium.PdfDocument(path)[0].get_textpage().get_text_range())


def test_a_statement_table_with_empty_cells_is_not_garbled() -> None:
    """Amazon's 10-K equity statement as the table pass writes it: pipes, rules and "—" for nil cells made
    it 45% plain tokens, so it was OCRed; table furniture is left out of the count."""
    header = "| Shares | Common Stock Amount | Treasury Stock | Retained Earnings | Total |\n" + "| --- " * 5 + "|"
    rows = [f"| Balance as of January 1, {year} | 477 | $5 | — | — | — |" for year in range(2010, 2020)]
    table = "\n".join([header, *rows, "| Net income | — | — | — | 3,033 | 3,033 |"])
    assert text_quality(table).garbled() is None
    assert text_quality(_shift(table, 3)).garbled() is not None  # its letters shifted still read as garbled
