"""The chat app's flows through `streamlit.testing.v1.AppTest`, on the real stack: the bundled embedder and
SmolLM2-135M, the embedded Qdrant store, samples/ ingested once for the module.

Model calls are few on purpose (one answer, one follow-up); other flows reuse the answer cache or are refused
before the model is asked. `.venv/bin/python -m pytest -q tests/ui/test_app.py`
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LEAVE = "How many days of paid leave do employees get?"
FOLLOW_UP = "Can unused days be carried over?"
OFF_TOPIC = "Who won the football world cup in 2014?"
APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
TIMEOUT = 180  # seconds for one script run: the first loads the embedder and the generator


@pytest.fixture(scope="module")
def data_dir(
    tmp_path_factory: pytest.TempPathFactory, make_data_dir: Any, app_environment: dict[str, str]
) -> Iterator[Path]:
    """The app's data folder, and the environment that points the app at it (the app reads RAG_* itself)."""
    data = make_data_dir(tmp_path_factory.mktemp("app"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_DATA_DIR", str(data))
        for name, value in app_environment.items():
            mp.setenv(name, value)
        yield data
        _close_app_store(data)


def _close_app_store(data: Path) -> None:
    """Release the store the app cached in this process, so nothing else in the session finds the shard held."""
    import streamlit as st

    from rag.config import load_settings
    from ui.resources import get_store

    get_store(load_settings("test", [f"data_dir={data}"])).close()
    st.cache_resource.clear()


@dataclass
class StreamCalls:
    """Every RagPipeline.stream call the app made: the pipeline and the keyword arguments."""

    calls: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def stream_calls(monkeypatch: pytest.MonkeyPatch) -> StreamCalls:
    """Record what the app passes to the pipeline (the real stream still runs)."""
    from rag.answering import RagPipeline

    record = StreamCalls()
    original = RagPipeline.stream

    def spy(self: RagPipeline, question: str, **kwargs: Any) -> Any:
        record.calls.append((self, {"question": question, **kwargs}))
        return original(self, question, **kwargs)

    monkeypatch.setattr(RagPipeline, "stream", spy)
    return record


def start(data_dir: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def plain(markdown: str) -> str:
    """The answer text of the rendered markdown: citation links `[\\[1\\]](#src-...)` back to `[1]`."""
    return re.sub(r"\[\\\[(\d+)\\\]\]\(#[^)]*\)", r"[\1]", markdown)


def assistant_messages(at: AppTest) -> list[Any]:
    return [m for m in at.chat_message if m.name == "assistant"]


def test_ask_streams_an_answer_with_its_sources(data_dir: Path) -> None:
    at = ask(start(data_dir), LEAVE)
    [reply] = assistant_messages(at)
    assert not reply.warning, "an answerable question was refused"
    answer = reply.markdown[0].value
    assert answer.strip() and "do not say" not in answer
    assert "**Sources**" in [m.value for m in reply.markdown]
    labels = [e.label for e in reply.expander]
    assert any("employee-handbook.md" in label and "Paid leave" in label for label in labels), labels
    # The chunk text is shown in the source, with the document's name, its section and the stage scores.
    assert any("28 days of paid leave" in h.value for h in reply.get("html"))
    details = " ".join(m.value for m in reply.markdown)
    assert "**Document:** employee-handbook.md" in details and "**Scores:** fusion" in details
    assert any("quoted word for word" in c.value for c in at.caption)
    # The answer is right, not just present: the handbook's 28 days, quoted, citing the handbook.
    assert "28 days of paid leave" in answer and "9 days" not in answer
    assert any("quoted from the sources" in c.value for c in reply.caption)


def test_source_opens_in_context(data_dir: Path) -> None:
    at = ask(start(data_dir), LEAVE)  # answered from the answer cache: no model call
    [reply] = assistant_messages(at)
    paid_leave = next(i for i, e in enumerate(reply.expander) if "Paid leave" in e.label)
    reply.expander[paid_leave].toggle[0].set_value(True).run()
    assert not at.exception, at.exception
    expander = assistant_messages(at)[0].expander[paid_leave]
    shown = [h.value for h in expander.get("html")]
    # The handbook's chunks 0-2: working hours before the paid-leave chunk, sick leave after it.
    assert any("Core hours are 10:00 to 16:00" in h for h in shown), shown
    assert any("Report sickness to your team lead" in h for h in shown), shown
    assert any("this source" in c.value for c in expander.caption)


def test_feedback_is_stored_with_question_answer_and_sources(data_dir: Path) -> None:
    at = ask(start(data_dir), LEAVE)
    at.feedback[0].set_value(1).run()  # thumbs up
    assert not at.exception, at.exception
    lines = (data_dir / "feedback.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[-1])
    assert record["rating"] == "up"
    assert record["question"] == LEAVE
    assert record["answer"] == plain(assistant_messages(at)[0].markdown[0].value)
    assert any("employee-handbook.md" in s["label"] for s in record["sources"])
    assert record["timestamp"].endswith("Z")


def test_follow_up_passes_the_conversation(data_dir: Path, stream_calls: StreamCalls) -> None:
    at = ask(start(data_dir), LEAVE)
    first_answer = plain(assistant_messages(at)[0].markdown[0].value)
    ask(at, FOLLOW_UP)
    replies = assistant_messages(at)
    assert len(replies) == 2
    assert replies[1].markdown[0].value.strip() or replies[1].warning
    _, kwargs = stream_calls.calls[-1]
    assert kwargs["question"] == FOLLOW_UP
    [turn] = kwargs["history"]
    assert (turn.question, turn.answer) == (LEAVE, first_answer)


def test_conversation_survives_reload_and_new_conversation_clears_it(data_dir: Path) -> None:
    at = ask(start(data_dir), LEAVE)
    conversation = at.query_params["c"]
    reloaded = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    reloaded.query_params["c"] = conversation  # a browser reload: a new session, the same URL
    reloaded.run()
    assert [m.name for m in reloaded.chat_message] == ["user", "assistant"]
    next(b for b in reloaded.button if b.label == "New conversation").click()
    reloaded.run()
    assert not reloaded.chat_message
    assert reloaded.query_params["c"] != conversation


def test_refusal_shows_the_closest_passages(data_dir: Path, stream_calls: StreamCalls) -> None:
    at = ask(start(data_dir), OFF_TOPIC)
    [reply] = assistant_messages(at)
    assert reply.warning and "The documents do not say." in reply.warning[0].value
    assert "too weakly" in reply.warning[0].value
    assert "**Closest passages found**" in [m.value for m in reply.markdown]
    assert reply.expander, "the closest passages are listed so the user can judge"
    assert any("evidence 0." in c.value for c in reply.caption)


def test_sidebar_settings_reach_the_pipeline(data_dir: Path, stream_calls: StreamCalls) -> None:
    at = start(data_dir)
    assert at.toggle(key="opt_rerank").disabled, "no rerank.model is configured in the test profile"
    at.selectbox(key="opt_mode").set_value("sparse")
    at.slider(key="opt_max_chunks").set_value(2)
    at.slider(key="opt_temperature").set_value(0.7)
    at.number_input(key="opt_max_new_tokens").set_value(16)
    at.number_input(key="opt_min_evidence").set_value(0.99)  # above any cosine the samples reach
    at.run()
    ask(at, LEAVE)
    pipeline, kwargs = stream_calls.calls[-1]
    assert kwargs["mode"] == "sparse" and kwargs["rerank"] is False
    assert (kwargs["options"].temperature, kwargs["options"].max_new_tokens) == (0.7, 16)
    assert (pipeline.settings.answer.max_chunks, pipeline.settings.answer.min_evidence) == (2, 0.99)
    # The threshold refuses what the default setting answers, and shows two closest passages from sparse search.
    [reply] = assistant_messages(at)
    assert reply.warning and "The documents do not say." in reply.warning[0].value
    assert len(reply.expander) == 2
    assert all("**Scores:** sparse" in m.value for m in reply.markdown if "**Scores:**" in m.value)


def documents_page(data_dir: Path) -> AppTest:
    at = start(data_dir)
    at.switch_page("views/documents.py").run()
    assert not at.exception, at.exception
    return at


def create_collection(at: AppTest, name: str) -> None:
    at.text_input(key="new_collection_name").set_value(name)
    next(b for b in at.button if b.label == "Create").click()
    at.run()
    assert at.selectbox(key="collection").value == name


def upload(at: AppTest, files: list[tuple[str, bytes, str]]) -> None:
    at.file_uploader[0].set_value(files)
    at.run()
    next(b for b in at.button if b.label == "Index files").click()
    at.run()
    assert not at.exception, at.exception


PARKING = b"# Parking\n\nStaff park in lot B behind the warehouse. Visitors use the two spaces by the front door.\n"


def test_documents_page_lists_what_is_indexed(data_dir: Path) -> None:
    at = documents_page(data_dir)
    listed = at.dataframe[0].value
    assert sorted(listed["document"]) == ["employee-handbook.md", "product-faq.html", "security-policy.txt"]
    assert sorted(m.value for m in at.metric) == ["11", "3"]  # chunks (card context in each window), documents


def test_upload_and_index_into_a_new_collection(data_dir: Path) -> None:
    at = documents_page(data_dir)
    create_collection(at, "uploads")
    upload(at, [("parking.md", PARKING, "text/markdown"), ("broken.pdf", b"%PDF-1.4 not a PDF", "application/pdf")])
    results = at.dataframe[0].value
    by_file = dict(zip(results["file"], results["result"], strict=True))
    assert by_file == {"parking.md": "ingested", "broken.pdf": "failed"}
    reason = results["detail"][list(results["file"]).index("broken.pdf")]
    assert reason, "a failed file says why"
    assert (data_dir / "uploads" / "uploads" / "parking.md").read_bytes() == PARKING
    assert list(at.dataframe[1].value["document"]) == ["parking.md"]
    # The same file again is recognised as unchanged.
    upload(at, [("parking.md", PARKING, "text/markdown")])
    assert list(at.dataframe[0].value["result"]) == ["unchanged"]


def test_delete_a_document(data_dir: Path) -> None:
    from rag.config import load_settings
    from ui.resources import get_store

    at = documents_page(data_dir)
    create_collection(at, "scratch")
    upload(at, [("parking.md", PARKING, "text/markdown"), ("notes.txt", b"Lunch is served at noon.\n", "text/plain")])
    store = get_store(load_settings("test", [f"data_dir={data_dir}"]))  # the app's own (cached) store
    version = store.get_metadata("scratch")["index_version"]
    delete_box = next(s for s in at.selectbox if s.label == "Document")
    parking = next(
        d for _, p in store.scroll("scratch", fields=["document_id"]) if "parking" in (d := p["document_id"])
    )
    delete_box.set_value(parking)
    next(b for b in at.button if b.label == "Delete").click()
    at.run()
    assert not at.exception, at.exception
    assert any("Deleted parking.md" in s.value for s in at.success)
    assert list(at.dataframe[-1].value["document"]) == ["notes.txt"]
    assert not (data_dir / "uploads" / "scratch" / "parking.md").exists(), "the uploaded copy goes too"
    assert store.get_metadata("scratch")["index_version"] == version + 1, "cached answers must not outlive it"


def test_evaluation_page_appears_once_runs_exist(data_dir: Path) -> None:
    at = start(data_dir)
    with pytest.raises(ValueError):
        at.switch_page("views/evaluation.py")
    run = data_dir / "eval-runs" / "2026-01-01-scifact"
    run.mkdir(parents=True)
    try:
        metrics = {"ndcg@10": {"mean": 0.712, "low": 0.681, "high": 0.744, "n": 300}, "queries": 300}
        (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        at = start(data_dir)
        at.switch_page("views/evaluation.py").run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        assert dict(zip(table["metric"], table["value"], strict=True)) == {
            "ndcg@10": "0.712 [0.681, 0.744]",
            "queries": "300",
        }
    finally:
        shutil.rmtree(data_dir / "eval-runs")


def test_a_bad_setting_is_reported_in_the_page(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETRIEVAL__MODE", "fuzzy")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert at.error and "retrieval.mode" in at.error[0].value


def test_a_configured_reranker_is_offered_with_its_share(
    data_dir: Path, tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.reranking import build_cross_encoder

    build_cross_encoder(embedder.model_path, 64).save_pretrained(str(tmp_path / "ce"))
    monkeypatch.setenv("RAG_RERANK__MODEL", str(tmp_path / "ce"))
    monkeypatch.setenv("RAG_RERANK__BLEND", "0.4")
    at = start(data_dir)
    assert not at.toggle(key="opt_rerank").disabled and at.toggle(key="opt_rerank").value
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert f"Reranker:** {tmp_path / 'ce'} (its share of the final score: 0.4)" in sidebar


def test_monitoring_page_counts_the_answers_and_refusals(data_dir: Path) -> None:
    _close_app_store(data_dir)  # closes the cached store and clears the caches: a fresh drift monitor
    try:
        at = ask(ask(start(data_dir), LEAVE), OFF_TOPIC)
        at.switch_page("views/monitoring.py").run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        rows = dict(zip(table["signal"], table["since start"], strict=True))
        assert rows["Answers"] == "2" and rows["Refusal rate"] == "50.0%", rows
        assert any("Thumbs down" in c.value for c in at.caption)
    finally:
        _close_app_store(data_dir)
