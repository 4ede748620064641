"""Streams and slow clients of `rag serve` under a real uvicorn server: an ingest job's progress as server-sent
events, a streaming chat reader that stops reading, an upload that trickles in, and uvicorn's limits from settings.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rag.generation import GenerationOptions, Message, TokenStream
from tests.conftest import SAMPLES
from tests.service.test_api import QUESTION, EndlessGenerator, running


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` under uvicorn with the options `rag serve` uses (rag.service.app.uvicorn_options), in a thread."""
    from rag.service.app import uvicorn_options

    with running(app, **uvicorn_options(app.state.service.settings)) as url:
        yield url


class GatedIngest:
    """ingest.pipeline's real ingest, started only when the test opens the gate (so a stream sees the job live)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def __call__(self, paths: Sequence[Path], *args: Any, **kwargs: Any) -> Any:
        from ingest.pipeline import ingest_paths

        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")
        return ingest_paths(paths, *args, **kwargs)


@pytest.fixture
def uploads(tmp_path: Path, embedder: Any) -> Iterator[tuple[Any, GatedIngest]]:
    """An app with ingest turned on (gated) over a fresh data folder; heartbeats every 0.2 s."""
    from ingest.loaders import SUPPORTED_EXTENSIONS
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app
    from rag.service.jobs import IngestRunner

    settings = load_settings(
        "test", [f"data_dir={tmp_path / 'data'}", "answer.cache=false", "service.events_heartbeat_s=0.2"]
    )
    store = build_store(settings)
    gated = GatedIngest()
    app = create_app(
        settings, store=store, embedder=embedder, workers=2, ingest=IngestRunner(gated, frozenset(SUPPORTED_EXTENSIONS))
    )
    yield app, gated
    store.close()


def _upload(client: Any, collection: str, paths: list[Path]) -> dict[str, Any]:
    assert client.post("/v1/collections", json={"name": collection}).status_code == 201
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    r = client.post(f"/v1/collections/{collection}/documents", files=files)
    assert r.status_code == 202, r.text
    return dict(r.json())


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, data) per SSE event; ("comment", text) per comment line."""
    name = None
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            assert name is not None, f"data without an event name: {line}"
            yield name, json.loads(line[len("data: ") :])
            name = None


def test_job_events_follow_an_upload_of_samples_to_its_end(uploads: tuple[Any, GatedIngest]) -> None:
    import httpx

    app, gated = uploads
    files = sorted(SAMPLES.iterdir())
    with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        job = _upload(client, "samples", files)
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for name, data in _events(r.iter_lines()):
                events.append((name, data))
                if name == "comment":
                    gated.gate.set()  # the stream is open and quiet: let the ingest run
        # The loop above ended because the server ended the stream after the final event.
        states = [name for name, _ in events if name != "comment"]
        assert states[0] in ("queued", "running") and states[-1] == "done" and "running" in states
        assert ("comment", "keep-alive") in events  # the heartbeat while the job waited
        progress = [data for name, data in events if name != "comment"]
        done = [p["files_done"] for p in progress]
        assert done == sorted(done) and done[-1] == len(files)
        # One event per change: no two consecutive events carry the same progress.
        keys = [(n, p["files_done"], p["chunks"], p["current"]) for n, p in zip(states, progress, strict=True)]
        assert all(a != b for a, b in itertools.pairwise(keys))
        final = progress[-1]
        assert final["chunks"] > 0 and final["chunks"] == client.get("/v1/collections/samples").json()["chunks"]
        polled = client.get(f"/v1/jobs/{job['id']}").json()  # the poll stays, and says the same
        assert {k: polled[k] for k in final} == final
        # A finished job's stream is its one final event.
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
            assert [n for n, _ in _events(r.iter_lines())] == ["done"]
        assert client.get("/v1/jobs/job-nope/events").status_code == 404


def test_a_client_leaving_the_job_events_stops_its_stream(uploads: tuple[Any, GatedIngest]) -> None:
    import httpx

    app, gated = uploads
    book = app.state.service.jobs.book
    with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        job = _upload(client, "samples", [SAMPLES / "security-policy.txt"])
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
            first = next(_events(r.iter_lines()))
            assert first[0] in ("queued", "running") and book.watching(job["id"]) == 1
        # The client left while the job waits: the server's generator ends and stops watching the job.
        for _ in range(600):  # bounded only so a generator that never stops fails the test instead of hanging it
            if book.watching(job["id"]) == 0:
                break
            threading.Event().wait(0.05)
        assert book.watching(job["id"]) == 0
        gated.gate.set()


class FloodGenerator(EndlessGenerator):
    """Says a 1 kB delta at a time, forever, until its stream is stopped: fills a reader's buffers in moments."""

    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        self.streams.append(stream)
        try:
            while not stream._stop.is_set():
                yield " leave" * 170
        finally:
            self.released.set()


def test_a_reader_that_stops_reading_is_cut_off_and_frees_the_generator(tmp_path: Path, embedder: Any) -> None:
    import httpx

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    settings = load_settings(
        "test",
        [f"data_dir={tmp_path}", "answer.mode=generate", "answer.cache=false", "service.stream_send_timeout_s=1"],
    )
    store = build_store(settings)
    ingest_paths([SAMPLES], settings, store, embedder)
    generator = FloodGenerator()
    app = create_app(settings, store=store, embedder=embedder, generator=generator, workers=2)
    body = {"model": settings.store.collection, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    payload = json.dumps(body).encode()
    try:
        with serving(app) as url, socket.socket() as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, and never read from it
            reader.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            reader.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            # Without the send timeout the stream waits for the reader forever, holding the generator: this wait
            # would fail, not pass late.
            assert generator.released.wait(120) and generator.streams[0]._stop.is_set()
            with httpx.Client(base_url=url, timeout=60) as client:
                metrics = client.get("/metrics").text
            assert 'rag_stream_send_timeouts_total{endpoint="/v1/chat/completions"} 1.0' in metrics
    finally:
        store.close()


def test_an_upload_that_trickles_in_is_cut_off_with_408(tmp_path: Path, embedder: Any) -> None:
    import httpx

    from ingest.loaders import SUPPORTED_EXTENSIONS
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app
    from rag.service.jobs import IngestRunner

    settings = load_settings("test", [f"data_dir={tmp_path}", "service.upload_timeout_s=1"])
    store = build_store(settings)
    app = create_app(
        settings,
        store=store,
        embedder=embedder,
        workers=2,
        ingest=IngestRunner(ingest_paths, frozenset(SUPPORTED_EXTENSIONS)),
    )
    try:
        with serving(app) as url, socket.socket() as sender:
            with httpx.Client(base_url=url, timeout=60) as client:
                assert client.post("/v1/collections", json={"name": "slow"}).status_code == 201
            sender.settimeout(60)  # bounds only a server that never answers
            sender.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            sender.sendall(
                b"POST /v1/collections/slow/documents HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
            )  # and then nothing more of the promised 100 kB
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                got = sender.recv(65536)
                if not got:
                    break
                answer += got
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert "service.upload_timeout_s=1" in json.loads(body)["error"]["message"]
            with httpx.Client(base_url=url, timeout=60) as client:
                assert "rag_upload_timeouts_total 1.0" in client.get("/metrics").text
    finally:
        store.close()


def test_uvicorn_limits_come_from_settings(tmp_path: Path, embedder: Any) -> None:
    import httpx

    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app
    from rag.service.app import uvicorn_options

    settings = load_settings("test", [f"data_dir={tmp_path}", "service.max_header_kb=8", "service.keep_alive_s=3"])
    options = uvicorn_options(settings)
    assert options["timeout_keep_alive"] == 3 and options["h11_max_incomplete_event_size"] == 8192
    store = build_store(settings)
    app = create_app(settings, store=store, embedder=embedder, workers=2)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/healthz", headers={"X-Big": "x" * 4000}).status_code == 200
            # A head that grows past 8 KiB without ending (h11 checks what it has buffered of an unfinished head).
            with socket.socket() as sender:
                sender.settimeout(60)  # bounds only a server that never answers
                sender.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
                sender.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"x" * 10_000)
                assert sender.recv(65536).startswith(b"HTTP/1.1 400")
    finally:
        store.close()
