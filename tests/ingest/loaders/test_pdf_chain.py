"""The PDF parser chain: a parser's refusal hands the file to the next one, scanned pages are OCRed per page."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ingest.loaders import OcrOptions, load_file
from ingest.loaders.ocr import available_engines
from ingest.loaders.pdf import parser_chain
from rag.errors import DocumentError

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_DOCS = REPO_ROOT.parent / "shared" / "data" / "unstructured-example-docs" / "docs"
PAPER = EXAMPLE_DOCS / "pdf" / "layout-parser-paper-fast.pdf"
needs_docs = pytest.mark.skipif(not PAPER.is_file(), reason=f"example documents not found at {EXAMPLE_DOCS}")
needs_ocr = pytest.mark.skipif(
    not available_engines(),
    reason="no OCR engine: pip install --no-deps rapidocr-onnxruntime (scripts/setup.sh does), "
    "or apt-get install tesseract-ocr",
)


def one_page_pdf(text: str, page_extra: bytes = b"") -> bytes:
    """A born-digital one-page PDF drawing `text` in Helvetica; `page_extra` goes into the page dictionary."""
    stream = b"BT /F1 14 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> " + page_extra + b">>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def test_chain_order() -> None:
    assert parser_chain("auto") == ("pypdfium2", "pypdf", "pdfminer")
    assert parser_chain("pypdf") == ("pypdf", "pypdfium2", "pdfminer")


def test_each_parser_reads_a_generated_pdf(tmp_path: Path) -> None:
    path = tmp_path / "memo.pdf"
    path.write_bytes(one_page_pdf("Quarterly revenue grew by four percent."))
    for parser in ("pypdfium2", "pypdf", "pdfminer"):
        doc = load_file(path, pdf_parser=parser)[0]
        assert doc.metadata["parser"] == parser
        assert doc.metadata["page_count"] == 1
        assert "Quarterly revenue grew by four percent." in doc.elements[0].text
        assert doc.elements[0].page_number == 1


def test_pypdf_limit_falls_to_the_next_parser(tmp_path: Path) -> None:
    # pypdf refuses arrays over 100,000 elements (LimitReachedError, also with strict=False) even in
    # valid files; real 10-Q filings hit it. The file must still be read, by the next parser.
    path = tmp_path / "big-array.pdf"
    path.write_bytes(one_page_pdf("Net income was stable.", b"/Junk [" + b"0 " * 100_050 + b"] "))
    doc = load_file(path, pdf_parser="pypdf")[0]
    assert doc.metadata["parser"] == "pypdfium2"
    assert "LimitReachedError" in doc.metadata["parser_fallback"]
    assert doc.metadata["parser_fallback"].startswith("pypdf: ")
    assert "Net income was stable." in doc.elements[0].text


def test_garbage_names_every_parser_failing(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"%PDF-1.4 not really a pdf")
    with pytest.raises(DocumentError, match=r"not a valid PDF \(no parser could read it; pypdfium2: "):
        load_file(path)


@needs_docs
def test_password_pdf_stops_the_chain() -> None:
    with pytest.raises(DocumentError, match="password-protected PDF"):
        load_file(EXAMPLE_DOCS / "pdf" / "password.pdf")


@needs_docs
def test_scanned_pdf_without_ocr_names_the_fix() -> None:
    with pytest.raises(DocumentError, match=r"no extractable text \(scanned PDF: .*ingest\.ocr\.engine=auto"):
        load_file(EXAMPLE_DOCS / "pdf" / "loremipsum-flat.pdf", ocr=OcrOptions(engine="none"))


@needs_docs
@needs_ocr
@pytest.mark.slow
def test_scanned_page_inside_a_born_digital_pdf_is_ocred_alone(tmp_path: Path) -> None:
    """Page 1 keeps its text layer, page 2 (the same page rasterised, no text layer) is OCRed."""
    import pypdfium2 as pdfium
    from pypdf import PdfReader, PdfWriter

    source = pdfium.PdfDocument(PAPER)
    image = source[0].render(scale=150 / 72).to_pil().convert("L")
    scan = io.BytesIO()
    image.save(scan, format="PDF", resolution=150.0)
    writer = PdfWriter()
    writer.add_page(PdfReader(PAPER).pages[0])
    writer.add_page(PdfReader(io.BytesIO(scan.getvalue())).pages[0])
    path = tmp_path / "report-with-scanned-appendix.pdf"
    with path.open("wb") as f:
        writer.write(f)

    doc = load_file(path)[0]
    assert doc.metadata["parser"] == "pypdfium2"
    assert doc.metadata["ocr_pages"] == [2]
    assert doc.metadata["ocr_engine"] in available_engines()
    assert 0.5 < doc.metadata["ocr_confidence"] <= 1.0
    page2 = " ".join(el.text for el in doc.elements if el.page_number == 2).lower()
    assert "layoutparser" in page2.replace(" ", "")
    assert "document image analysis" in page2
