"""Monitoring of `rag serve`: OpenTelemetry spans per stage (in-memory exporter), Prometheus stage and drift metrics,
GET /v1/monitoring with the feedback file's thumbs-down rate, JSON logs carrying the echoed X-Request-ID.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SAMPLES

QUESTION = "How many days of paid leave do employees get?"
OFF_TOPIC = "Who won the 1998 football world cup final?"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[TestClient, Any, Path]]:
    """samples/ ingested; an app whose spans go to an in-memory exporter. Yields (client, exporter, data dir)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    data = tmp_path_factory.mktemp("monitoring")
    settings = load_settings("test", [f"data_dir={data}", "answer.cache=false", "service.drift_window=10"])
    store = build_store(settings)
    ingest_paths([SAMPLES], settings, store, embedder)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, store=store, embedder=embedder, workers=2, tracer_provider=provider)
    with TestClient(app) as client:
        yield client, exporter, data
    store.close()


def ask(client: TestClient, question: str, **headers: str) -> Any:
    body = {"model": "documents", "messages": [{"role": "user", "content": question}]}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def test_an_answer_is_a_chat_span_with_a_child_per_stage(traced: tuple[TestClient, Any, Path]) -> None:
    client, exporter, _ = traced
    exporter.clear()
    r = ask(client, QUESTION, **{"X-Request-ID": "req-trace-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-trace-1"
    spans = exporter.get_finished_spans()
    chat = next(s for s in spans if s.name == "chat")
    assert chat.attributes["rag.collection"] == "documents" and chat.attributes["rag.refused"] is False
    assert chat.attributes["http.request_id"] == "req-trace-1"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == chat.context.span_id]
    names = [s.name for s in sorted(children, key=lambda s: s.start_time)]
    # A quoted answer: no generate or verify stage; the stages in the order they ran.
    assert names == ["condense", "retrieve", "evidence", "extract"]
    timings = r.json()["timings_ms"]
    for child in children:  # each child lasts what the pipeline measured for its stage
        assert abs((child.end_time - child.start_time) / 1e6 - timings[child.name]) < 0.01
        assert chat.start_time <= child.start_time and child.end_time <= chat.end_time


def test_retrieve_span_and_stage_metrics(traced: tuple[TestClient, Any, Path]) -> None:
    client, exporter, _ = traced
    exporter.clear()
    assert client.post("/v1/retrieve", json={"query": "paid leave", "top_k": 3}).status_code == 200
    retrieve = next(s for s in exporter.get_finished_spans() if s.name == "retrieve")
    kids = {s.name for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == retrieve.context.span_id}
    assert {"embed_dense", "embed_sparse", "search"} <= kids
    metrics = client.get("/metrics").text
    assert 'rag_stage_seconds_count{stage="search"}' in metrics
    assert "rag_ingest_queue_depth 0.0" in metrics


def test_tracing_is_off_unless_an_endpoint_is_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rag.config import load_settings
    from rag.service.telemetry import build_tracer_provider

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert build_tracer_provider(load_settings("test", [f"data_dir={tmp_path}"])) is None
    provider = build_tracer_provider(
        load_settings("test", [f"data_dir={tmp_path}", "service.otlp_endpoint=http://127.0.0.1:9"])
    )
    assert provider is not None
    exporter = provider._active_span_processor._span_processors[0].span_exporter
    assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    provider.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    env_provider = build_tracer_provider(load_settings("test", [f"data_dir={tmp_path}"]))
    assert env_provider is not None
    env_provider.shutdown()


def test_monitoring_reports_drift_and_the_feedback_files_thumbs_down(traced: tuple[TestClient, Any, Path]) -> None:
    client, _, data = traced
    before = client.get("/v1/monitoring").json()["since_start"]["answers"]
    assert ask(client, OFF_TOPIC).json()["refused"] is True
    assert ask(client, QUESTION).json()["refused"] is False
    # The format ui/feedback.py appends: one JSON object a line with "rating" up or down.
    lines = [{"rating": "down", "question": "a"}, {"rating": "up", "question": "b"}, {"rating": "down"}]
    (data / "feedback.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    report = client.get("/v1/monitoring").json()
    assert report["window"] == 10 and report["since_start"]["answers"] == before + 2
    recent = report["recent"]
    assert 0 < recent["refusal_rate"] < 1 and 0 < recent["mean_evidence"] < 1
    # The off-topic question is far from every chunk (its best cosine is below service.far_evidence).
    assert recent["far_query_share"] > 0
    assert report["feedback"]["ratings"] == 3 and report["feedback"]["thumbs_down_rate"] == pytest.approx(2 / 3)
    assert report["feedback"]["unreadable_lines"] == 1
    assert report["ingest"] == {"queued": 0, "running": []}
    metrics = client.get("/metrics").text
    assert "rag_drift_thumbs_down_rate 0.6666" in metrics
    assert f"rag_drift_refusal_rate {recent['refusal_rate']}" in metrics


def test_json_logs_carry_the_request_id(traced: tuple[TestClient, Any, Path]) -> None:
    from rag.service.telemetry import JsonFormatter

    client, _, _ = traced
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("rag.service.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        r = client.post("/v1/retrieve", json={"query": "paid leave"}, headers={"X-Request-ID": "abc-123"})
        fresh = client.get("/v1/models")
    finally:
        access.removeHandler(handler)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0]["request_id"] == "abc-123" == r.headers["x-request-id"]
    assert rows[0]["path"] == "/v1/retrieve" and rows[0]["status"] == 200 and rows[0]["duration_ms"] > 0
    # No header (or a header that is not a sane token): a fresh id, echoed.
    assert rows[1]["request_id"] == fresh.headers["x-request-id"] and len(rows[1]["request_id"]) == 32
    bad = client.get("/v1/models", headers={"X-Request-ID": "bad id\twith spaces"})
    assert bad.headers["x-request-id"] != "bad id\twith spaces"


def test_the_access_line_is_redacted_by_the_app_and_passes_the_log_filter(
    traced: tuple[TestClient, Any, Path],
) -> None:
    """The app redacts its access line itself (cached per value, off the filter's per-line Presidio pass) and marks
    it so rag.privacy's filter passes it: an address in a path still never reaches the log."""
    from rag.privacy import RedactingFilter
    from rag.service.telemetry import JsonFormatter

    client, _, _ = traced
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    seen: list[str] = []
    redacting = RedactingFilter(lambda text: seen.append(text) or text)  # type: ignore[func-returns-value]
    handler.addFilter(redacting)
    access = logging.getLogger("rag.service.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        for _ in range(2):
            assert client.get("/v1/collections/jo@example.com/documents").status_code in (400, 404)
    finally:
        access.removeHandler(handler)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["path"] for r in rows] == ["/v1/collections/<EMAIL>/documents"] * 2
    assert rows[0]["message"] == "GET /v1/collections/<EMAIL>/documents " + str(rows[0]["status"])
    assert "jo@example.com" not in out.getvalue()
    assert seen == []  # the filter had nothing left to do
