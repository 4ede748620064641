"""Turn one source file into ParsedDocuments: the entry point that picks a loader by file type.

One module per parser family: `pdf` (a parser chain + `layout`, tables by `pdf_tables`), `ocr` (images, scanned pages),
`legacy` (.doc/.ppt/.xls through xlrd or LibreOffice), `unstructured` (most other formats),
`jsonl` (BEIR corpora); `formats` registers the extensions, `errors` words the reasons,
`encoding` and `tables` serve the unstructured path. Heavy imports (unstructured, spaCy, pypdf,
PDFium, OCR models) happen inside functions, so importing this package stays cheap.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from ingest.documents import ParsedDocument
from ingest.loaders.errors import checked_size, os_error_reason, parser_error_reason
from ingest.loaders.formats import IMAGE_EXTENSIONS, LEGACY_OFFICE, STRATEGIES, SUPPORTED_EXTENSIONS
from ingest.loaders.jsonl import load_jsonl
from ingest.loaders.legacy import load_legacy
from ingest.loaders.ocr import OCR_ENGINES, OcrOptions, load_image, missing_engine_reason
from ingest.loaders.pdf import PDF_PARSERS, load_pdf
from ingest.loaders.unstructured import configure_unstructured, load_with_unstructured
from rag.errors import ConfigError, DocumentError

__all__ = ["SUPPORTED_EXTENSIONS", "OcrOptions", "configure_unstructured", "load_file"]


def load_file(
    path: Path,
    *,
    pdf_parser: str = "auto",
    strategy: str = "fast",
    max_file_mb: float = 200.0,
    ocr: OcrOptions | None = None,
    timeout_s: float | None = None,
    pdf_tables: bool = True,
) -> list[ParsedDocument]:
    """Parse one file into one ParsedDocument (one per record for `.jsonl` corpora).

    `pdf_parser` picks the first PDF parser of the chain ("auto": the fastest); `strategy` is
    unstructured's partition strategy (with `pdf_parser="unstructured"`). `ocr` configures OCR of
    images and of PDF pages without text. `timeout_s` stops a parser that runs longer (a loop on a
    malformed file) and reports the file. `pdf_tables` emits the tables of born-digital PDF pages as Markdown
    (pypdfium2 path). Raises DocumentError for any file that cannot be turned
    into text, ConfigError for an unknown option.
    """
    ocr = ocr or OcrOptions()
    if pdf_parser not in PDF_PARSERS:
        raise ConfigError(f"ingest.pdf_parser={pdf_parser!r} is not one of {sorted(PDF_PARSERS)}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"ingest.strategy={strategy!r} is not one of {sorted(STRATEGIES)}")
    if ocr.engine not in OCR_ENGINES:
        raise ConfigError(f"ingest.ocr.engine={ocr.engine!r} is not one of {sorted(OCR_ENGINES)}")

    path = Path(path)
    display = str(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = f"'{ext}'" if ext else "(no extension)"
        raise DocumentError(
            display,
            f"unsupported file type {shown} (supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))})",
        )
    size = checked_size(path, max_file_mb)
    resolved = path.resolve()

    if ext == ".jsonl":
        return load_jsonl(path, resolved)

    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(display, os_error_reason(e)) from e
    if len(data) != size:
        raise DocumentError(display, "file changed while being read: ingest it again")

    try:
        with _time_limit(display, timeout_s):
            if ext == ".pdf":
                elements, title, metadata = load_pdf(path, data, pdf_parser, strategy, ocr, pdf_tables)
            elif ext in IMAGE_EXTENSIONS:
                elements, title, metadata = load_image(path, data, ocr)
            elif ext in LEGACY_OFFICE:
                elements, title, metadata = load_legacy(path, ext, data, strategy, timeout_s)
            else:
                elements, title, metadata = load_with_unstructured(path, ext, data, strategy)
    except DocumentError:
        raise
    except Exception as e:
        # Third-party parsers raise arbitrary types (KeyError, IndexError, lxml errors, ...) on
        # malformed input; the contract is one DocumentError per bad file, so wrap, never drop.
        raise DocumentError(display, parser_error_reason(e, ext)) from e

    if not any(el.text.strip() for el in elements):
        hint = ""
        if "ocr" in metadata:
            hint = f" (scanned PDF: {metadata['ocr']}; {missing_engine_reason(ocr)})"
        elif ext == ".pdf" or ext in IMAGE_EXTENSIONS:
            hint = " (OCR found no text either)" if metadata.get("ocr_engine") else " (blank pages?)"
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


class ParseTimeout(BaseException):
    """Raised inside a parser that ran past `timeout_s`; a BaseException, so a parser chain's
    `except Exception` (which moves on to the next parser) cannot swallow it."""


@contextmanager
def _time_limit(display: str, timeout_s: float | None) -> Iterator[None]:
    """Interrupt a parser looping in Python after `timeout_s` seconds (SIGALRM, main thread only).

    A parser stuck inside C code is interrupted when it returns to Python; converters that run as
    subprocesses (LibreOffice, tesseract) carry their own timeouts and are killed.
    """
    if not timeout_s or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise ParseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    except ParseTimeout as e:
        raise DocumentError(
            display,
            f"parsing took over ingest.file_timeout_s={timeout_s:g} s and was stopped (a parser loop on a "
            "malformed file?): repair or re-save the file, or raise the limit",
        ) from e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
