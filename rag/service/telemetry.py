"""Traces, request ids and JSON logs of `rag serve`.

Tracing is off unless an OTLP endpoint is configured (service.otlp_endpoint, or OTEL_EXPORTER_OTLP_ENDPOINT): then
each answer is a `chat` span with one child per pipeline stage (condense, retrieve, rerank, evidence, extract,
prompt, generate, verify) and each ingest job an `ingest` span. The pipeline measures its stages itself
(`Answer.timings_ms`); the child spans are laid end to end from the request's start with those durations, so they
carry the measured time of each stage without the pipeline knowing about OpenTelemetry. No global tracer provider
is set: the app owns its provider (tests pass one with an in-memory exporter).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from rag.config import Settings

log = logging.getLogger("rag.service")
# The request being served; pool threads see it because Service.run copies the context into them.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rag_request_id", default=None)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# The order stages run in: child spans are laid out in it.
STAGES = ("condense", "retrieve", "rerank", "evidence", "extract", "prompt", "generate", "verify")
RETRIEVAL_STAGES = ("embed_dense", "embed_sparse", "search", "rerank")


def new_request_id(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token (kept for tracing across services), else a fresh one."""
    if header and _CLIENT_ID.match(header):
        return header
    return uuid.uuid4().hex


def otlp_endpoint(settings: Settings) -> str | None:
    return settings.service.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def build_tracer_provider(settings: Settings) -> Any:
    """An SDK tracer provider exporting over OTLP/HTTP when an endpoint is configured; None (tracing off) otherwise."""
    endpoint = otlp_endpoint(settings)
    if endpoint is None:
        return None
    from rag.errors import require_extra

    for module in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        require_extra(module, "serve", "tracing (service.otlp_endpoint)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter appends /v1/traces only when it reads the endpoint from the environment itself.
    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
    name = os.environ.get("OTEL_SERVICE_NAME", "rag-serve")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    log.info("tracing to %s", url)
    return provider


class Tracing:
    """Spans for answers, retrievals and ingest jobs; every method is a no-op when `provider` is None."""

    def __init__(self, provider: Any, redact: Callable[[str], str] | None = None) -> None:
        self.provider = provider
        self.redact = redact  # rag.privacy: a failed job's message may name a file or a person
        self.tracer = provider.get_tracer("rag.service") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def stages(
        self,
        name: str,
        start_ns: int,
        timings_ms: Mapping[str, float],
        order: tuple[str, ...],
        attributes: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """A `name` span from `start_ns` to now, with a child per stage in `order` that has a timing."""
        if self.tracer is None:
            return
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        end_ns = time.time_ns()
        attrs = {k: v for k, v in attributes.items() if v is not None}
        rid = request_id.get()
        if rid is not None:
            attrs["http.request_id"] = rid
        parent = self.tracer.start_span(name, start_time=start_ns, attributes=attrs)
        if error is not None:
            parent.set_status(Status(StatusCode.ERROR, self.redact(error) if self.redact else error))
        context = trace.set_span_in_context(parent)
        at = start_ns
        for stage in order:
            if stage not in timings_ms:
                continue
            took = int(timings_ms[stage] * 1_000_000)
            child = self.tracer.start_span(stage, context=context, start_time=at)
            child.set_attribute("rag.stage", stage)
            child.end(end_time=min(at + took, end_ns))
            at += took
        parent.end(end_time=max(end_ns, at))

    def answer(self, start_ns: int, answer: Any, collection: str) -> None:
        self.stages(
            "chat", start_ns, answer.timings_ms, STAGES,
            {"rag.collection": collection, "rag.mode": answer.mode, "rag.refused": answer.refused,
             "rag.refusal_reason": answer.refusal_reason, "rag.evidence": answer.evidence,
             "rag.chunks": len(answer.chunks), "rag.unsupported_sentences": len(answer.unsupported),
             "gen_ai.usage.input_tokens": answer.prompt_tokens,
             "gen_ai.usage.output_tokens": answer.completion_tokens},
        )  # fmt: skip

    def retrieval(self, start_ns: int, timings_ms: Mapping[str, float], collection: str, mode: str) -> None:
        attrs = {"rag.collection": collection, "rag.mode": mode}
        self.stages("retrieve", start_ns, timings_ms, RETRIEVAL_STAGES, attrs)

    def ingest(self, start_ns: int, job: Any, result: Any) -> None:
        """An ingest job; the parse/embed/store totals are attributes (they interleave batch by batch)."""
        attrs: dict[str, Any] = {"rag.collection": job.collection, "rag.job": job.id, "rag.files": len(job.files)}
        timings: dict[str, float] = {}
        if result is not None:
            attrs["rag.chunks"] = result.chunks_written
            for stage in ("parse", "embed", "store"):
                seconds = getattr(result, f"seconds_{stage}", None)
                if seconds is not None:
                    attrs[f"rag.seconds_{stage}"] = float(seconds)
                    timings[f"ingest.{stage}"] = float(seconds) * 1000
        order = ("ingest.parse", "ingest.embed", "ingest.store")
        self.stages("ingest", start_ns, timings, order, attrs, error=job.error)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            out["request_id"] = rid
        for key in ("method", "path", "status", "duration_ms", "client"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_text:  # first: rag.privacy's log filter leaves the traceback redacted there
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Route rag's and uvicorn's loggers to stderr, as JSON lines (or plain text); called by `rag serve`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("rag", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Requests are logged once, by the app (with the request id); uvicorn's own access line would repeat them.
    logging.getLogger("uvicorn.access").disabled = True
