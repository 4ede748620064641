"""Filters typed like the stored values, a quoted comma, and a filter that matches nothing said out loud."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.pipeline import ingest_paths
from rag.collections import open_collection
from rag.errors import UsageError
from rag.factory import build_store
from rag.retrieval import QdrantHybridRetriever, parse_filters

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Any]:
    from rag.config import load_settings

    root = tmp_path_factory.mktemp("filters")
    docs = root / "docs"
    docs.mkdir()
    records = [
        {"_id": "4983", "title": "Badges", "text": "A lost badge costs 40 euros.", "year": 2020},
        {"_id": "12", "title": "Heating", "text": "Offices are heated to 19 degrees Celsius.", "year": 2021},
    ]
    (docs / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (docs / "a,b.txt").write_text("The VPN password rotates every 30 days.\n", encoding="utf-8")
    (docs / "a.txt").write_text("The canteen opens at noon.\n", encoding="utf-8")
    settings = load_settings("test", [f"data_dir={root / 'data'}"])
    store = build_store(settings)
    assert ingest_paths([docs], settings, store, embedder).files_ingested == 3
    handle = open_collection(store, settings.store.collection, settings, embedder)
    yield QdrantHybridRetriever(handle, embedder, settings.retrieval)
    store.close()


def _filter(retriever: Any, *specs: str) -> Any:
    handle = retriever.handle
    return parse_filters(list(specs), handle.payload_fields, handle.payload_types)


def test_a_numeric_looking_id_matches_the_string_it_is_stored_as(retriever: Any) -> None:
    # `record_id=4983` became the integer 4983 and matched nothing: every SciFact id is numeric text.
    assert retriever.handle.payload_types["record_id"] == ["str"]
    result = retriever.retrieve("cost", filters=_filter(retriever, "record_id=4983"))
    assert {c.payload["record_id"] for c in result.chunks} == {"4983"}
    # A field stored as integers is filtered with an integer.
    assert retriever.handle.payload_types["year"] == ["int"]
    result = retriever.retrieve("temperature", filters=_filter(retriever, "year=2021"))
    assert {c.payload["record_id"] for c in result.chunks} == {"12"}


def test_a_quoted_comma_is_part_of_the_value(retriever: Any) -> None:
    result = retriever.retrieve("password", filters=_filter(retriever, r"source_name=a\,b.txt"))
    assert {c.payload["source_name"] for c in result.chunks} == {"a,b.txt"}
    both = retriever.retrieve("password", filters=_filter(retriever, "source_name=a.txt,corpus.jsonl"))
    assert {c.payload["source_name"] for c in both.chunks} == {"a.txt", "corpus.jsonl"}


def test_a_filter_that_matches_no_chunk_is_said_not_an_empty_list(retriever: Any) -> None:
    with pytest.raises(UsageError, match="no chunk of collection 'documents' matches the filter"):
        retriever.retrieve("password", filters=_filter(retriever, "source_name=a,b.txt"))  # two names, neither exists


def test_collections_without_recorded_types_keep_keyword_fields_as_text() -> None:
    flt = parse_filters(["record_id=4983", "page=3", "draft=true"], [])
    assert flt is not None
    assert [c.value for c in flt.conditions] == ["4983", 3, True]
