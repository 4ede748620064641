"""Qdrant Edge across processes: a second process is refused before it touches the shard's files."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from rag.config import StoreSettings
from rag.sparse import SparseVector
from rag.store.base import PointRecord
from rag.store.edge import QdrantEdgeStore

OPEN_ELSEWHERE = """
import sys
from rag.config import StoreSettings
from rag.errors import StoreError
from rag.store.edge import QdrantEdgeStore
store = QdrantEdgeStore(sys.argv[1], StoreSettings())
try:
    print(store.count("c1"))
except StoreError as e:
    print("refused:", e)
"""


def _points(start: int, n: int) -> list[PointRecord]:
    return [
        PointRecord(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")),
            [1.0, float(i), 0.0, 0.5],
            SparseVector((i % 7, 7 + i % 5), (1.0, 0.5)),
            {"document_id": f"d{i}", "source": f"/d/{i}.txt", "chunk_index": i, "text": f"chunk {i}"},
        )
        for i in range(start, start + n)
    ]


def test_a_second_process_is_refused_and_the_first_keeps_writing(tmp_path: Path) -> None:
    # Reproduces `rag ask` during `rag ingest`: Edge's own lock refused the asker only after it had opened the
    # shard's files, and the ingest's next flush failed ("tracker journal ... is shorter than expected").
    root = tmp_path / "qdrant"
    store = QdrantEdgeStore(root, StoreSettings())
    store.create_collection("c1", 4, {"schema_version": 1})
    store.upsert("c1", _points(0, 200))
    store.flush("c1")
    for _ in range(3):
        other = subprocess.run(
            [sys.executable, "-c", OPEN_ELSEWHERE, str(root)], capture_output=True, text=True, timeout=120, check=True
        )
        assert other.stdout.startswith("refused: collection 'c1' is open in another process"), other.stdout
    store.upsert("c1", _points(200, 300))
    store.flush("c1")
    assert store.count("c1") == 500
    store.close()
    # Once closed, another process opens it and sees every point.
    after = subprocess.run(
        [sys.executable, "-c", OPEN_ELSEWHERE, str(root)], capture_output=True, text=True, timeout=120, check=True
    )
    assert after.stdout.strip() == "500"
