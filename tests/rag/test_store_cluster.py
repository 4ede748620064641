"""Qdrant cluster settings (store.shard_number, replication_factor, write_consistency_factor, read_consistency)
reach the server calls; checked on qdrant-client's local mode, which takes the same calls (no server here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rag.config import StoreSettings
from rag.sparse import SparseVector
from rag.store.base import PointRecord, SearchRequest
from rag.store.server import QdrantServerStore


class _Recorder:
    """The real client, with the keyword arguments of each call kept: what a server would have received."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = kwargs
            return fn(*args, **kwargs)

        return call


def _store(tmp_path: Path, settings: StoreSettings) -> tuple[QdrantServerStore, _Recorder]:
    store = QdrantServerStore(settings, local_path=tmp_path / "client")
    recorder = _Recorder(store._client)
    store._client_obj = recorder
    return store, recorder


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_cluster_settings_reach_collection_creation_and_queries(tmp_path: Path, mode: str) -> None:
    settings = StoreSettings(
        shard_number=6, replication_factor=2, write_consistency_factor=2, read_consistency="majority"
    )
    store, recorder = _store(tmp_path, settings)
    store.create_collection("c1", 2, {"schema_version": 1})
    created = recorder.calls["create_collection"]
    assert (created["shard_number"], created["replication_factor"], created["write_consistency_factor"]) == (6, 2, 2)
    store.upsert(
        "c1", [PointRecord("5b1f3f0e-7a52-4c1e-9d7a-2f1c3b9e8a10", [1.0, 0.0], SparseVector((1,), (1.0,)), {})]
    )
    hits = store.search("c1", SearchRequest(limit=1, mode=mode, dense=[1.0, 0.0], sparse=SparseVector((1,), (1.0,))))
    assert len(hits) == 1
    assert recorder.calls["query_points"]["consistency"].value == "majority"
    store.close()


def test_defaults_leave_the_server_to_choose(tmp_path: Path) -> None:
    store, recorder = _store(tmp_path, StoreSettings(read_consistency=2))
    store.create_collection("c1", 2, {"schema_version": 1})
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(
        recorder.calls["create_collection"]
    )
    store.search("c1", SearchRequest(limit=1, mode="dense", dense=[1.0, 0.0]))
    assert recorder.calls["query_points"]["consistency"] == 2
    store.close()


def test_write_consistency_above_replication_is_refused() -> None:
    with pytest.raises(ValidationError, match="write_consistency_factor"):
        StoreSettings(replication_factor=2, write_consistency_factor=3)
