"""One contract for every vector-store backend: Qdrant Edge (default) and qdrant-client (server code path)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import CollectionNotFoundError
from rag.sparse import SparseVector
from rag.store.base import Condition, Filter, PointRecord, SearchRequest, VectorStore

DIM = 4


def _store(kind: str, root: Path) -> VectorStore:
    if kind == "edge":
        from rag.store.edge import QdrantEdgeStore

        return QdrantEdgeStore(root / "edge", StoreSettings())
    from rag.store.server import QdrantServerStore

    return QdrantServerStore(StoreSettings(), local_path=root / "client")


def _points() -> list[PointRecord]:
    # Three chunks of two documents; dense vectors point along different axes,
    # sparse vectors use term ids 1..3 so each query has one clear winner.
    rows = [
        ("a", "/docs/a.pdf", "pdf", [1.0, 0, 0, 0], ([1], [1.0])),
        ("a", "/docs/a.pdf", "pdf", [0, 1.0, 0, 0], ([2], [1.0])),
        ("b", "/other/b.docx", "docx", [0, 0, 1.0, 0], ([3], [1.0])),
    ]
    return [
        PointRecord(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc}{i}")),
            dense,
            SparseVector(tuple(ix), tuple(v)),
            {
                "document_id": doc,
                "source": src,
                "file_type": ft,
                "content_hash": "h" + doc,
                "chunk_index": i,
                "source_dirs": [str(Path(src).parent)],
                "text": f"chunk {i} of {doc}",
            },
        )
        for i, (doc, src, ft, dense, (ix, v)) in enumerate(rows)
    ]


@pytest.fixture(params=["edge", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    s = _store(request.param, tmp_path)
    s.create_collection("c1", DIM, {"schema_version": 1, "embedder": {"name": "x"}})
    s.upsert("c1", _points())
    s.flush("c1")
    yield s
    s.close()


def test_collections_and_metadata(store: VectorStore) -> None:
    assert store.list_collections() == ["c1"]
    assert store.collection_exists("c1") and not store.collection_exists("nope")
    assert store.get_metadata("c1")["embedder"] == {"name": "x"}
    store.set_metadata("c1", {"schema_version": 1, "index_version": 3})
    assert store.get_metadata("c1")["index_version"] == 3
    with pytest.raises(CollectionNotFoundError, match="nope"):
        store.count("nope")


def test_count_scroll_retrieve(store: VectorStore) -> None:
    assert store.count("c1") == 3
    assert store.count("c1", Filter((Condition("document_id", "a"),))) == 2
    rows = dict(store.scroll("c1", fields=["document_id"], batch=2))
    assert sorted(p["document_id"] for p in rows.values()) == ["a", "a", "b"]
    assert all(set(p) == {"document_id"} for p in rows.values())
    ids = [p.id for p in _points()]
    got = store.retrieve("c1", [ids[2], "00000000-0000-0000-0000-000000000000", ids[0]])
    assert [g.id for g in got] == [ids[2], ids[0]]


def test_dense_vectors_are_read_back(store: VectorStore) -> None:
    ids = [p.id for p in _points()]
    vectors = store.dense_vectors("c1", [ids[1], "00000000-0000-0000-0000-000000000000"])
    assert list(vectors) == [ids[1]]
    assert vectors[ids[1]] == pytest.approx([0, 1.0, 0, 0])
    assert store.dense_vectors("c1", []) == {}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_search_modes_find_the_matching_chunk(store: VectorStore, mode: str) -> None:
    req = SearchRequest(limit=3, mode=mode, dense=[0, 1.0, 0, 0], sparse=SparseVector((2,), (1.0,)))  # type: ignore[arg-type]
    hits = store.search("c1", req)
    assert hits[0].payload["chunk_index"] == 1
    assert hits[0].score > (hits[1].score if len(hits) > 1 else 0)


def test_dbsf_fusion_and_filters(store: VectorStore) -> None:
    req = SearchRequest(limit=3, mode="hybrid", dense=[1.0, 0, 0, 0], sparse=SparseVector((1,), (1.0,)), fusion="dbsf")
    assert store.search("c1", req)[0].payload["chunk_index"] == 0
    only_b = Filter((Condition("file_type", "docx"),))
    hits = store.search("c1", SearchRequest(limit=3, mode="dense", dense=[1.0, 0, 0, 0], filter=only_b))
    assert {h.payload["document_id"] for h in hits} == {"b"}
    by_dir = Filter((Condition("source_dirs", "/docs"),))
    assert store.count("c1", by_dir) == 2
    prefix = Filter((Condition("source", prefix="/oth"),))
    assert store.count("c1", prefix) == 1
    not_a = Filter((Condition("document_id", "a", negate=True),))
    assert store.count("c1", not_a) == 1
    any_of = Filter((Condition("document_id", any_of=("a", "b")),))
    assert store.count("c1", any_of) == 3


def test_delete_by_filter_and_upsert_is_idempotent(store: VectorStore) -> None:
    store.upsert("c1", _points())  # same ids again: an overwrite, not duplicates
    assert store.count("c1") == 3
    store.delete("c1", Filter((Condition("document_id", "a"), Condition("content_hash", "other", negate=True))))
    assert store.count("c1") == 1
    with pytest.raises(ValueError):
        store.delete("c1", Filter())
    store.delete_collection("c1")
    assert store.list_collections() == []


def test_data_survives_reopen(tmp_path: Path) -> None:
    for kind in ("edge", "local"):
        s = _store(kind, tmp_path)
        s.create_collection("keep", DIM, {"schema_version": 1})
        s.upsert("keep", _points())
        s.flush("keep")
        s.close()
        again = _store(kind, tmp_path)
        assert again.count("keep") == 3, kind
        again.close()
