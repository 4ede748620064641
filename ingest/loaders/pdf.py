"""PDF text: pypdf per page, regrouped into paragraphs by `ingest.loaders.layout`; or unstructured's partitioner."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.documents import TITLE, Element
from ingest.loaders.errors import one_line
from ingest.loaders.layout import CONTROL_CHARS, Line, layout_elements
from ingest.loaders.unstructured import load_with_unstructured
from rag.errors import DocumentError

logger = logging.getLogger(__name__)


def load_pdf(
    path: Path, data: bytes, pdf_parser: str, strategy: str
) -> tuple[list[Element], str | None, dict[str, Any]]:
    reader = _open_pdf(str(path), data)
    if pdf_parser == "unstructured":
        elements, title, metadata = load_with_unstructured(path, ".pdf", data, strategy)
        metadata["page_count"] = len(reader.pages)
        return elements, title, metadata
    return _load_pdf_pypdf(str(path), reader)


def _open_pdf(display: str, data: bytes) -> Any:
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


# Why pypdf by default: whole `load_file` calls on this 2-core CPU machine, each in a fresh process
# after one warm-up call on another PDF (imports and spaCy loaded), median of 3 runs:
#   file                                  pages   pdf_parser="pypdf"     "unstructured" (strategy fast)
#   layout-parser-paper-fast.pdf              2   52 ms, 39 pages/s      279 ms, 7.2 pages/s
#   reliance.pdf (vector-heavy pages)         3   281 ms, 11 pages/s     596 ms, 5.0 pages/s
#   layout-parser-paper-fast.pdf x 50       100   2.0 s, 50 pages/s      5.3 s, 19 pages/s
# The 100-page file repeats two pages, which flatters unstructured (its spaCy calls are cached by
# text). pypdf's own parsing is ~97% of the pypdf time; the paragraph rebuilding below adds ~3%.


def _load_pdf_pypdf(display: str, reader: Any) -> tuple[list[Element], str | None, dict[str, Any]]:
    """pypdf text per page, regrouped into Title / NarrativeText / ListItem / Header / Footer elements.

    pypdf gives no layout, so paragraphs are rebuilt from the baseline positions and font sizes its
    text visitor reports, and classified with cheap rules (no spaCy): that is what keeps it fast.
    """
    pages: list[list[Line]] = []
    for page_number, page in enumerate(reader.pages, start=1):
        try:
            pages.append(_page_lines(page))
        except Exception as e:
            # Malformed content streams surface as many exception types; name the page.
            raise DocumentError(
                display,
                f"PDF text extraction failed on page {page_number} ({type(e).__name__}: {one_line(e)}): "
                "repair it (qpdf in.pdf out.pdf) or try ingest.pdf_parser=unstructured",
            ) from e

    elements, prominent_title = layout_elements(pages)
    # A heading set larger than the body text beats the info dictionary (often a file name),
    # which beats the first small heading (often a name or a label).
    title = prominent_title or _pdf_info_title(reader)
    if title is None:
        title = next((el.text for el in elements if el.category == TITLE), None)
    return elements, title, {"parser": "pypdf", "page_count": len(pages)}


def _pdf_info_title(reader: Any) -> str | None:
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


def _page_lines(page: Any) -> list[Line]:
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
