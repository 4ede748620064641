"""The server's query-embedding batcher with the bundled embedder: concurrent queries share a forward pass and get
the vectors the embedder gives them alone; a query alone is embedded at once, bit for bit as before."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from rag.errors import UsageError
from rag.service.batching import BatchingQueryEmbedder

QUERIES = [
    "How many days of paid leave do employees get?",
    "How long must passwords be?",
    "What does the warranty cover?",
    "Who do I call when a laptop is stolen?",
    "torque range",
]


class HeldFirstPass:
    """The real embedder whose first forward pass waits until the test releases it (so others queue behind it)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.started = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.embedder, name)

    def embed_documents(self, texts: list[str]) -> Any:
        self.sizes.append(len(texts))
        if len(self.sizes) == 1:
            self.started.set()
            assert self.release.wait(60), "the test never released the first pass"
        return self.embedder.embed_documents(texts)


def test_a_query_alone_is_embedded_as_the_embedder_does(embedder: Any) -> None:
    batcher = BatchingQueryEmbedder(embedder)
    try:
        for q in QUERIES:
            assert np.array_equal(batcher.embed_query(q), embedder.embed_query(q))  # bit for bit
        assert batcher.batches == batcher.queries == len(QUERIES)
        assert batcher.dimension == embedder.dimension and batcher.identity() == embedder.identity()
    finally:
        batcher.close()


def test_queries_waiting_together_share_one_pass(embedder: Any) -> None:
    held = HeldFirstPass(embedder)
    batcher = BatchingQueryEmbedder(held)
    results: dict[str, Any] = {}

    def ask(q: str) -> None:
        results[q] = batcher.embed_query(q)

    try:
        first = threading.Thread(target=ask, args=(QUERIES[0],))
        first.start()
        assert held.started.wait(60)
        others = [threading.Thread(target=ask, args=(q,)) for q in QUERIES[1:]]
        for t in others:
            t.start()
        while batcher._queue.qsize() < len(others):  # all four waiting behind the held pass
            threading.Event().wait(0.01)
        held.release.set()
        for t in [first, *others]:
            t.join(60)
        assert held.sizes == [1, len(others)]  # the four went in one pass
        for q in QUERIES:  # padding to the longest query moves a value by float rounding only
            np.testing.assert_allclose(results[q], embedder.embed_query(q), atol=1e-6)
    finally:
        batcher.close()


def test_a_bad_query_gets_the_embedders_error_and_a_failed_pass_reaches_every_caller(embedder: Any) -> None:
    batcher = BatchingQueryEmbedder(embedder)
    try:
        with pytest.raises(UsageError, match="empty"):
            batcher.embed_query("  ")
        with pytest.raises(UsageError, match="tokens, over the embedder's window"):
            batcher.embed_query("word " * 1000)
    finally:
        batcher.close()

    class Broken:
        def __getattr__(self, name: str) -> Any:
            return getattr(embedder, name)

        def embed_documents(self, texts: list[str]) -> Any:
            raise RuntimeError("out of memory")

    broken = BatchingQueryEmbedder(Broken())
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            broken.embed_query(QUERIES[0])
    finally:
        broken.close()


@pytest.mark.parametrize(("overrides", "batched"), [((), False), (("service.batch_queries=true",), True)])
def test_the_server_batches_queries_only_when_asked(
    tmp_path: Any, embedder: Any, overrides: tuple[str, ...], batched: bool
) -> None:
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    settings = load_settings("test", [f"data_dir={tmp_path}", *overrides])
    store = build_store(settings)
    try:
        service = create_app(settings, store=store, embedder=embedder, workers=1).state.service
        assert isinstance(service.embedder, BatchingQueryEmbedder) is batched
        if batched:
            assert service.embedder.inner is embedder
            service.embedder.close()
    finally:
        store.close()
