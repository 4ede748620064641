"""Saving uploads and reading per-file results out of an ingest report (ui/uploads.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import FileFailure, IngestReport, ProgressEvent
from rag.errors import DocumentError
from ui.uploads import FileResult, file_results, is_upload, progress_text, safe_filename, save_upload


def report(**changes: object) -> IngestReport:
    base = dict.fromkeys(
        ("files_seen", "files_ingested", "files_unchanged", "files_failed", "files_duplicate", "documents_ingested"), 0
    )
    base.update(dict.fromkeys(("documents_removed", "documents_missing", "chunks_written"), 0))
    times = dict.fromkeys(("seconds_total", "seconds_parse", "seconds_embed", "seconds_store"), 0.0)
    return IngestReport(collection="c", **base, **times, **changes)  # type: ignore[arg-type]


def test_safe_filename_keeps_one_harmless_component() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\report 2024.pdf") == "report 2024.pdf"
    assert safe_filename("notes<script>.md").startswith("notes_script_-")
    assert safe_filename("notes<script>.md").endswith(".md")
    assert safe_filename("..").startswith("upload-")


def test_two_names_never_become_one_file(tmp_path: Path) -> None:
    # 'report?.txt' and 'report*.txt' both became 'report_.txt': the second upload replaced the first.
    folder = tmp_path / "uploads" / "docs"
    first = save_upload(folder, "report?.txt", b"one")
    second = save_upload(folder, "report*.txt", b"two")
    assert first != second and first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert safe_filename("report?.txt") == safe_filename("report?.txt"), "the same name maps to the same file"


def test_a_very_long_name_is_shortened_not_an_os_error(tmp_path: Path) -> None:
    long = "a" * 296 + ".txt"  # 300 bytes: over the 255-byte limit of the file system
    saved = save_upload(tmp_path / "uploads" / "docs", long, b"text")
    assert saved.read_bytes() == b"text" and saved.suffix == ".txt"
    assert len(saved.name.encode()) <= 200
    assert save_upload(tmp_path / "uploads" / "docs", "é" * 150 + ".md", b"x").name.endswith(".md")


def test_a_failed_save_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "uploads"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(DocumentError, match=r"notes\.md: cannot save the upload"):
        save_upload(blocker / "docs", "notes.md", b"x")


def test_save_upload_writes_and_replaces(tmp_path: Path) -> None:
    first = save_upload(tmp_path / "uploads" / "docs", "a.md", b"one")
    again = save_upload(tmp_path / "uploads" / "docs", "a.md", b"two")
    assert first == again and again.read_bytes() == b"two"
    assert sorted(p.name for p in again.parent.iterdir()) == ["a.md"], "no temporary file left behind"
    assert is_upload(str(again), tmp_path, "docs")
    assert not is_upload(str(tmp_path / "elsewhere" / "a.md"), tmp_path, "docs")


def test_file_results_tell_each_files_fate(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in ("new.md", "same.md", "bad.pdf", "copy.md")]
    for p in paths:
        p.write_text("x")
    run = report(
        failures=(FileFailure(str(paths[2].resolve()), "not a PDF"),),
        duplicates=(FileFailure(str(paths[3].resolve()), "same content as new.md: not indexed twice"),),
        ingested=(str(paths[0].resolve()),),
    )
    assert file_results(paths, run) == [
        FileResult("new.md", "ingested"),
        FileResult("same.md", "unchanged", "same content as the indexed version"),
        FileResult("bad.pdf", "failed", "not a PDF"),
        FileResult("copy.md", "duplicate", "same content as new.md: not indexed twice"),
    ]


def test_progress_text_shows_files_chunks_rate_and_time_left() -> None:
    text = progress_text(ProgressEvent(2, 4, 30, 10.0, "/x/notes.md"))
    assert text == "2 of 4 files · 30 chunks · 3.0 chunks/s · about 10 s left · notes.md"
    assert progress_text(ProgressEvent(0, 3, 0, 0.0)) == "0 of 3 files · 0 chunks"
    streaming = progress_text(ProgressEvent(0, 1, 40, 8.0, "/x/big.txt", 3 << 20, 12 << 20))
    assert streaming.endswith("big.txt (25%)"), "progress inside a big file"
