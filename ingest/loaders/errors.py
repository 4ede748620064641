"""Reasons a person can act on: one line per failed file, naming what went wrong and the fix."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ingest.loaders.formats import LEGACY_OFFICE, UNSTRUCTURED_EXTRA
from rag.errors import DocumentError

MAX_REASON_CHARS = 240


def checked_size(path: Path, max_file_mb: float) -> int:
    """Size in bytes after the checks every format shares: exists, regular file, non-empty, under the limit."""
    display = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise DocumentError(display, os_error_reason(e)) from e
    if path.is_dir():
        raise DocumentError(display, "is a directory, not a file: pass the files inside it")
    if st.st_size == 0:
        raise DocumentError(display, "empty file (0 bytes)")
    size_mb = st.st_size / (1024 * 1024)
    if size_mb > max_file_mb:
        raise DocumentError(
            display,
            f"file is {format_mb(size_mb)} MB, over ingest.max_file_mb={max_file_mb:g}: "
            "raise the limit or split the file",
        )
    return st.st_size


def format_mb(mb: float) -> str:
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.2g}"


def os_error_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found (moved or deleted?)"
    if isinstance(e, PermissionError):
        return "permission denied: make the file readable by this user (chmod +r)"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file: pass the files inside it"
    return f"could not read the file ({one_line(e)})"


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def parser_error_reason(e: Exception, ext: str) -> str:
    """One line saying what went wrong inside a parser and what the user can do."""
    kind = ext[1:].upper()
    message = str(e).lower()
    if isinstance(e, ImportError):
        extra = UNSTRUCTURED_EXTRA.get(ext)
        fix = f"pip install 'unstructured[{extra}]'" if extra else f"pip install {e.name or 'unstructured'}"
        return f"{kind} support needs the Python package '{e.name or '?'}': {fix}"
    if isinstance(e, FileNotFoundError) and "soffice" in message:
        return legacy_office_reason(ext)
    if isinstance(e, OSError) and "pandoc" in message:
        return f"{kind} conversion needs pandoc: pip install pypandoc-binary"
    if isinstance(e, MemoryError):
        return "ran out of memory while parsing: split the file or lower ingest.max_file_mb"
    if "password" in message or "encrypt" in message:
        return f"password-protected {kind}: save an unprotected copy and ingest that"
    if isinstance(e, zipfile.BadZipFile):
        return f"not a valid {kind} (corrupt or password-protected): open and re-save it"
    if isinstance(e, UnicodeError):
        return f"could not decode the text ({one_line(e)}): convert the file to UTF-8"
    return f"{kind} parser failed ({type(e).__name__}: {one_line(e)}); the file may be corrupt: open and re-save it"


def legacy_office_reason(ext: str) -> str:
    package, modern = LEGACY_OFFICE.get(ext, ("libreoffice", ".docx"))
    return f"legacy {ext} needs LibreOffice: apt-get install {package}, or save it as {modern}"
