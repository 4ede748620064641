"""The CLI as a client of a running `rag serve` (RAG_SERVER_URL): ingest, ask, query and list through the server.

The server owns the embedded store; these commands would otherwise fail with "collection is open in another
process". A real uvicorn server on a free port, the bundled models, samples/ uploaded by `rag ingest`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rag.cli import main
from tests.conftest import SAMPLES
from tests.service.test_api import running
from tests.service.test_documents import _runner


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[str, Any]]:
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    data = tmp_path_factory.mktemp("served")
    settings = load_settings("test", [f"data_dir={data}", "answer.cache=false"])
    store = build_store(settings)
    app = create_app(settings, store=store, embedder=embedder, workers=2, ingest=_runner())
    with running(app) as url:
        for _ in range(600):  # readiness: the models are already loaded, so this is quick
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            threading.Event().wait(0.1)
        yield url, store
    store.close()


@pytest.fixture
def remote(server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    url, _ = server
    monkeypatch.setenv("RAG_SERVER_URL", url)
    return url


def test_ingest_ask_query_and_list_through_the_server(
    remote: str, server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, store = server
    assert main(["--config", "test", "ingest", str(SAMPLES), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 3 and [j["state"] for j in report["jobs"]] == ["done"]
    assert store.count("documents") > 0  # written by the server's process into its own store

    assert main(["--config", "test", "ask", "How many days of paid leave do employees get?"]) == 0
    out = capsys.readouterr().out
    answer, _, sources = out.partition("sources:")
    assert "28" in answer
    assert "employee-handbook.md" in sources

    assert main(["--config", "test", "query", "paid leave carry over", "--json"]) == 0
    chunks = json.loads(capsys.readouterr().out)["chunks"]
    assert chunks and chunks[0]["source"].endswith("employee-handbook.md")

    assert main(["--config", "test", "collections", "list"]) == 0
    assert capsys.readouterr().out.startswith("documents\t")


def test_an_off_topic_question_is_refused_through_the_server(remote: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "test", "ask", "Who won the 1998 football world cup final?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["refused"] is True and answer["citations"] == []


def test_an_unknown_collection_and_a_dead_server_are_clear_errors(
    remote: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", "test", "ask", "anything", "--collection", "nope"]) != 0
    assert "nope" in capsys.readouterr().err
    monkeypatch.setenv("RAG_SERVER_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["--config", "test", "collections", "list"]) != 0
    assert "did not answer" in capsys.readouterr().err


def checked_answer() -> Any:
    """A generated answer with one supported and one unsupported sentence, citing one handbook chunk."""
    from rag.types import Answer, Citation, PromptChunk, Quote, RetrievedChunk, SentenceSupport

    text = "Employees get 28 days of paid leave [1]. The moon is made of cheese [1]."
    payload = {
        "text": "Full-time employees get 28 days of paid leave per year.",
        "document_id": "handbook",
        "source": "/docs/employee-handbook.md",
        "source_name": "employee-handbook.md",
        "pages": [3],
        "section_path": ["Leave", "Paid leave"],
        "chunk_index": 4,
        "chunk_count": 9,
        "access": ["hr"],  # never sent to a client
    }
    chunk = RetrievedChunk("c-1", 0.83, payload, {"fusion": 0.5, "rerank": 0.83})
    support = (
        SentenceSupport(text[:40], 0, 40, True, 0.9, 1, (20, 54), (1,), (), (), (), None),
        SentenceSupport(text[41:], 41, len(text), False, 0.1, 1, None, (1,), (), (), (), "no source says it"),
    )
    return Answer(
        question="How many days of paid leave?",
        query="paid leave days",
        text=text,
        refused=False,
        refusal_reason=None,
        citations=(Citation(1, "c-1", "handbook", payload["source"], "employee-handbook.md", (3,), ("Leave",), 0, 55),),
        chunks=(PromptChunk(1, chunk, payload["text"], False),),
        retrieved=(chunk,),
        evidence=0.71,
        dropped_citations=1,
        timings_ms={"retrieve": 12.5, "generate": 300.0},
        prompt_tokens=0,
        completion_tokens=0,
        model="SmolLM2-135M-Instruct",
        quotes=(Quote(1, 20, 54, payload["text"][20:54], 0.9),),
        support=support,
    )


def test_a_server_answer_converts_back_to_the_answer_it_was_made_from() -> None:
    """What the chat app renders through a server: the response fields (as JSON, like the SSE's last event) give
    back the `Answer` the server built: chunk texts and payloads, citations, quotes, every sentence's check."""
    from rag.client import RemoteAnswer
    from rag.service.app import answer_fields

    answer = checked_answer()
    [chunk] = answer.retrieved
    payload = chunk.payload
    fields = json.loads(json.dumps(answer_fields(answer), default=str))
    back = RemoteAnswer(answer.question, answer.text, fields).to_answer()

    assert "access" not in json.dumps(fields["chunks"])
    assert back.support == answer.support and back.unsupported == answer.unsupported
    assert back.citations == answer.citations
    [pc] = back.chunks
    assert pc.number == 1 and pc.chunk.text == payload["text"] and pc.chunk.stage_scores == chunk.stage_scores
    assert pc.chunk.payload == {k: v for k, v in payload.items() if k != "access"}
    assert back.retrieved == (), "the closest passages travel only when the prompt held none"
    assert (back.query, back.evidence, back.model, back.dropped_citations) == ("paid leave days", 0.71, answer.model, 1)
    assert back.mode == "generate" and back.quotes == ()  # a generated answer's spans come from its checks
    assert back.timings_ms == answer.timings_ms
