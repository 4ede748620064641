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
