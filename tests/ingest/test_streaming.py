"""A big plain-text file is read, chunked and written a block at a time, with progress inside it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import ingest_paths, load_state
from rag.factory import build_store

pytestmark = pytest.mark.integration


def test_a_big_text_file_is_streamed_in_blocks_with_progress_inside_it(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    paragraphs = [
        f"Request {i}: the badge office on floor {i % 7} answers within {i % 5 + 1} days." for i in range(300)
    ]
    big = docs / "big.txt"
    big.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")  # ~20 KB
    (docs / "small.txt").write_text("The canteen opens at noon.\n", encoding="utf-8")
    # 4 KB blocks: the file is read in about five of them, never whole.
    settings = make_settings("ingest.stream_text_mb=0.004", "ingest.embed_batch_chunks=8")
    events: list[Any] = []
    with build_store(settings) as store:
        report = ingest_paths([docs], settings, store, embedder, progress=events.append)
    assert (report.files_ingested, report.files_failed) == (2, 0)
    source = str(big.resolve())
    inside = [e for e in events if e.current == source and 0 < e.file_bytes_done < e.file_bytes_total]
    assert len({e.file_bytes_done for e in inside}) >= 3, "progress moves inside the file"
    assert all(e.files_done < e.files_total for e in inside)

    with build_store(settings) as store:
        assert load_state(store, "documents")[source].complete
        chunks = sorted(
            (p for _, p in store.scroll("documents") if p["source"] == source), key=lambda p: p["chunk_index"]
        )
    assert [p["chunk_index"] for p in chunks] == list(range(len(chunks))) and len(chunks) > 5
    # Offsets point into the document text (its paragraphs joined), across block boundaries.
    text = "\n\n".join(paragraphs)
    assert all(text[p["char_start"] : p["char_end"]] == p["text"] for p in chunks)
    assert all(any(para in p["text"] for p in chunks) for para in paragraphs), "no paragraph lost at a block cut"

    with build_store(settings) as store:
        again = ingest_paths([docs], settings, store, embedder)
    assert (again.files_unchanged, again.chunks_written) == (2, 0)
