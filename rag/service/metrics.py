"""Prometheus metrics of one app: requests, latency per endpoint, errors, refusals, answers by mode.

Each app gets its own registry (not prometheus-client's global one), so two apps in one process (tests) do not
collide and /metrics shows only this server's figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
