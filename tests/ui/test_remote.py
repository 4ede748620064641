"""The chat app through a running `rag serve` (RAG_SERVER_URL): the server owns the store and the models, the app
opens neither, so an ingest into the same data folder works while the app runs.

A real uvicorn server on a free port over a data folder with samples/ ingested, the bundled embedder, quoted answers
(the test profile); the app under `streamlit.testing.v1.AppTest`. The app's store and model factories raise, so a
page that opened the store itself fails the test. `.venv/bin/python -m pytest -q tests/ui/test_remote.py`
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.service.test_api import running
from tests.service.test_documents import _runner
from tests.ui.test_app import APP, FOLLOW_UP, LEAVE, OFF_TOPIC, PARKING, TIMEOUT, ask, assistant_messages, plain

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _serve(settings: Any, store: Any, embedder: Any) -> Any:
    from rag.service import create_app

    return create_app(settings, store=store, embedder=embedder, workers=2, ingest=_runner())


def _wait_ready(url: str) -> None:
    for _ in range(600):  # the models are loaded already: quick
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        threading.Event().wait(0.1)
    raise AssertionError(f"{url}/readyz never answered 200")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, make_data_dir: Any, embedder: Any, app_environment: dict[str, str]
) -> Iterator[tuple[str, Path, Any]]:
    """`rag serve` over a data folder holding samples/; the app's environment points at the server and that folder."""
    from rag.config import load_settings
    from rag.factory import build_store

    data = make_data_dir(tmp_path_factory.mktemp("remote"))
    settings = load_settings("test", [f"data_dir={data}", "answer.cache=false"])
    store = build_store(settings)
    with running(_serve(settings, store, embedder)) as url:
        _wait_ready(url)
        with pytest.MonkeyPatch.context() as mp:
            for name, value in app_environment.items():
                mp.setenv(name, value)
            mp.setenv("RAG_DATA_DIR", str(data))  # the same folder: the app must leave its store to the server
            mp.setenv("RAG_SERVER_URL", url)
            mp.delenv("RAG_API_KEY", raising=False)
            yield url, data, store
    store.close()


@pytest.fixture(autouse=True)
def no_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app must not open the store or load a model while a server is configured: its factories raise."""
    import ui.resources

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the app built its own store or model although a server is configured")

    for name in ("build_store", "build_embedder", "build_generator", "build_reranker", "build_pipeline"):
        monkeypatch.setattr(ui.resources, name, refuse)


@pytest.fixture
def chat_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every chat request the app sent to the server (the real request still goes out)."""
    from rag.client import RagClient

    sent: list[dict[str, Any]] = []
    original = RagClient.stream

    def spy(self: RagClient, question: str, collection: str, history: Any = (), **extra: Any) -> Any:
        sent.append({"question": question, "collection": collection, "history": list(history), **extra})
        return original(self, question, collection, history, **extra)

    monkeypatch.setattr(RagClient, "stream", spy)
    return sent


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def documents_page(at: AppTest) -> AppTest:
    at.switch_page("views/documents_remote.py").run()
    assert not at.exception, at.exception
    return at


def test_chat_answers_through_the_server_with_sources_and_follow_ups(
    server: tuple[str, Path, Any], chat_requests: list[dict[str, Any]]
) -> None:
    url, _, _ = server
    at = ask(start(), LEAVE)
    assert any(url in c.value for c in at.sidebar.caption), "the sidebar names the server"
    assert any("quoted word for word" in c.value for c in at.caption)
    [reply] = assistant_messages(at)
    assert not reply.warning, "an answerable question was refused"
    answer = plain(reply.markdown[0].value)
    assert "28" in answer and "[1]" in answer
    # Rendered as a local answer: the cited source with its section, the chunk text with the quoted span marked.
    labels = [e.label for e in reply.expander]
    assert any("employee-handbook.md" in label and "Paid leave" in label and "cited" in label for label in labels)
    marked = [h.value for h in reply.get("html") if "<mark" in h.value]
    assert any("28 days of paid leave" in h for h in marked), marked
    assert "**Document:** employee-handbook.md" in " ".join(m.value for m in reply.markdown)
    assert any("quoted from the sources" in c.value for c in reply.caption)
    assert chat_requests[-1]["collection"] == "documents" and chat_requests[-1]["history"] == []

    ask(at, FOLLOW_UP)
    assert len(assistant_messages(at)) == 2
    follow_up = chat_requests[-1]
    assert follow_up["question"] == FOLLOW_UP
    [(asked, answered)] = follow_up["history"]  # the previous turn travels as messages
    assert asked == LEAVE and "28" in answered


def test_an_off_topic_question_is_refused_through_the_server(server: tuple[str, Path, Any]) -> None:
    at = ask(start(), OFF_TOPIC)
    [reply] = assistant_messages(at)
    from ui.render import REFUSAL_REASONS

    assert reply.warning, "an off-topic question was answered"
    assert any(reason in reply.warning[0].value for reason in REFUSAL_REASONS.values()), "the refusal says why"
    assert not any("— cited" in e.label for e in reply.expander)


def test_documents_page_lists_the_server_s_documents(server: tuple[str, Path, Any]) -> None:
    at = documents_page(start())
    listed = at.dataframe[0].value
    assert sorted(listed["document"]) == ["employee-handbook.md", "product-faq.html", "security-policy.txt"]
    assert sorted(m.value for m in at.metric) == ["11", "3"]  # chunks, documents: as in the embedded app


def test_monitoring_page_shows_the_server_s_signals(server: tuple[str, Path, Any]) -> None:
    url, _, _ = server
    at = start()
    at.switch_page("views/monitoring.py").run()
    assert not at.exception, at.exception
    assert [h.value for h in at.main.subheader] == [f"API server {url}"]  # the app answers nothing itself
    assert "Refusal rate" in list(at.dataframe[0].value["signal"])


def test_ingest_into_the_same_data_folder_while_the_app_runs(
    server: tuple[str, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The point of the feature: with the app up, `rag ingest` (client mode) into its data folder succeeds."""
    from rag.cli import main

    _, _, store = server
    at = ask(start(), LEAVE)  # the app is running and has answered
    notes = tmp_path / "canteen.md"
    notes.write_text("# Canteen\n\nThe canteen serves breakfast from 7:30 on weekdays.\n")
    assert main(["--config", "test", "ingest", str(notes), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [j["state"] for j in report["jobs"]] == ["done"], report
    assert any("canteen.md" in str(p.get("source")) for _, p in store.scroll("documents", fields=["source"]))
    # The running app sees it at once, through the server.
    at = documents_page(at)
    assert "canteen.md" in list(at.dataframe[0].value["document"])


def test_upload_and_delete_through_the_server(server: tuple[str, Path, Any]) -> None:
    _, data, _ = server
    at = documents_page(start())
    at.text_input(key="new_collection_name").set_value("uploads")
    next(b for b in at.button if b.label == "Create").click()
    at.run()
    assert at.selectbox(key="collection").value == "uploads"
    at.file_uploader[0].set_value([("parking.md", PARKING, "text/markdown")])
    at.run()
    next(b for b in at.button if b.label == "Index files").click()
    at.run()
    assert not at.exception, at.exception
    assert any("1 ingested" in s.value for s in at.success), [s.value for s in at.success] + [
        w.value for w in at.warning
    ]
    assert dict(zip(at.dataframe[0].value["file"], at.dataframe[0].value["result"], strict=True)) == {
        "parking.md": "indexed"
    }
    assert list(at.dataframe[1].value["document"]) == ["parking.md"]
    assert (data / "uploads" / "uploads" / "parking.md").read_bytes() == PARKING  # the server's upload folder

    assert next(s for s in at.selectbox if s.label == "Document").options == ["parking.md"]  # the one to delete
    next(b for b in at.button if b.label == "Delete").click()
    at.run()
    assert not at.exception, at.exception
    assert any("Deleted parking.md" in s.value for s in at.success)
    assert not (data / "uploads" / "uploads" / "parking.md").exists()


def test_a_server_that_is_down_is_one_clear_message(
    server: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_SERVER_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    at = start()
    [error] = at.error
    assert "http://127.0.0.1:9" in error.value and "rag serve" in error.value
    assert not at.chat_input


def test_a_server_with_keys_asks_for_one_and_refuses_a_wrong_one(
    server: tuple[str, Path, Any], embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second server over the same store whose key file holds a key: the app signs in with it, as that user."""
    from rag.access.keys import KeyStore
    from rag.config import load_settings

    _, _, store = server
    settings = load_settings("test", [f"data_dir={tmp_path}", "access.auth=required"])
    alice, _ = KeyStore(settings.keys_path).create("alice", ["hr"])
    with running(_serve(settings, store, embedder)) as url:
        _wait_ready(url)
        monkeypatch.setenv("RAG_SERVER_URL", url)
        at = start()
        assert at.text_input[0].label == "API key" and not at.chat_input
        at.text_input[0].set_value("rag_not-a-key")
        at.button[0].click()
        at.run()
        assert any(url in e.value and "refused" in e.value for e in at.error), [e.value for e in at.error]
        at.text_input[0].set_value(alice)
        at.button[0].click()
        at.run()
        assert not at.exception, at.exception
        assert at.chat_input, "signed in: the chat is open"
        assert any("alice" in c.value for c in at.sidebar.caption)


def test_a_server_answer_renders_as_the_local_one_with_its_unsupported_sentence_marked() -> None:
    from rag.client import RemoteAnswer
    from rag.service.app import answer_fields
    from tests.service.test_client import checked_answer
    from ui.conversation import Exchange
    from ui.render import answer_markdown

    local = checked_answer()
    fields = json.loads(json.dumps(answer_fields(local), default=str))  # as the server's last SSE event
    remote = RemoteAnswer(local.question, local.text, fields).to_answer()
    exchange = Exchange("e1", local.question, "documents", answer=remote)
    shown = answer_markdown(remote, "c1", exchange)
    assert shown == answer_markdown(local, "c1", exchange)
    assert plain(shown).endswith("cheese [1]. ⚠️") and plain(shown).count("⚠️") == 1
