"""The parse worker pool on real files: a parser stuck inside C code is killed, a crashed worker is reported, the run
goes on; the report says how busy each stage was."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ingest import pipeline
from ingest.loaders import _time_limit
from ingest.parse_pool import PoolStats
from ingest.pipeline import PreparedFile, ingest_paths
from rag.factory import build_store
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration


def stuck_or_parse(path: str, known: dict[str, str], on_parsed: Callable[[], None]) -> PreparedFile:
    """Runs in a spawned parse worker. `stuck.*` blocks inside C under load_file's own SIGALRM timer, as a parser
    looping in a C library does: the timer fires, but its Python handler runs only when C returns to Python, which it
    never does (the signal is held back from the main thread, so sleep() is not cut short either).
    `crash.*` dies by SIGSEGV."""
    name = Path(path).name
    if name.startswith("stuck"):
        with _time_limit(path, 0.5):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            ctypes.CDLL(None).sleep(1000)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return pipeline.parse_in_worker(path, known, on_parsed)


def _ingest_with(target: Any, settings: Any, embedder: Any, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(
        pipeline, "_engine", lambda s, stats: partial(pipeline._prepare_all, stats=stats, target=target)
    )
    with build_store(settings) as store:
        report = ingest_paths([folder], settings, store, embedder)
        assert report.files_ingested, f"nothing ingested: {report.failures}"
        stored = {str(p["source"]) for _, p in store.scroll(settings.store.collection, fields=["source"])}
    return report, stored


def test_a_parser_stuck_in_c_is_killed_and_the_other_files_ingested(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    good = sorted(str(p.resolve()) for p in docs.iterdir())
    (docs / "stuck.txt").write_text("A report whose parser never returns.\n")
    (docs / "crash.txt").write_text("A report whose parser crashes the process.\n")
    settings = make_settings("ingest.workers=2")  # the real files keep the default ingest.file_timeout_s (600 s)
    # Only the stuck file's deadline is short (its worker is killed 3 s after it took the file): on a loaded machine a
    # worker's first real parse, which imports the parsers, can take longer than that.
    deadline = pipeline.parse_deadline_s
    short = {str((docs / "stuck.txt").resolve())}
    monkeypatch.setattr(pipeline, "parse_deadline_s", lambda t, path: 3.0 if path in short else deadline(t, path))

    report, stored = _ingest_with(stuck_or_parse, settings, embedder, docs, monkeypatch)

    reasons = {Path(f.path).name: f.reason for f in report.failures}
    assert set(reasons) == {"stuck.txt", "crash.txt"}
    assert reasons["stuck.txt"].startswith("parser did not finish within 3 s: killed")
    assert "ingest.file_timeout_s" in reasons["stuck.txt"], "says what to do"
    assert "died (killed by SIGSEGV)" in reasons["crash.txt"]
    assert report.files_killed == 1
    assert list(report.ingested) == good and stored == set(good), "the other files, some parsed after the kill"
    saved = json.loads(Path(report.report_path).read_text())
    assert {f["path"] for f in saved["failures"]} == {str(docs / "stuck.txt"), str(docs / "crash.txt")}


def test_the_deadline_gives_the_in_process_timer_a_grace_period_and_spares_corpora() -> None:
    assert pipeline.parse_deadline_s(600.0, "/x/report.pdf") == 630.0  # 10%, at most 30 s
    assert pipeline.parse_deadline_s(5.0, "/x/report.pdf") == 7.0  # at least 2 s
    assert pipeline.parse_deadline_s(5.0, "/x/corpus.JSONL") is None  # many documents in one job: no limit


def test_a_worker_that_cannot_start_fails_the_run_with_the_reason(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    from rag.errors import RagError

    settings = make_settings("ingest.workers=1")
    config = pipeline._WorkerConfig("/nonexistent/model", 256, settings, parent_pid=os.getpid())
    jobs: list[tuple[str, dict[str, str]]] = [(str(p), {}) for p in sorted(SAMPLES.iterdir())]
    with pytest.raises(RagError, match=r"a parse worker could not start: .*nonexistent"):
        list(
            pipeline.parse_in_workers(
                jobs, 1, pipeline._init_pool_worker, (config,), pipeline.parse_in_worker,
                lookahead=2, deadline_s=lambda path: None, lost=lambda p, r: (p, r), stats=PoolStats(),
            )
        )  # fmt: skip


def test_the_report_says_how_busy_each_stage_was(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    settings = make_settings("ingest.workers=2")
    with build_store(settings) as store:
        report = ingest_paths([docs], settings, store, embedder)
    assert report.report_path is not None
    stages = report.stages
    assert set(stages) == {"parse", "embed", "store"}
    assert stages["parse"].lanes == 2 and stages["embed"].lanes == 1
    assert stages["parse"].busy_s == report.seconds_parse and stages["embed"].busy_s == report.seconds_embed
    for use in stages.values():
        assert 0.0 <= use.share <= 1.0
        assert use.idle_s == pytest.approx(use.lanes * report.seconds_total - use.busy_s, abs=0.01)
    assert stages["embed"].chunks_per_s == round(report.chunks_written / report.seconds_embed, 1)
    assert report.waits["workers_starting"] > 0, "two workers were spawned and loaded their tokenizer"
    assert set(report.waits) == {
        "embedder_waiting_for_parse", "workers_starting", "workers_waiting_for_embedder", "workers_without_work",
    }  # fmt: skip
    saved = json.loads(Path(report.report_path).read_text())
    assert saved["stages"]["parse"]["lanes"] == 2 and saved["waits"] == report.waits


def test_a_copy_within_one_run_is_the_later_path_whatever_finishes_first(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    original = sorted(docs.iterdir())[0]
    shutil.copy(original, docs / ("z-copy" + original.suffix))
    settings = make_settings("ingest.workers=2")
    with build_store(settings) as store:
        report = ingest_paths([docs], settings, store, embedder)
    assert [(Path(d.path).name, d.reason) for d in report.duplicates] == [
        ("z-copy" + original.suffix, f"same content as {original.resolve()}: not indexed twice")
    ]
