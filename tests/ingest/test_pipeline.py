"""Ingest end to end on real files: incremental, change, prune, bad input, model mismatch, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import ingest_paths, load_state
from rag.errors import EmbedderMismatchError
from rag.factory import build_store
from tests.conftest import EXAMPLE_DOCS, REPO_ROOT, SAMPLES, SCIFACT, kill_once_chunks_are_stored, require, run_rag

pytestmark = pytest.mark.integration


def _folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    return docs


def _ingest(settings: Any, embedder: Any, paths: list[Path], **kwargs: Any) -> Any:
    with build_store(settings) as store:
        return ingest_paths(paths, settings, store, embedder, **kwargs)


def _chunks(settings: Any) -> dict[str, dict[str, Any]]:
    with build_store(settings) as store:
        return dict(store.scroll(settings.store.collection))


def test_second_run_embeds_nothing_and_a_change_replaces_old_chunks(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _folder(tmp_path)
    settings = make_settings()
    first = _ingest(settings, embedder, [docs])
    assert (first.files_seen, first.files_ingested, first.files_failed) == (3, 3, 0)
    assert first.chunks_written == len(_chunks(settings)) > 3
    report = json.loads(Path(first.report_path).read_text())
    assert report["chunks_written"] == first.chunks_written
    assert report["ingested"] == sorted(str(p.resolve()) for p in docs.iterdir()), "each file's outcome"

    again = _ingest(settings, embedder, [docs])
    assert (again.files_unchanged, again.chunks_written, again.index_version) == (3, 0, first.index_version)
    assert again.ingested == ()

    handbook = docs / "employee-handbook.md"
    handbook.write_text(handbook.read_text().replace("28 days", "30 days") + "\n## Parental leave\n\nSixteen weeks.\n")
    changed = _ingest(settings, embedder, [docs])
    assert (changed.files_ingested, changed.files_unchanged) == (1, 2)
    assert changed.ingested == (str(handbook.resolve()),)
    chunks = _chunks(settings)
    mine = [p for p in chunks.values() if p["source"] == str(handbook.resolve())]
    assert len({p["content_hash"] for p in mine}) == 1, "no stale chunk of the old version"
    assert len(mine) == mine[0]["chunk_count"]
    assert any("30 days" in p["text"] for p in mine) and not any("28 days" in p["text"] for p in mine)
    assert len(chunks) == len(set(chunks))


def test_deleted_files_leave_only_with_prune(tmp_path: Path, make_settings: Callable[..., Any], embedder: Any) -> None:
    docs = _folder(tmp_path)
    settings = make_settings()
    _ingest(settings, embedder, [docs])
    gone = docs / "security-policy.txt"
    gone.unlink()
    kept = _ingest(settings, embedder, [docs])
    assert kept.documents_missing == 1 and kept.documents_removed == 0
    assert any(p["source"] == str(gone.resolve()) for p in _chunks(settings).values())
    pruned = _ingest(settings, embedder, [docs], prune=True)
    assert pruned.documents_removed == 1
    sources = {p["source"] for p in _chunks(settings).values()}
    assert str(gone.resolve()) not in sources and len(sources) == 2


def test_bad_files_are_reported_and_never_remove_stored_chunks(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    require(EXAMPLE_DOCS)
    docs = _folder(tmp_path)
    memo = docs / "fake-memo.pdf"
    shutil.copy(EXAMPLE_DOCS / "pdf" / "fake-memo.pdf", memo)
    settings = make_settings()
    _ingest(settings, embedder, [docs])
    before = _chunks(settings)
    assert any(p["source"] == str(memo.resolve()) for p in before.values())
    (docs / "empty.txt").write_bytes(b"")
    (docs / "tool.exe").write_bytes(b"MZ\x90\x00")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n this is not really a pdf")
    (docs / "broken.docx").write_bytes(b"PK\x03\x04 truncated zip")
    shutil.copy(EXAMPLE_DOCS / "pdf" / "password.pdf", docs / "password.pdf")
    memo.write_bytes(memo.read_bytes()[:300])  # a stored document is truncated on disk
    report = _ingest(settings, embedder, [docs], prune=True)
    failed = {Path(f.path).name: f.reason for f in report.failures}
    assert {"empty.txt", "tool.exe", "broken.pdf", "broken.docx", "password.pdf", "fake-memo.pdf"} <= set(failed)
    assert all(reason.strip() for reason in failed.values())
    assert "empty" in failed["empty.txt"] and ".exe" in failed["tool.exe"]
    assert "password" in failed["password.pdf"].lower()
    # The old, good chunks of the file that went bad are still there, even with --prune.
    after = _chunks(settings)
    assert set(before) == set(after)
    assert report.files_unchanged == 3


def test_another_embedder_is_refused(tmp_path: Path, make_settings: Callable[..., Any], embedder: Any) -> None:
    docs = _folder(tmp_path)
    settings = make_settings()
    _ingest(settings, embedder, [docs])
    with build_store(settings) as store:
        meta = store.get_metadata("documents")
        meta["embedder"] = {**meta["embedder"], "name": "intfloat/e5-small-v2", "fingerprint": "0123"}
        store.set_metadata("documents", meta)
    with pytest.raises(EmbedderMismatchError, match="e5-small-v2"):
        _ingest(settings, embedder, [docs])
    env = {**os.environ, "RAG_DATA_DIR": str(settings.data_dir)}
    proc = run_rag(["query", "paid leave", "--config", "test"], env)
    assert proc.returncode == 2 and "e5-small-v2" in proc.stderr and "Traceback" not in proc.stderr


def test_parallel_workers_give_the_same_chunks(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _folder(tmp_path)
    serial = make_settings(data_dir=tmp_path / "serial")
    parallel = make_settings("ingest.workers=2", data_dir=tmp_path / "parallel")
    _ingest(serial, embedder, [docs])
    _ingest(parallel, embedder, [docs])
    a, b = _chunks(serial), _chunks(parallel)
    assert set(a) == set(b)
    assert all(a[k]["text"] == b[k]["text"] for k in a)


def _corpus_files(folder: Path, n: int) -> None:
    folder.mkdir()
    with (SCIFACT / "corpus.jsonl").open() as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            rec = json.loads(line)
            (folder / f"{rec['_id']}.txt").write_text(f"{rec['title']}\n\n{rec['text']}\n")


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    require(SCIFACT)
    docs = tmp_path / "docs"
    _corpus_files(docs, 60)
    base = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = ["ingest", str(docs), "--config", "test", "--progress", "plain", "--set", "ingest.embed_batch_chunks=8"]

    clean_env = {**base, "RAG_DATA_DIR": str(tmp_path / "clean")}
    assert run_rag(args, clean_env).returncode == 0

    killed_env = {**base, "RAG_DATA_DIR": str(tmp_path / "killed")}
    kill_once_chunks_are_stored(args, killed_env)

    resumed = run_rag([*args, "--json"], killed_env)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["files_unchanged"] > 0, "documents finished before the kill are not redone"

    from rag.config import load_settings

    states = []
    for name in ("clean", "killed"):
        settings = load_settings("test", [f"data_dir={tmp_path / name}"])
        with build_store(settings) as store:
            points = dict(store.scroll("documents", fields=["document_id", "content_hash", "chunk_index", "text"]))
            states.append(points)
            assert all(s.complete for s in load_state(store, "documents").values())
    clean, killed = states
    assert set(clean) == set(killed) and len(killed) == len(clean)
    assert all(clean[k] == killed[k] for k in clean)


def test_a_big_jsonl_corpus_reports_progress_while_it_is_written(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    require(SCIFACT)
    corpus = tmp_path / "corpus.jsonl"
    with (SCIFACT / "corpus.jsonl").open() as f:
        corpus.write_text("".join(line for _, line in zip(range(60), f, strict=False)))
    settings = make_settings("ingest.embed_batch_chunks=16")
    events: list[Any] = []
    report = _ingest(settings, embedder, [corpus], progress=events.append)
    written = [e.chunks_written for e in events]
    assert written == sorted(written) and written[-1] == report.chunks_written
    # One file, yet an event at each written batch (16 chunks or a little more: documents are not split).
    during = {e.chunks_written for e in events if e.files_done == 0 and e.current == str(corpus.resolve())}
    assert report.chunks_written > 32 and len(during) >= report.chunks_written // 32
    assert report.ingested == (str(corpus.resolve()),)
    # Parsed again, but every record is unchanged: the file is not reported as ingested.
    again = _ingest(settings, embedder, [corpus])
    assert (again.ingested, again.files_unchanged, again.chunks_written) == ((), 1, 0)


def test_a_symlink_loop_is_skipped_with_a_reason_and_the_rest_ingested(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _folder(tmp_path)
    (docs / "self").symlink_to("self")  # `ln -s self d/self`: resolving it raised RuntimeError for the whole run
    (docs / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    report = _ingest(make_settings(), embedder, [docs])
    assert report.files_ingested == 3
    failed = {Path(f.path).name: f.reason for f in report.failures}
    assert "symlink loop" in failed["self"] and "dangling symlink" in failed["gone.txt"]


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process parents from /proc")
def test_sigkill_of_ingest_leaves_no_parse_worker_alive(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        for sample in SAMPLES.iterdir():
            (docs / f"{i}-{sample.name}").write_text(sample.read_text() + f"\n\nCopy {i}.\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAG_DATA_DIR": str(tmp_path / "data")}
    args = ["ingest", str(docs), "--config", "test", "--progress", "none", "--set", "ingest.workers=2"]
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", *args], env=env, cwd=REPO_ROOT)
    children: list[int] = []
    deadline = time.monotonic() + 300
    try:
        while len(children) < 2 and proc.poll() is None:  # the two workers (and multiprocessing's tracker)
            assert time.monotonic() < deadline, "ingest never started its parse workers"
            time.sleep(0.2)
            children = [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]
        assert proc.poll() is None, "ingest finished before the test could kill it"
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # A worker that outlives its parent never ends (it holds both ends of its pipes): wait for
        # the parent-death signal, or for the watchdog's next check, with a generous bound.
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [c for c in children if _alive(c)]
        assert survivors == [], f"children of the killed ingest still running: {survivors}"
    finally:
        for c in children:
            if _alive(c):
                os.kill(c, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
