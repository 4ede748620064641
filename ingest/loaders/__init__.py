"""Turn one source file into ParsedDocuments: the entry point that picks a loader by file type.

One module per parser family: `pdf` (pypdf + `layout`), `unstructured` (most formats), `jsonl`
(BEIR corpora); `formats` registers the extensions, `errors` words the reasons, `encoding` and
`tables` serve the unstructured path. Heavy imports (unstructured, spaCy, pypdf) happen inside
functions, so importing this package stays cheap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ingest.documents import ParsedDocument
from ingest.loaders.errors import checked_size, os_error_reason, parser_error_reason
from ingest.loaders.formats import PDF_PARSERS, STRATEGIES, SUPPORTED_EXTENSIONS
from ingest.loaders.jsonl import load_jsonl
from ingest.loaders.pdf import load_pdf
from ingest.loaders.unstructured import configure_unstructured, load_with_unstructured
from rag.errors import ConfigError, DocumentError

__all__ = ["SUPPORTED_EXTENSIONS", "configure_unstructured", "load_file"]


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
    if pdf_parser not in PDF_PARSERS:
        raise ConfigError(f"ingest.pdf_parser={pdf_parser!r} is not one of {sorted(PDF_PARSERS)}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"ingest.strategy={strategy!r} is not one of {sorted(STRATEGIES)}")

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
        if ext == ".pdf":
            elements, title, metadata = load_pdf(path, data, pdf_parser, strategy)
        else:
            elements, title, metadata = load_with_unstructured(path, ext, data, strategy)
    except DocumentError:
        raise
    except Exception as e:
        # Third-party parsers raise arbitrary types (KeyError, IndexError, lxml errors, ...) on
        # malformed input; the contract is one DocumentError per bad file, so wrap, never drop.
        raise DocumentError(display, parser_error_reason(e, ext)) from e

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
