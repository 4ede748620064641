"""OCR of images: real scans from shared data read, oversized images refused before decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.loaders import OcrOptions, load_file
from ingest.loaders.ocr import OcrLine, available_engines, column_order
from rag.errors import DocumentError

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_DOCS = REPO_ROOT.parent / "shared" / "data" / "unstructured-example-docs" / "docs"
needs_docs = pytest.mark.skipif(not EXAMPLE_DOCS.is_dir(), reason=f"example documents not found at {EXAMPLE_DOCS}")
ENGINES = available_engines()


@needs_docs
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_png_is_read_with_confidence(engine: str, tmp_path: Path) -> None:
    if engine not in ENGINES:
        install = "apt-get install tesseract-ocr" if engine == "tesseract" else "bash scripts/setup.sh"
        pytest.skip(f"{engine} is not installed here: {install}")
    # The page's top third (the first paragraphs): the whole page takes 10-25 s per engine on 2 cores.
    from PIL import Image

    with Image.open(EXAMPLE_DOCS / "img" / "DA-1p.png") as page:
        page.crop((0, 0, page.width, page.height // 3)).save(tmp_path / "DA-1p-top.png")
    doc = load_file(tmp_path / "DA-1p-top.png", ocr=OcrOptions(engine=engine))[0]
    assert doc.metadata["parser"] == f"ocr:{engine}"
    assert doc.metadata["ocr_pages"] == [1]
    assert 0.6 < doc.metadata["ocr_confidence"] <= 1.0
    text = " ".join(el.text for el in doc.elements)
    assert "dead of night" in text
    assert {el.page_number for el in doc.elements} == {1}


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "huge.png"
    # 8,000 x 8,000 of one grey compresses to about 60 KB and decodes to 64 MB (RGB: 192 MB).
    Image.new("L", (8000, 8000), color=255).save(path, optimize=True)
    refused = r"8000 x 8000 pixels \(64 megapixels\), over ingest\.ocr\.max_megapixels=50"
    with pytest.raises(DocumentError, match=refused):
        load_file(path)
    with pytest.raises(DocumentError, match=r"over ingest\.ocr\.max_megapixels=1:"):
        load_file(path, ocr=OcrOptions(max_megapixels=1))


def test_missing_engine_and_bad_image_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    from PIL import Image

    Image.new("RGB", (200, 100), color=(255, 255, 255)).save(path)
    with pytest.raises(DocumentError, match=r"needs OCR, which is off \(ingest\.ocr\.engine=none\)"):
        load_file(path, ocr=OcrOptions(engine="none"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DocumentError, match="not a readable image"):
        load_file(broken)


def test_two_columns_are_read_left_column_first() -> None:
    # Boxes as RapidOCR returns them for a two-column page (top to bottom across the page, columns
    # interleaved), with a title crossing the middle and a page number in the right margin.
    def line(text: str, left: float, top: float, right: float) -> OcrLine:
        return OcrLine(text, left, top, right, top + 20, 0.9)

    found = [
        line("Title across the page", 200, 10, 800),
        line("left 1", 50, 100, 480),
        line("right 1", 520, 102, 950),
        line("left 2", 50, 130, 480),
        line("right 2", 520, 131, 950),
        line("left 3", 50, 160, 480),
        line("right 3", 520, 161, 950),
        line("Footer across the page", 100, 900, 900),
        line("note", 50, 930, 200),
        line("7", 940, 930, 960),
    ]
    assert [item.text for item in column_order(found, page_width=1000)] == [
        "Title across the page",
        "left 1",
        "left 2",
        "left 3",
        "right 1",
        "right 2",
        "right 3",
        "Footer across the page",
        "note",
        "7",
    ]
