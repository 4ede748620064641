"""Legacy and OpenDocument office files: .xls through xlrd, .doc/.ppt/.odp/.ods through LibreOffice headless.

LibreOffice converts the file to its OOXML sibling in a fresh temporary folder with its own user
profile (so parallel workers never share a profile lock), under a timeout; a converter that hangs
is killed with its whole process group and the file is reported. The converted file then goes
through the unstructured path like any .docx/.pptx/.xlsx.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ingest.documents import TABLE, TITLE, Element
from ingest.loaders.errors import legacy_office_reason, one_line
from ingest.loaders.formats import LEGACY_OFFICE, OLE_MAGIC
from ingest.loaders.unstructured import load_with_unstructured
from rag.errors import DocumentError

logger = logging.getLogger(__name__)

# Measured here: one .doc -> .docx conversion with a fresh profile takes ~1.5-2 s (LibreOffice 7.4).
DEFAULT_CONVERT_TIMEOUT_S = 120.0


def load_legacy(
    path: Path, ext: str, data: bytes, strategy: str, timeout_s: float | None
) -> tuple[list[Element], str | None, dict[str, Any]]:
    display = str(path)
    if ext == ".xls":
        # Not handed to LibreOffice when xlrd refuses it: LibreOffice opens a damaged workbook as
        # CSV text and "converts" its bytes into one garbage cell.
        try:
            return _load_xls(display, data)
        except DocumentError:
            raise
        except Exception as e:
            raise DocumentError(
                display, f"not a valid XLS ({type(e).__name__}: {one_line(e)}): open it and save it as .xlsx"
            ) from e
    if shutil.which("soffice") is None:
        raise DocumentError(display, legacy_office_reason(ext))
    _, modern = LEGACY_OFFICE[ext]
    with tempfile.TemporaryDirectory(prefix="rag-soffice-") as tmp:
        converted = convert_with_libreoffice(display, ext, data, modern, Path(tmp), timeout_s)
        elements, title, metadata = load_with_unstructured(converted, modern, converted.read_bytes(), strategy)
    return elements, title, {**metadata, "parser": f"libreoffice+{metadata.get('parser', 'unstructured')}"}


def convert_with_libreoffice(
    display: str, ext: str, data: bytes, target: str, folder: Path, timeout_s: float | None
) -> Path:
    """`data` converted to `target` (".docx", ...) by soffice inside `folder`; DocumentError on failure or hang."""
    source = folder / f"input{ext}"
    source.write_bytes(data)
    out_dir = folder / "out"
    # Inside the per-file limit, so this message (naming LibreOffice) wins over the generic one.
    timeout = 0.9 * timeout_s if timeout_s else DEFAULT_CONVERT_TIMEOUT_S
    command = [
        "soffice",
        "--headless",
        "--norestore",
        "--nologo",
        "--nodefault",
        "--nolockcheck",
        f"-env:UserInstallation={(folder / 'profile').as_uri()}",
        "--convert-to",
        target[1:],
        "--outdir",
        str(out_dir),
        str(source),
    ]
    # Its own session, so a hang is killed with every child (soffice.bin and its helpers).
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=folder
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        _kill(process)
        raise DocumentError(
            display,
            f"LibreOffice did not convert the file within {timeout:g} s and was stopped: "
            f"open it and save it as {target}, or raise ingest.file_timeout_s",
        ) from e
    except BaseException:
        _kill(process)  # the per-file timeout or Ctrl-C: never leave a converter behind
        raise
    converted = out_dir / f"input{target}"
    if process.returncode != 0 or not converted.is_file():
        # Its stderr opens with a warning about Java that says nothing about the file; keep the rest.
        messages = [line for line in stderr.decode("utf-8", "replace").splitlines() if "javaldx" not in line]
        detail = " ".join(" ".join(messages).split())[:200] or f"exit code {process.returncode}"
        encrypted = data.startswith(OLE_MAGIC) and "Encrypt".encode("utf-16-le") in data
        hint = "password-protected? " if encrypted else ""
        raise DocumentError(
            display,
            f"LibreOffice could not convert the {ext[1:].upper()} file ({hint}{detail}): "
            f"open it and save it as {target}",
        )
    return converted


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _load_xls(display: str, data: bytes) -> tuple[list[Element], str | None, dict[str, Any]]:
    """One Title (the sheet name) and one Markdown table per non-empty sheet, first row as header."""
    import xlrd

    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
    except xlrd.biffh.XLRDError as e:
        if "encrypt" in str(e).lower() or "password" in str(e).lower():
            raise DocumentError(display, "password-protected XLS: save an unprotected copy and ingest that") from e
        raise
    elements: list[Element] = []
    try:
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            rows = [[_cell_text(book, sheet.cell(r, c)) for c in range(sheet.ncols)] for r in range(sheet.nrows)]
            rows = [row for row in rows if any(row)]
            if not rows:
                continue
            # Drop empty margin columns (sheets often start at column B).
            used = [c for c in range(sheet.ncols) if any(row[c] for row in rows)]
            first, width = used[0], used[-1] + 1 - used[0]
            lines = []
            for number, row in enumerate(rows):
                cells = [cell.replace("|", "\\|") for cell in row[first : first + width]]
                lines.append("| " + " | ".join(cells) + " |")
                if number == 0:
                    lines.append("|" + "|".join([" --- "] * width) + "|")
            elements.append(Element(text=sheet.name, category=TITLE, page_number=index + 1, depth=0))
            elements.append(Element(text="\n".join(lines), category=TABLE, page_number=index + 1))
            book.unload_sheet(index)
    finally:
        book.release_resources()
    title = next((el.text for el in elements if el.category == TITLE), None)
    return elements, title, {"parser": "xlrd", "page_count": book.nsheets}


def _cell_text(book: Any, cell: Any) -> str:
    import xlrd

    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            moment = xlrd.xldate.xldate_as_datetime(cell.value, book.datemode)
            return moment.isoformat(sep=" ").removesuffix(" 00:00:00")
        except (ValueError, OverflowError, xlrd.xldate.XLDateError):
            return str(cell.value)
    if cell.ctype == xlrd.XL_CELL_NUMBER:
        value = float(cell.value)
        return str(int(value)) if value.is_integer() else repr(value)
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return "TRUE" if cell.value else "FALSE"
    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
        return ""
    return " ".join(str(cell.value).split())
