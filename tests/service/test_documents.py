"""Collections, uploads and ingest jobs over HTTP: samples/ uploaded through the API, ingested by ingest.pipeline
(the runner `rag serve` injects), answered from, listed, deleted and re-indexed; bad uploads and a restart mid-job.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import EXAMPLE_DOCS, SAMPLES, require


def _runner() -> Any:
    from ingest.loaders import SUPPORTED_EXTENSIONS
    from ingest.pipeline import ingest_paths
    from rag.service.jobs import IngestRunner

    return IngestRunner(ingest_paths, frozenset(SUPPORTED_EXTENSIONS))


@pytest.fixture
def make_client(tmp_path: Path, embedder: Any) -> Iterator[Callable[..., TestClient]]:
    """A started app over a fresh data folder (same folder on every call: a restart), with ingest turned on."""
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    opened: list[tuple[Any, Any]] = []

    def make(*overrides: str) -> TestClient:
        for client, store in opened:  # the previous server stops before the next opens the store
            client.__exit__(None, None, None)
            store.close()
        opened.clear()
        settings = load_settings("test", [f"data_dir={tmp_path / 'data'}", "answer.cache=false", *overrides])
        store = build_store(settings)
        app = create_app(settings, store=store, embedder=embedder, workers=2, ingest=_runner())
        client = TestClient(app)
        client.__enter__()
        opened.append((client, store))
        return client

    yield make
    for client, store in opened:
        client.__exit__(None, None, None)
        store.close()


def upload(client: TestClient, collection: str, paths: list[Path]) -> Any:
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    return client.post(f"/v1/collections/{collection}/documents", files=files)


def wait_job(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(3000):  # ingest of a few small files; the bound only stops a hung job from hanging the suite
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        threading.Event().wait(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_upload_ingest_answer_delete_reindex(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    r = client.post("/v1/collections", json={"name": "hr"})
    assert r.status_code == 201, r.text
    assert r.json()["chunks"] == 0 and r.json()["indexed"] is False
    assert client.post("/v1/collections", json={"name": "hr"}).status_code == 409
    assert [c["name"] for c in client.get("/v1/collections").json()["data"]] == ["hr"]
    # Declared but empty: chat says to upload, not that the collection is unknown.
    empty = client.post("/v1/chat/completions", json={"model": "hr", "messages": [{"role": "user", "content": "x"}]})
    assert empty.status_code == 404 and "no documents yet" in empty.json()["error"]["message"]

    samples = sorted(SAMPLES.iterdir())
    r = upload(client, "hr", samples)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["state"] in ("queued", "running") and queued["files"] == [p.name for p in samples]
    job = wait_job(client, queued["id"])
    assert job["state"] == "done", job
    assert job["progress"]["files_done"] == job["progress"]["files_total"] == 3
    assert job["files_ingested"] == 3 and job["errors"] == {} and job["chunks"] > 0

    described = client.get("/v1/collections/hr").json()
    assert described["documents"] == 3 and described["chunks"] == job["chunks"]
    assert described["embedder"]["name"] == "bundled:all-MiniLM-L6-v2" and described["jobs"] == []
    docs = client.get("/v1/collections/hr/documents").json()["data"]
    assert [d["name"] for d in docs] == [p.name for p in samples]
    assert all(d["indexed"] and d["complete"] and d["chunks"] > 0 for d in docs)

    question = {
        "model": "hr",
        "messages": [{"role": "user", "content": "How many days of paid leave do employees get?"}],
    }
    answer = client.post("/v1/chat/completions", json=question).json()
    assert "28" in answer["choices"][0]["message"]["content"]
    assert answer["citations"][0]["source"].endswith("uploads/hr/employee-handbook.md")

    # Uploading the same files again: nothing changed, nothing re-embedded.
    again = wait_job(client, upload(client, "hr", samples[:1]).json()["id"])
    assert again["state"] == "done" and again["chunks"] == 0 and again["files_unchanged"] == 1

    handbook = next(d for d in docs if d["name"] == "employee-handbook.md")
    r = client.delete("/v1/collections/hr/documents/employee-handbook.md")
    assert r.status_code == 200 and r.json()["chunks_deleted"] == handbook["chunks"]
    assert [d["name"] for d in client.get("/v1/collections/hr/documents").json()["data"]] == [
        p.name for p in samples if p.name != "employee-handbook.md"
    ]
    assert client.delete("/v1/collections/hr/documents/employee-handbook.md").status_code == 404
    refused = client.post("/v1/chat/completions", json=question).json()
    assert "28" not in refused["choices"][0]["message"]["content"]

    # Rebuild: every uploaded file embedded again into a fresh index.
    rebuilt = wait_job(client, client.post("/v1/collections/hr/reindex", json={"rebuild": True}).json()["id"])
    assert rebuilt["state"] == "done" and rebuilt["kind"] == "rebuild" and rebuilt["files_ingested"] == 2
    assert client.get("/v1/collections/hr").json()["documents"] == 2

    assert client.delete("/v1/collections/hr").status_code == 200
    assert client.get("/v1/collections").json()["data"] == []
    r = client.get("/v1/collections/hr")
    assert r.status_code == 404 and r.json()["error"]["param"] == "name"


def test_bad_uploads_and_unknown_ids(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client("service.max_upload_mb=0.01")  # ~10 KB
    assert client.post("/v1/collections", json={"name": "docs"}).status_code == 201

    bad = tmp_path / "notes.xyz"
    bad.write_text("text")
    r = upload(client, "docs", [bad])
    assert r.status_code == 415
    error = r.json()["error"]
    assert "notes.xyz" in error["message"] and ".xyz" in error["message"] and ".pdf" in error["message"]
    assert error["param"] == "files"

    big = tmp_path / "big.txt"
    big.write_text("word " * 10_000)  # 50 KB
    r = upload(client, "docs", [big])
    assert r.status_code == 413
    assert "service.max_upload_mb=0.01" in r.json()["error"]["message"]

    hidden = client.post("/v1/collections/docs/documents", files=[("files", ("../x.txt", b"x", "text/plain"))])
    assert hidden.status_code == 400 and "plain file name" in hidden.json()["error"]["message"]
    none = client.post("/v1/collections/docs/documents", files={"note": (None, "no file")})
    assert none.status_code == 400 and none.json()["error"]["param"] == "files"
    assert client.post("/v1/collections/docs/documents", json={"files": []}).status_code == 415
    # Nothing was stored by a refused upload.
    assert client.get("/v1/collections/docs/documents").json()["data"] == []

    r = upload(client, "nope", [SAMPLES / "security-policy.txt"])
    assert r.status_code == 404 and "POST /v1/collections" in r.json()["error"]["message"]
    r = client.get("/v1/jobs/job-unknown")
    assert r.status_code == 404 and "'job-unknown'" in r.json()["error"]["message"]
    r = client.delete("/v1/collections/nope")
    assert r.status_code == 404 and "'nope'" in r.json()["error"]["message"]
    assert client.post("/v1/collections", json={"name": "../etc"}).json()["error"]["param"] == "name"


def test_a_file_that_fails_is_reported_and_the_others_ingested(make_client: Callable[..., TestClient]) -> None:
    protected = require(EXAMPLE_DOCS / "password_protected.xlsx")
    client = make_client()
    client.post("/v1/collections", json={"name": "mixed"})
    job = wait_job(client, upload(client, "mixed", [protected, SAMPLES / "security-policy.txt"]).json()["id"])
    assert job["state"] == "done" and job["files_ingested"] == 1
    assert list(job["errors"]) == ["password_protected.xlsx"] and job["errors"]["password_protected.xlsx"]
    docs = client.get("/v1/collections/mixed/documents").json()["data"]
    assert {d["name"]: d["indexed"] for d in docs} == {"password_protected.xlsx": False, "security-policy.txt": True}


def test_restart_during_a_job_reports_it_failed_and_retry_completes(make_client: Callable[..., TestClient]) -> None:
    from rag.service.jobs import JobBook

    client = make_client()
    client.post("/v1/collections", json={"name": "hr"})
    job = wait_job(client, upload(client, "hr", [SAMPLES / "security-policy.txt"]).json()["id"])
    chunks = job["chunks"]
    # A server killed mid-job leaves the job 'running' in its file, and part of the chunks in the store.
    data = Path(client.app.state.service.settings.data_dir)  # type: ignore[attr-defined]
    book = JobBook(data.resolve() / "service" / "jobs.json")
    stored = book.get(job["id"])
    assert stored is not None
    book.update(stored, state="running", files_done=0, chunks=0)
    service = client.app.state.service  # type: ignore[attr-defined]
    from rag.store.base import Condition, Filter

    assert chunks >= 3
    service.store.delete("hr", Filter((Condition("chunk_index", any_of=(0, 1)),)))
    assert service.store.count("hr") == chunks - 2

    client = make_client()  # the restart
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["state"] == "failed" and failed["error"].startswith("interrupted")
    retry = client.post(f"/v1/jobs/{job['id']}/retry")
    assert retry.status_code == 202
    assert client.get("/v1/jobs").json()["data"][0]["id"] == retry.json()["id"]  # newest first
    retried = wait_job(client, retry.json()["id"])
    assert retried["state"] == "done" and retried["retry_of"] == job["id"]
    assert client.get("/v1/collections/hr").json()["chunks"] == chunks  # whole again
    assert client.post(f"/v1/jobs/{retried['id']}/retry").status_code == 409  # only failed jobs


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread niceness is a POSIX feature")
def test_ingest_runs_at_lower_priority_than_queries(tmp_path: Path) -> None:
    from rag.service.jobs import JobBook, JobRunner

    seen: list[int] = []

    def work(job: Any, progress: Any) -> Any:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        raise RuntimeError("stop here")

    runner = JobRunner(JobBook(tmp_path / "jobs.json"), work, nice=15)
    job = runner.submit("c", [tmp_path / "f.txt"])
    runner.wait_idle()
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen == [min(19, here + 15)] and here < 15
    assert job.state == "failed" and job.error == "RuntimeError: stop here"


def test_shutdown_records_unfinished_jobs_as_interrupted(tmp_path: Path) -> None:
    from rag.service.jobs import JobBook, JobRunner

    started, release = threading.Event(), threading.Event()

    def work(job: Any, progress: Any) -> Any:
        started.set()
        release.wait(30)
        raise RuntimeError("the store was closed under the job")

    runner = JobRunner(JobBook(tmp_path / "jobs.json"), work, nice=0)
    running = runner.submit("c", [tmp_path / "a.txt"])
    queued = runner.submit("c", [tmp_path / "b.txt"])
    assert started.wait(30)
    runner.shutdown()
    assert running.state == queued.state == "failed"
    assert running.error is not None and running.error.startswith(
        "interrupted: the server shut down while this job was running"
    )
    assert queued.error is not None and "was queued" in queued.error
    release.set()
    runner.wait_idle()
    assert queued.started_at is None  # never run after the shutdown
    # The file says the same after a restart.
    assert {j.id: j.state for j in JobBook(tmp_path / "jobs.json").all()} == {running.id: "failed", queued.id: "failed"}


def _edge_search_niceness() -> set[int]:
    task = Path("/proc/self/task")
    return {
        os.getpriority(os.PRIO_PROCESS, int(t.name))
        for t in task.iterdir()
        if (t / "comm").read_text().startswith("edge-search")
    }


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread niceness from Linux /proc")
def test_collections_created_by_an_upload_are_searched_at_query_priority(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client("service.ingest_nice=10", "store.kind=edge")
    client.post("/v1/collections", json={"name": "fresh"})
    assert wait_job(client, upload(client, "fresh", [SAMPLES / "security-policy.txt"]).json()["id"])["state"] == "done"
    assert client.post("/v1/retrieve", json={"query": "laptop", "collection": "fresh"}).status_code == 200
    # The shard's search threads start with the thread that creates it: a query thread, not the niced ingest one.
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert _edge_search_niceness() == {here}
