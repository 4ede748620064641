"""Collection identity across delete and re-create, the answer cache it keys, and write-ahead metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import ingest_paths
from rag.answering import RagPipeline
from rag.collections import delete_collection, delete_document, ingest_lock, open_collection
from rag.errors import StoreError
from rag.factory import build_store
from rag.retrieval import QdrantHybridRetriever
from tests.rag.test_answering import ScriptedGenerator

pytestmark = pytest.mark.integration

QUESTION = "How often does the VPN password rotate?"


def _note(folder: Path, days: int) -> Path:
    folder.mkdir(exist_ok=True)
    note = folder / "vpn.md"
    note.write_text(f"# VPN\n\nThe VPN password rotates every {days} days.\n", encoding="utf-8")
    return note


def _ingest(settings: Any, embedder: Any, paths: list[Path]) -> Any:
    with build_store(settings) as store:
        return ingest_paths(paths, settings, store, embedder)


def _ask(settings: Any, embedder: Any, reply: str) -> Any:
    with build_store(settings) as store:
        handle = open_collection(store, "documents", settings, embedder)
        pipeline = RagPipeline(
            QdrantHybridRetriever(handle, embedder, settings.retrieval), ScriptedGenerator(reply), settings
        )
        return pipeline.ask(QUESTION)


def _cached_files(settings: Any) -> list[Path]:
    return sorted((settings.cache_dir / "answers").rglob("*.json"))


def test_a_deleted_and_rebuilt_collection_never_serves_an_old_answer(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    # The reproduction: 30 days asked and cached, the collection deleted, the note edited to 7
    # days and ingested again. The index version restarts at 1, so a key on it alone served "30 days".
    docs = tmp_path / "docs"
    note = _note(docs, 30)
    settings = make_settings("answer.min_evidence=null", "answer.mode=generate")
    _ingest(settings, embedder, [docs])
    first = _ask(settings, embedder, "Every 30 days [1].")
    again = _ask(settings, embedder, "never generated")
    assert (first.cached, again.cached, again.text) == (False, True, "Every 30 days [1].")
    assert _cached_files(settings)

    with build_store(settings) as store:
        delete_collection(store, "documents", settings.cache_dir)
    assert _cached_files(settings) == [], "deleting a collection evicts the answers derived from it"

    _note(docs, 7)
    _ingest(settings, embedder, [docs])
    fresh = _ask(settings, embedder, "Every 7 days [1].")
    assert not fresh.cached and fresh.text == "Every 7 days [1]."
    assert "every 7 days" in fresh.chunks[0].text
    assert _cached_files(settings)

    with build_store(settings) as store:
        assert delete_document(store, "documents", str(note.resolve()), settings.cache_dir) > 0
    assert _cached_files(settings) == [], "deleting a document evicts the collection's answers"


def test_a_crash_after_the_chunks_are_written_has_already_moved_the_version_and_fields(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    _note(docs, 30)
    settings = make_settings()
    before = _ingest(settings, embedder, [docs]).index_version

    # A new record with a field no chunk had; the run dies after its chunks are flushed, before the
    # end-of-run bookkeeping (what a SIGKILL at that moment does).
    record = {"_id": "r1", "title": "Badges", "text": "A lost badge costs 40 euros.", "team": "facilities"}
    (docs / "records.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt("killed after the flush")

    monkeypatch.setattr("ingest.pipeline.record_ingest", killed)
    with pytest.raises(KeyboardInterrupt):
        _ingest(settings, embedder, [docs])
    monkeypatch.undo()

    with build_store(settings) as store:
        metadata = store.get_metadata("documents")
        stored_fields = {key for _, payload in store.scroll("documents") for key in payload}
    assert metadata["index_version"] > before, "the version moved before the chunks were written"
    assert stored_fields <= set(metadata["payload_fields"]), "every stored field is filterable"
    rerun = _ingest(settings, embedder, [docs])
    assert rerun.chunks_written == 0 and rerun.index_version == metadata["index_version"]


def test_a_second_ingest_into_one_data_folder_is_refused_clearly(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = tmp_path / "docs"
    _note(docs, 30)
    settings = make_settings()
    with ingest_lock(settings.data_dir), pytest.raises(StoreError, match="another ingest is running"):
        _ingest(settings, embedder, [docs])
    with build_store(settings) as store:
        assert not store.collection_exists("documents"), "the refused run created nothing"
    assert _ingest(settings, embedder, [docs]).index_version == 1, "the lock is released"
