"""The HTTP API of `rag serve` over samples/ ingested with the bundled embedder.

FastAPI's TestClient drives the routes in-process; one test runs a real uvicorn server on a free port and asks it
with the official `openai` client, as Open WebUI or a company script would.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.config import GeneratorSettings
from rag.generation import GenerationOptions, Message, TokenStream
from tests.conftest import SAMPLES
from tests.rag.test_answering import ScriptedGenerator

QUESTION = "How many days of paid leave do employees get?"
OFF_TOPIC = "Who won the 1998 football world cup final?"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[Any, Any]]:
    """samples/ ingested once; yields (app, settings). Answers are quoted (answer.mode=auto with the bundled model)."""
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    data = tmp_path_factory.mktemp("service")
    settings = load_settings("test", [f"data_dir={data}", "answer.cache=false"])
    store = build_store(settings)
    report = ingest_paths([SAMPLES], settings, store, embedder)
    assert report.files_ingested == 3
    app = create_app(settings, store=store, embedder=embedder, workers=2)
    yield app, settings
    store.close()


@pytest.fixture(scope="module")
def client(served: tuple[Any, Any]) -> Iterator[TestClient]:
    app, _ = served
    with TestClient(app) as c:  # runs the lifespan: models warm up in the pool
        yield c


def chat(client: TestClient, settings: Any, question: str, **extra: Any) -> Any:
    body = {"model": settings.store.collection, "messages": [{"role": "user", "content": question}], **extra}
    return client.post("/v1/chat/completions", json=body)


def wait_ready(client: TestClient) -> dict[str, Any]:
    for _ in range(600):  # warm-up is a background job; the models here are already loaded, so this is quick
        r = client.get("/readyz")
        if r.status_code == 200:
            return dict(r.json())
        assert r.json()["problems"] == ["models are loading"], r.json()
        threading.Event().wait(0.1)
    raise AssertionError("readyz never became ready")


def test_health_and_readiness(client: TestClient, served: tuple[Any, Any]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = wait_ready(client)
    assert ready["ready"] and ready["collections"] == 1 and ready["answer_mode"] == "extract"


def test_models_lists_the_collections(client: TestClient, served: tuple[Any, Any]) -> None:
    _, settings = served
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == [settings.store.collection]
    assert data[0]["object"] == "model" and data[0]["chunks"] > 0 and data[0]["created"] > 1_700_000_000


def test_answer_quotes_28_days_and_cites_the_handbook(client: TestClient, served: tuple[Any, Any]) -> None:
    _, settings = served
    r = chat(client, settings, QUESTION)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == settings.store.collection
    text = body["choices"][0]["message"]["content"]
    assert "28" in text
    assert body["refused"] is False and body["mode"] == "extract"
    cited = body["citations"]
    assert cited and cited[0]["source"].endswith("employee-handbook.md")
    assert cited[0]["chunk_id"] and "Paid leave" in " ".join(cited[0]["section"])
    # The quoted span is the answer's own text, found at its offsets in the cited chunk.
    quote = cited[0]["quotes"][0]
    assert quote["text"] in text and quote["end"] > quote["start"]


def test_follow_up_uses_the_history(client: TestClient, served: tuple[Any, Any]) -> None:
    _, settings = served
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "28 days."},
        {"role": "user", "content": [{"type": "text", "text": "And how many can be carried over?"}]},
    ]
    r = client.post("/v1/chat/completions", json={"model": settings.store.collection, "messages": messages})
    assert r.status_code == 200, r.text
    # Quoted answers search with the previous question followed by the follow-up (RagPipeline.condense).
    assert r.json()["query"] == f"{QUESTION} And how many can be carried over?"


def test_off_topic_question_is_refused(client: TestClient, served: tuple[Any, Any]) -> None:
    _, settings = served
    body = chat(client, settings, OFF_TOPIC).json()
    assert body["refused"] is True and body["refusal_reason"] in ("evidence", "answerability")
    assert body["citations"] == []
    metrics = client.get("/metrics").text
    assert 'rag_refusals_total{collection="documents",reason="' in metrics


def test_stream_chunks_concatenate_to_the_answer(client: TestClient, served: tuple[Any, Any]) -> None:
    _, settings = served
    whole = chat(client, settings, QUESTION).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": settings.store.collection,
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == whole["choices"][0]["message"]["content"] and "28" in text
    final = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"] == "stop")
    assert final["citations"] == whole["citations"] and final["refused"] is False
    assert events[-1]["choices"] == [] and "total_tokens" in events[-1]["usage"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "documents", "messages": []}, "messages"),
        ({"model": "documents", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": "documents", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
        ({"model": "documents", "messages": [{"role": "assistant", "content": "hi"}]}, "messages.0.role"),
        ({"model": "documents", "messages": [{"role": "user", "content": "hi"}], "filters": ["nope=1"]}, "filters"),
    ],
)
def test_malformed_request_is_400_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(field), error
    assert error["type"] == "invalid_request_error"


def test_unknown_collection_is_404(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and "'nope'" in error["message"] and "documents" in error["message"]
    assert client.post("/v1/retrieve", json={"query": "leave", "collection": "nope"}).status_code == 404


def test_retrieve_ranks_chunks_with_stage_scores(client: TestClient, served: tuple[Any, Any]) -> None:
    r = client.post("/v1/retrieve", json={"query": "paid leave days", "top_k": 3})
    assert r.status_code == 200, r.text
    chunks = r.json()["chunks"]
    assert [c["rank"] for c in chunks] == [1, 2, 3]
    assert chunks[0]["source"].endswith("employee-handbook.md")
    assert set(chunks[0]["stage_scores"]) == {"fusion"}
    dense = client.post("/v1/retrieve", json={"query": "paid leave days", "top_k": 3, "mode": "dense"}).json()
    assert dense["mode"] == "dense" and set(dense["chunks"][0]["stage_scores"]) == {"dense"}
    # A filter (as `rag query --filter`) keeps only the matching documents.
    wide = client.post("/v1/retrieve", json={"query": "paid leave days", "top_k": 50}).json()["chunks"]
    source = next(c["source"] for c in wide if not c["source"].endswith("employee-handbook.md"))
    only = client.post("/v1/retrieve", json={"query": "paid leave days", "filters": [f"source={source}"]}).json()
    assert only["chunks"] and {c["source"] for c in only["chunks"]} == {source}
    assert client.post("/v1/retrieve", json={"query": "x", "top_k": 0}).json()["error"]["param"] == "top_k"


def test_metrics_count_requests(client: TestClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'rag_requests_total{endpoint="/healthz",method="GET",status="200"}' in text
    assert 'rag_request_seconds_bucket{endpoint="/healthz"' in text
    assert 'rag_answers_total{collection="documents",mode="extract"}' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any, **options: Any) -> Iterator[str]:
    """`app` under a real uvicorn server on a free localhost port, in a thread; yields its base URL. `options` go to
    uvicorn.Config (e.g. rag.service.app.uvicorn_options, as `rag serve` passes them)."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):  # until uvicorn has bound the port and run the startup
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class EndlessGenerator(ScriptedGenerator):
    """Says "leave" forever, a word per delta, until its stream is stopped or closed; records when its loop ends."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = GeneratorSettings(model="endless")
        self.streams: list[TokenStream] = []
        self.released = threading.Event()  # the model's loop ended (a real backend releases its lock here)

    @property
    def name(self) -> str:
        return "endless"

    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        self.streams.append(stream)
        try:
            while not stream._stop.is_set():
                stream._stop.wait(0.01)  # a token's worth of work
                yield " leave"
        finally:
            self.released.set()


def test_client_leaving_mid_stream_stops_generation(served: tuple[Any, Any]) -> None:
    import httpx

    from rag.config import load_settings
    from rag.service import create_app

    base, _ = served
    service = base.state.service
    settings = load_settings(
        "test",
        [f"data_dir={service.settings.data_dir}", "answer.mode=generate", "answer.cache=false"],
    )
    generator = EndlessGenerator()
    app = create_app(settings, store=service.store, embedder=service.embedder, generator=generator, workers=2)
    body = {"model": settings.store.collection, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            deltas = 0
            for line in r.iter_lines():
                deltas += '"content": " leave"' in line
                if deltas == 3:
                    break  # the client leaves; the connection closes
        # Without the disconnect handling the generator would run forever: these waits would fail, not pass late.
        assert generator.released.wait(30) and generator.streams[0]._stop.is_set()
        metrics = client.get("/metrics").text
        assert 'rag_stream_disconnects_total{endpoint="/v1/chat/completions"} 1.0' in metrics


def test_openai_client_against_a_running_server(served: tuple[Any, Any]) -> None:
    import openai

    app, settings = served
    with running(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [settings.store.collection]
        completion = client.chat.completions.create(
            model=settings.store.collection, messages=[{"role": "user", "content": QUESTION}]
        )
        assert "28" in (completion.choices[0].message.content or "")
        extra = completion.model_extra or {}
        assert extra["refused"] is False
        assert extra["citations"][0]["source"].endswith("employee-handbook.md")
        chunks = list(
            client.chat.completions.create(
                model=settings.store.collection, messages=[{"role": "user", "content": QUESTION}], stream=True
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == completion.choices[0].message.content
        assert (chunks[-1].model_extra or {})["citations"] == extra["citations"]
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": QUESTION}])


@pytest.mark.parametrize(("overrides", "threads"), [((), 1), (("embedder.threads=2",), 2)])
def test_the_servers_embedder_uses_one_torch_thread_unless_configured(
    tmp_path: Any, overrides: tuple[str, ...], threads: int
) -> None:
    from rag.config import load_settings
    from rag.service import create_app

    settings = load_settings("test", [f"data_dir={tmp_path}", *overrides])
    app = create_app(settings)  # nothing loads before the lifespan starts
    service = app.state.service
    try:
        assert service.embedder.settings.threads == threads
        assert settings.embedder.threads == (None if not overrides else 2)  # the caller's settings are not changed
    finally:
        service.store.close()
