"""Query embeddings of concurrent requests in one forward pass: the server's embedder, with `embed_query` batched.

Measured on this 2-core machine (MiniLM, one torch thread, under outside load): 8 queries one at a time cost 546 ms
of CPU, the same 8 as one batch 189 ms. Eight chat users each embedding their own query keep both cores busy with
eight small forward passes that mostly pay per-call overhead; batched, the same work is a third of the CPU, and a
retrieval no longer waits for seven others' passes. A query that arrives when the embedding thread is idle is
embedded at once, alone (no waiting window): unloaded latency and vectors are what the plain embedder gives.
In a batch, padding to the longest query changes a vector by at most ~1e-7 (float rounding), never its ranking in
practice (bench/serve_load.py compares loaded answers with unloaded ones: 7,134/7,134 equal).

Off by default (service.batch_queries): on 2 cores shared with other jobs it measured slower (retrieval p95 776 ms
against 555 ms, 8 chat users): one embedding thread gets one thread's share of contended cores, where four request
threads embedding side by side got four, and batches held only ~1.7 queries. Turn it on where the server has its
cores to itself and many users ask at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("rag.service")


@dataclass
class _Pending:
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    vector: np.ndarray | None = None
    error: BaseException | None = None


class BatchingQueryEmbedder:
    """The embedder with `embed_query` served by one thread that embeds every waiting query together.

    Everything else (embed_documents for ingest, identity, dimension, the model...) is the wrapped embedder's.
    """

    def __init__(self, embedder: Any, max_batch: int = 32) -> None:
        self.inner = embedder
        self.max_batch = max_batch
        self.batches = 0  # forward passes run, and queries embedded in them (tests and /metrics read these)
        self.queries = 0
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="rag-query-embed", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_query(self, text: str) -> np.ndarray:
        """One normalised query vector, as the wrapped embedder's (which raises its own error for a bad query)."""
        if not text or not text.strip() or self.inner.count_tokens(text) > self.inner.max_tokens:
            return np.asarray(self.inner.embed_query(text))  # raises the embedder's UsageError naming the problem
        pending = _Pending(text)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.vector is not None
        return pending.vector

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            try:
                vectors = self.inner.embed_documents([p.text for p in batch])
            except Exception as e:  # every waiting request gets the failure, raised in its own thread
                log.exception("embedding %d queries failed", len(batch))
                for p in batch:
                    p.error = e
            else:
                for p, v in zip(batch, vectors, strict=True):
                    p.vector = v
            self.batches += 1
            self.queries += len(batch)
            for p in batch:
                p.done.set()

    def close(self) -> None:
        """Stop the embedding thread once the queries already waiting are embedded."""
        self._queue.put(None)
