"""PDF text through a parser chain: pypdfium2, then pypdf, then pdfminer, then OCR for pages without a text layer.

Each parser turns pages into positioned lines that `ingest.loaders.layout` regroups into paragraphs.
A parser that raises on the file hands the whole file to the next one; a page that comes back empty
although it draws text goes to the next parser on its own; a page still without text is rendered and
OCRed when an engine is available. The metadata says which parser read the file, why an earlier one
was passed over, and which pages were OCRed.
"""

from __future__ import annotations

import ctypes
import functools
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest.documents import TITLE, Element
from ingest.loaders.errors import one_line
from ingest.loaders.garbled import text_quality
from ingest.loaders.layout import CONTROL_CHARS, Line, layout_elements
from ingest.loaders.ocr import OcrOptions, ocr_image_lines, resolve_engine
from ingest.loaders.pdf_tables import find_tables, looks_tabular, page_words, with_tables
from ingest.loaders.unstructured import load_with_unstructured
from rag.errors import DocumentError

logger = logging.getLogger(__name__)

# The text parsers in chain order: fastest first. Measured on FinanceBench 10-K/10-Q filings with
# `python bench/pdf_parsers.py` (whole `load_file`, 2-core CPU shared with other jobs; README has the table).
TEXT_PARSERS = ("pypdfium2", "pypdf", "pdfminer")
PDF_PARSERS = frozenset({"auto", *TEXT_PARSERS, "unstructured"})

PageLines = list[list[Line]]
# page_indices=None reads every page; otherwise only those (0-based), the rest come back empty.
_Parser = Callable[[str, bytes, "Sequence[int] | None"], tuple[PageLines, "str | None"]]


def parser_chain(pdf_parser: str) -> tuple[str, ...]:
    """The text parsers to try, the chosen one first ("auto": the fastest first)."""
    if pdf_parser in ("auto", "unstructured"):
        return TEXT_PARSERS
    return (pdf_parser, *(p for p in TEXT_PARSERS if p != pdf_parser))


def load_pdf(
    path: Path, data: bytes, pdf_parser: str, strategy: str, ocr: OcrOptions, tables: bool = True
) -> tuple[list[Element], str | None, dict[str, Any]]:
    """Elements, title and parser metadata of a PDF. `tables`: the pypdfium2 path emits the tables of pages
    that look tabular as Markdown Table elements (ingest/loaders/pdf_tables.py); the other parsers never do."""
    display = str(path)
    if pdf_parser == "unstructured":
        reader = _open_pypdf(display, data)
        elements, title, partitioned = load_with_unstructured(path, ".pdf", data, strategy)
        return elements, title, {**partitioned, "page_count": len(reader.pages)}

    chain = parser_chain(pdf_parser)
    passed_over: list[str] = []
    pages: PageLines | None = None
    info_title: str | None = None
    used = chain[0]
    for name in chain:
        parse = functools.partial(_pdfium_pages, tables=True) if name == "pypdfium2" and tables else _PARSERS[name]
        try:
            pages, info_title = parse(display, data, None)
        except DocumentError:
            raise  # password-protected, no pages: every parser would say the same
        except Exception as e:
            # A parser's own limits (pypdf's LimitReachedError on valid filings) or bugs: next parser.
            reason = f"{name}: {type(e).__name__}: {one_line(e)}"
            logger.warning("%s: %s; trying the next PDF parser", display, reason)
            passed_over.append(reason)
            continue
        used = name
        break
    if pages is None:
        raise DocumentError(
            display,
            f"not a valid PDF (no parser could read it; {passed_over[0]}): "
            "repair it (qpdf in.pdf out.pdf) or re-save it, then ingest that",
        )

    metadata: dict[str, Any] = {"parser": used, "page_count": len(pages)}
    table_pages = [i + 1 for i, lines in enumerate(pages) if any(line.table for line in lines)]
    if table_pages:
        metadata["pdf_tables"] = sum(line.table for lines in pages for line in lines)
        metadata["pdf_table_pages"] = table_pages
    if passed_over:
        metadata["parser_fallback"] = "; ".join(passed_over)
    _reread_garbled(display, data, pages, ocr, metadata)
    empty = [i for i, lines in enumerate(pages) if not lines]
    if empty:
        _fill_empty_pages(display, data, pages, empty, chain[chain.index(used) + 1 :], ocr, metadata)

    elements, prominent_title = layout_elements(pages)
    # A heading set larger than the body text beats the info dictionary (often a file name),
    # which beats the first small heading (often a name or a label).
    title = prominent_title or info_title
    if title is None:
        title = next((el.text for el in elements if el.category == TITLE), None)
    return elements, title, metadata


def _fill_empty_pages(
    display: str,
    data: bytes,
    pages: PageLines,
    empty: list[int],
    later_parsers: Sequence[str],
    ocr: OcrOptions,
    metadata: dict[str, Any],
) -> None:
    """Empty pages that draw text go to the later parsers; pages still empty are OCRed (in place)."""
    kinds = _page_object_kinds(data, empty)
    with_text = [i for i in empty if kinds.get(i, (1, 1))[0] > 0]
    for name in later_parsers:
        if not with_text:
            break
        try:
            more, _ = _PARSERS[name](display, data, with_text)
        except Exception as e:
            logger.warning("%s: %s could not read pages %s: %s", display, name, with_text, one_line(e))
            continue
        read = [i for i in with_text if more[i]]
        for i in read:
            pages[i] = more[i]
        if read:
            metadata.setdefault("pages_by_parser", {})[name] = [i + 1 for i in read]
        with_text = [i for i in with_text if i not in read]

    still_empty = [i for i in empty if not pages[i]]
    # Blank pages (no text, no image) are left alone; the rest may be scans.
    to_ocr = [i for i in still_empty if kinds.get(i, (1, 1)) != (0, 0)]
    if not to_ocr:
        return
    ocred = _ocr_pages(display, data, to_ocr, ocr, metadata, "needed for")
    for i, lines in ocred.items():
        pages[i] = lines
    if len(ocred) < len(to_ocr):
        metadata["pages_without_text"] = sorted(i + 1 for i in to_ocr if i not in ocred)


def _reread_garbled(display: str, data: bytes, pages: PageLines, ocr: OcrOptions, metadata: dict[str, Any]) -> None:
    """Pages whose text layer looks garbled (ingest/loaders/garbled.py) are OCRed; the OCR replaces the layer when it
    reads better. The metadata lists the garbled pages, and those still garbled when OCR could not help."""
    layer = {i: text_quality("\n".join(line.text for line in lines)) for i, lines in enumerate(pages) if lines}
    garbled = {i: reason for i, q in layer.items() if (reason := q.garbled()) is not None}
    if not garbled:
        return
    first = min(garbled)
    logger.warning("%s: the text layer of %d page(s) looks garbled (page %d: %s); OCR reads them", display,
                   len(garbled), first + 1, garbled[first])  # fmt: skip
    metadata["garbled_pages"] = sorted(i + 1 for i in garbled)
    read = _ocr_pages(display, data, sorted(garbled), ocr, metadata, "wanted for a garbled text layer on")
    kept = []
    for i in sorted(garbled):
        lines = read.get(i)
        if lines and text_quality("\n".join(line.text for line in lines)).score > layer[i].score:
            pages[i] = lines
        else:
            kept.append(i + 1)
    if kept:
        metadata["garbled_pages_kept"] = kept


def _ocr_pages(
    display: str, data: bytes, indices: Sequence[int], ocr: OcrOptions, metadata: dict[str, Any], why: str
) -> dict[int, list[Line]]:
    """OCR of the pages `indices` (0-based) rendered by PDFium: their lines by index; the engine, pages and mean
    confidence go into `metadata` (pages OCRed for both reasons are listed once)."""
    engine = resolve_engine(ocr)
    if engine is None:
        metadata["ocr"] = f"{why} {len(indices)} page(s) but ingest.ocr.engine={ocr.engine}"
        return {}
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        # Another parser read the text pages; without PDFium there is nothing to render for OCR.
        metadata["ocr"] = f"{why} {len(indices)} page(s) but PDFium cannot render this file ({one_line(e)})"
        return {}
    confidences: list[tuple[float, int]] = []
    read: dict[int, list[Line]] = {}
    try:
        for i in indices:
            page = pdf[i]
            # Render at ocr.dpi (points are 1/72 inch), scaled down for an oversized page so the bitmap
            # stays within ingest.ocr.max_megapixels. Only one page's bitmap is alive at a time.
            width, height = page.get_size()
            scale = ocr.dpi / 72.0
            scale = min(scale, (ocr.max_megapixels * 1e6 / max(1.0, width * height)) ** 0.5)
            image = page.render(scale=scale).to_pil()
            page.close()
            lines, confidence, chars = ocr_image_lines(
                engine, image, display, page_number=i + 1, points_per_pixel=1 / scale
            )
            if lines:
                read[i] = lines
                confidences.append((confidence, chars))
            logger.info("%s: OCR page %d of %d pages to read", display, i + 1, len(indices))
    finally:
        pdf.close()
    if read:
        metadata["ocr_engine"] = engine.name
        metadata["ocr_pages"] = sorted(set(metadata.get("ocr_pages", [])) | {i + 1 for i in read})
        total = sum(chars for _, chars in confidences)
        metadata["ocr_confidence"] = round(sum(c * n for c, n in confidences) / max(1, total), 3)
    return read


# --------------------------------------------------------------------------- pypdfium2

# PDFium marks a line-end hyphen it removed with U+FFFE and joins the word; we put the line break
# back after a plain hyphen, as the other parsers emit it, so the cleaner judges it the same way.
_PDFIUM_BREAK = re.compile("\r\n|\r|\n|\ufffe")


def _pdfium_pages(
    display: str, data: bytes, page_indices: Sequence[int] | None, tables: bool = False
) -> tuple[PageLines, str | None]:
    """Lines per page from PDFium's text page: its line breaks, the baseline and size of each line's first char.

    With `tables`, a page whose text looks tabular has its tables found from word boxes, and each table's
    lines are replaced by one line holding the table as Markdown.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise DocumentError(display, "password-protected PDF: save a decrypted copy and ingest that") from e
        raise
    try:
        count = len(pdf)
        if count == 0:
            raise DocumentError(display, "PDF has no pages")
        wanted = set(range(count) if page_indices is None else page_indices)
        pages: PageLines = []
        x, y = ctypes.c_double(), ctypes.c_double()
        for index in range(count):
            if index not in wanted:
                pages.append([])
                continue
            page = pdf[index]
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
                lines: list[Line] = []
                start = 0
                blank_before = False
                for match in [*_PDFIUM_BREAK.finditer(text), None]:
                    end = match.start() if match is not None else len(text)
                    raw = text[start:end]
                    stripped = CONTROL_CHARS.sub("", raw).strip()
                    if match is not None and match.group() == "\ufffe":
                        stripped += "-"
                    if stripped:
                        first = start + (len(raw) - len(raw.lstrip()))
                        char = pdfium_c.FPDFText_GetCharIndexFromTextIndex(textpage, first)
                        baseline: float | None = None
                        size: float | None = None
                        if char >= 0 and pdfium_c.FPDFText_GetCharOrigin(textpage, char, x, y):
                            baseline = y.value
                            size = float(pdfium_c.FPDFText_GetFontSize(textpage, char)) or None
                        lines.append(
                            Line(text=" ".join(stripped.split()), y=baseline, size=size, blank_before=blank_before)
                        )
                        blank_before = False
                    else:
                        blank_before = bool(lines)
                    if match is not None:
                        start = match.end()
                if tables and looks_tabular(text):
                    lines = with_tables(lines, find_tables(page_words(textpage, text)))
            finally:
                textpage.close()
                page.close()
            pages.append(lines)
        info = pdf.get_metadata_dict(skip_empty=True)
    finally:
        pdf.close()
    title = " ".join(str(info.get("Title", "")).split())
    return pages, title or None


def _page_object_kinds(data: bytes, indices: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(text objects, image objects) drawn on each page; pages PDFium cannot read are left out."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    kinds: dict[int, tuple[int, int]] = {}
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        logger.debug("PDFium cannot open the file to count page objects: %s", e)
        return kinds
    try:
        for index in indices:
            page = pdf[index]
            counts: Counter[int] = Counter()
            # Form XObjects are walked too: scanners and some generators wrap a page's content in one.
            for obj in page.get_objects(max_depth=3):
                counts[obj.type] += 1
            kinds[index] = (counts[pdfium_c.FPDF_PAGEOBJ_TEXT], counts[pdfium_c.FPDF_PAGEOBJ_IMAGE])
            page.close()
    finally:
        pdf.close()
    return kinds


# --------------------------------------------------------------------------- pypdf


def _open_pypdf(display: str, data: bytes) -> Any:
    """A pypdf reader, decrypted with the empty password if needed; DocumentError otherwise."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise DocumentError(
            display,
            f"not a valid PDF ({one_line(e)}): repair it (qpdf in.pdf out.pdf) or re-save it, then ingest that",
        ) from e
    if reader.is_encrypted:
        try:
            # Many PDFs are "encrypted" only to restrict printing/copying and open with "".
            result = reader.decrypt("")
        except DependencyError as e:
            raise DocumentError(
                display, "encrypted PDF needs the 'cryptography' package: pip install cryptography"
            ) from e
        except (PyPdfError, NotImplementedError, ValueError, KeyError) as e:
            raise DocumentError(
                display, f"encrypted PDF that pypdf cannot decrypt ({one_line(e)}): save a decrypted copy"
            ) from e
        if result == PasswordType.NOT_DECRYPTED:
            raise DocumentError(display, "password-protected PDF: save a decrypted copy and ingest that")
    try:
        page_count = len(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise DocumentError(
            display,
            f"not a valid PDF: page tree unreadable ({one_line(e)}): repair it (qpdf in.pdf out.pdf)",
        ) from e
    if page_count == 0:
        raise DocumentError(display, "PDF has no pages")
    return reader


def _pypdf_pages(display: str, data: bytes, page_indices: Sequence[int] | None) -> tuple[PageLines, str | None]:
    """pypdf's text per page with the baseline and size its text visitor reports for each run."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except PyPdfError:
        raise  # the chain moves on (pypdf's LimitReachedError lands here on some valid filings)
    if encrypted:
        reader = _open_pypdf(display, data)
    count = len(reader.pages)
    if count == 0:
        raise DocumentError(display, "PDF has no pages")
    wanted = set(range(count) if page_indices is None else page_indices)
    pages: PageLines = []
    for index, page in enumerate(reader.pages):
        pages.append(_pypdf_page_lines(page) if index in wanted else [])
    return pages, _pypdf_info_title(reader)


def _pypdf_info_title(reader: Any) -> str | None:
    """The /Title of the PDF's info dictionary, if it has a readable one."""
    from pypdf.errors import PyPdfError

    try:
        info = reader.metadata
        raw = info.get("/Title") if info is not None else None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.debug("unreadable PDF info dictionary: %s", e)
        return None
    title = " ".join(str(raw).split()) if raw else ""
    return title or None


def _pypdf_page_lines(page: Any) -> list[Line]:
    """Lines of one page with the baseline y and font size of their first visible text run."""
    runs: list[tuple[str, float | None, float | None]] = []

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], font_dict: Any, font_size: float) -> None:
        if not text:
            return
        # Text space -> user space: the text matrix times the current transformation matrix.
        a, b, c, d, e, f = (float(v) for v in tm)
        ca, cb, cc, cd, _, cf = (float(v) for v in cm)
        y = e * cb + f * cd + cf
        ma, mb, mc, md = a * ca + b * cc, a * cb + b * cd, c * ca + d * cc, c * cb + d * cd
        scale = abs(ma * md - mb * mc) ** 0.5
        size = float(font_size) * scale if font_size else None
        runs.append((text, y, size))

    page.extract_text(visitor_text=visit)

    lines: list[Line] = []
    parts: list[str] = []
    sized: Counter[float] = Counter()
    first_y: float | None = None
    blank_before = False

    def flush() -> None:
        nonlocal first_y, blank_before
        text = CONTROL_CHARS.sub("", "".join(parts)).strip()
        if text:
            size = sized.most_common(1)[0][0] if sized else None
            lines.append(Line(text=" ".join(text.split()), y=first_y, size=size, blank_before=blank_before))
            blank_before = False
        else:
            blank_before = bool(lines)
        parts.clear()
        sized.clear()
        first_y = None

    for text, y, size in runs:
        segments = text.split("\n")
        for index, segment in enumerate(segments):
            if index > 0:
                flush()
            if not segment:
                continue
            parts.append(segment)
            visible = len(segment.strip())
            # A run's position is where it starts, so only its first segment has a known place;
            # runs of only whitespace ("\n" pieces) come with bogus positions and are skipped.
            if visible and index == 0:
                if first_y is None:
                    first_y = y
                if size is not None and size > 0.5:
                    sized[round(size * 2) / 2] += visible
    flush()
    return lines


# --------------------------------------------------------------------------- pdfminer


def _pdfminer_pages(display: str, data: bytes, page_indices: Sequence[int] | None) -> tuple[PageLines, str | None]:
    """pdfminer.six's layout analysis: slow (~24 pages/s) but reads files the faster parsers refuse."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTChar, LTTextBox, LTTextLine
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    by_index: dict[int, list[Line]] = {}
    count = 0
    try:
        wanted = None if page_indices is None else set(page_indices)
        for index, layout in enumerate(extract_pages(io.BytesIO(data), page_numbers=wanted, laparams=LAParams())):
            count = max(count, index + 1)
            lines: list[Line] = []
            for box in layout:
                if not isinstance(box, LTTextBox):
                    continue
                for line in box:
                    if not isinstance(line, LTTextLine):
                        continue
                    text = CONTROL_CHARS.sub("", line.get_text()).strip()
                    if not text:
                        continue
                    first = next((ch for ch in line if isinstance(ch, LTChar)), None)
                    size = float(first.size) if first is not None else None
                    lines.append(Line(text=" ".join(text.split()), y=float(line.y0), size=size))
            by_index[index] = lines
    except PDFPasswordIncorrect as e:
        raise DocumentError(display, "password-protected PDF: save a decrypted copy and ingest that") from e
    # extract_pages enumerates only the pages it yields; with page_numbers it still counts from 0
    # over the yielded pages, so map them back to the requested indices.
    if page_indices is not None:
        ordered = sorted(page_indices)
        by_index = {ordered[k]: lines for k, lines in by_index.items() if k < len(ordered)}
        count = max([*ordered, -1]) + 1
    if count == 0:
        raise DocumentError(display, "PDF has no pages")
    return [by_index.get(i, []) for i in range(count)], None


_PARSERS: dict[str, _Parser] = {
    "pypdfium2": _pdfium_pages,
    "pypdf": _pypdf_pages,
    "pdfminer": _pdfminer_pages,
}
