"""Saving uploads and reading per-file results out of an ingest report (ui/uploads.py)."""

from __future__ import annotations

from pathlib import Path

from ingest.pipeline import FileFailure, IngestReport, ProgressEvent
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
    assert safe_filename("notes<script>.md") == "notes_script_.md"
    assert safe_filename("..") == "upload"


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
