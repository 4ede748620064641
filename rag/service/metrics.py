"""Prometheus metrics of one app: requests, latency per endpoint and per pipeline stage, errors, refusals, answers by
mode, tokens, checked and unsupported sentences, ingest throughput and queue depth, and the drift signals.

Each app gets its own registry (not prometheus-client's global one), so two apps in one process (tests) do not
collide and /metrics shows only this server's figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Pipeline stages: a 2 ms BM25 search to a minute-long CPU generation.
_STAGE_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry
        )
        # Buckets span a 5 ms health check to a minute-long CPU generation.
        self.latency = Histogram(
            "rag_request_seconds",
            "Time to the response's headers (a stream's first bytes), per endpoint",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        r = self.registry
        self.errors = Counter("rag_errors", "Failed requests, by endpoint and kind", ["endpoint", "type"], registry=r)
        self.answers = Counter("rag_answers", "Answers, by collection and mode", ["collection", "mode"], registry=r)
        self.refusals = Counter("rag_refusals", "Refused answers, by reason", ["collection", "reason"], registry=r)
        self.disconnects = Counter(
            "rag_stream_disconnects", "Streams the client left before the end", ["endpoint"], registry=self.registry
        )
        self.send_timeouts = Counter(
            "rag_stream_send_timeouts",
            "Streams cut off because the client took no data for service.stream_send_timeout_s",
            ["endpoint"],
            registry=r,
        )
        self.upload_timeouts = Counter(
            "rag_upload_timeouts", "Uploads cut off after service.upload_timeout_s (HTTP 408)", registry=r
        )

        self.stage_latency = Histogram(
            "rag_stage_seconds",
            "Time spent in each pipeline stage (condense, retrieve, rerank, evidence, extract, prompt, generate, "
            "verify; retrieval's embed_dense, embed_sparse, search)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("rag_tokens", "Generator tokens, by kind (prompt, completion)", ["kind"], registry=r)
        self.sentences = Counter(
            "rag_checked_sentences", "Answer sentences checked against their sources", ["supported"], registry=r
        )
        self.ingest_chunks = Counter("rag_ingest_chunks", "Chunks embedded and written by ingest jobs", registry=r)
        self.ingest_files = Counter(
            "rag_ingest_files", "Files seen by ingest jobs, by result (ingested, unchanged, failed)", ["result"],
            registry=r,
        )  # fmt: skip
        self.ingest_jobs = Counter(
            "rag_ingest_jobs", "Ingest jobs finished, by state (done, failed)", ["state"], registry=r
        )
        self.ingest_seconds = Counter("rag_ingest_seconds", "Wall time spent running ingest jobs", registry=r)
        self.ingest_rate = Gauge(
            "rag_ingest_chunks_per_second", "Throughput of the last finished ingest job", registry=r
        )

    def bind(self, queue_depth: Callable[[], int], running: Callable[[], int], drift: Any) -> None:
        """Gauges computed when scraped: the ingest queue, and the drift monitor's window (rag/service/drift.py)."""
        r = self.registry
        Gauge("rag_ingest_queue_depth", "Ingest jobs waiting to run", registry=r).set_function(queue_depth)
        Gauge("rag_ingest_running", "Ingest jobs running (0 or 1)", registry=r).set_function(running)

        def signal(key: str) -> Callable[[], float]:
            def read() -> float:
                value = drift.window_summary()[key]
                return float("nan") if value is None else float(value)

            return read

        for key, text in (
            ("refusal_rate", "Share of refused answers"),
            ("mean_evidence", "Mean evidence score of the best chunk"),
            ("far_query_share", "Share of queries far from every chunk (evidence below service.far_evidence)"),
            ("unsupported_sentence_rate", "Share of checked answer sentences found unsupported"),
        ):
            Gauge(f"rag_drift_{key}", f"{text}, over the last service.drift_window answers", registry=r).set_function(
                signal(key)
            )

        def thumbs_down() -> float:
            value = drift.feedback()["thumbs_down_rate"]
            return float("nan") if value is None else float(value)

        Gauge(
            "rag_drift_thumbs_down_rate", "Share of thumbs-down ratings in the feedback file's last window", registry=r
        ).set_function(thumbs_down)

    def bind_batching(self, batches: Callable[[], int], queries: Callable[[], int]) -> None:
        """Gauges of the query-embedding batcher (rag/service/batching.py): forward passes and queries so far."""
        r = self.registry
        Gauge("rag_query_embed_batches", "Query-embedding forward passes run", registry=r).set_function(batches)
        Gauge("rag_query_embed_queries", "Queries embedded in those passes", registry=r).set_function(queries)

    def render(self) -> bytes:
        return generate_latest(self.registry)
