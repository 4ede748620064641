"""Legacy office files: .doc/.ppt/.ods/.odp through LibreOffice, .xls through xlrd; a hanging converter is killed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ingest.documents import TABLE, TITLE
from ingest.loaders import load_file
from rag.errors import DocumentError

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_DOCS = REPO_ROOT.parent / "shared" / "data" / "unstructured-example-docs" / "docs"
INSTALL = "apt-get install libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui"
needs_docs = pytest.mark.skipif(not EXAMPLE_DOCS.is_dir(), reason=f"example documents not found at {EXAMPLE_DOCS}")
needs_soffice = pytest.mark.skipif(shutil.which("soffice") is None, reason=f"LibreOffice is not installed: {INSTALL}")


def soffice_convert(source: Path, fmt: str, folder: Path) -> Path:
    """`source` saved as `fmt` by LibreOffice (how the test makes legacy files from modern ones)."""
    subprocess.run(
        [
            "soffice",
            "--headless",
            f"-env:UserInstallation={(folder / 'profile').as_uri()}",
            "--convert-to",
            fmt,
            "--outdir",
            str(folder),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder / f"{source.stem}.{fmt}"


@needs_docs
@needs_soffice
@pytest.mark.slow
def test_doc_and_ppt_are_converted() -> None:
    doc = load_file(EXAMPLE_DOCS / "fake.doc")[0]
    assert doc.metadata["parser"] == "libreoffice+unstructured"
    assert "Lorem ipsum dolor sit amet." in doc.elements[0].text


@needs_docs
@needs_soffice
@pytest.mark.slow
def test_ppt_and_xls_made_by_libreoffice(tmp_path: Path) -> None:
    ppt = soffice_convert(EXAMPLE_DOCS / "fake-power-point-table.pptx", "ppt", tmp_path)
    doc = load_file(ppt)[0]
    assert doc.title == "A Slide with a Table"
    (table,) = [el.text for el in doc.elements if el.category == TABLE]
    assert table.splitlines()[:3] == [
        "| Column 1 | Column 2 | Column 3 |",
        "| --- | --- | --- |",
        "| Red | Green | Blue |",
    ]

    xls = soffice_convert(EXAMPLE_DOCS / "stanley-cups.csv", "xls", tmp_path)
    book = load_file(xls)[0]
    assert book.metadata["parser"] == "xlrd"
    assert [el.category for el in book.elements] == [TITLE, TABLE]
    # The CSV's first row is a caption in the first cell; it becomes the header row.
    assert book.elements[1].text.splitlines()[:3] == [
        "| Stanley Cups |  |  |",
        "| --- | --- | --- |",
        "| Team | Location | Stanley Cups |",
    ]
    assert "| Maple Leafs | TOR | 13 |" in book.elements[1].text


def test_missing_libreoffice_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no soffice on an empty PATH
    path = tmp_path / "legacy.ppt"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    with pytest.raises(DocumentError, match=r"legacy \.ppt needs LibreOffice: apt-get install libreoffice-impress"):
        load_file(path)


def test_hanging_converter_is_killed_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in soffice that hangs, as LibreOffice does on some damaged files; it records its pid.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "pid"
    fake = bin_dir / "soffice"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "report.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    with pytest.raises(DocumentError, match=r"LibreOffice did not convert the file within 0\.9 s and was stopped"):
        load_file(path, timeout_s=1.0)
    pid = int(pid_file.read_text())
    for _ in range(50):  # the kill is synchronous; allow the kernel a moment to reap
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the hanging converter (pid {pid}) is still running")


@needs_docs
def test_parser_past_the_file_timeout_is_stopped() -> None:
    # pdfminer (pure Python) on a 2-page paper takes ~0.5 s: a 0.05 s limit stops it mid-parse, and
    # the chain must not treat the timeout as a parser failure and move on.
    with pytest.raises(DocumentError, match=r"parsing took over ingest\.file_timeout_s=0\.05 s and was stopped"):
        load_file(EXAMPLE_DOCS / "pdf" / "layout-parser-paper-fast.pdf", pdf_parser="pdfminer", timeout_s=0.05)
    # Without the limit the same call reads the file: the timeout, not the file, stopped it.
    assert load_file(EXAMPLE_DOCS / "pdf" / "layout-parser-paper-fast.pdf", pdf_parser="pdfminer")[0].elements
