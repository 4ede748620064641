"""The HTTP app of `rag serve`: OpenAI-compatible chat over a collection, retrieval, models, health and metrics.

One process owns the store and one set of models (embedder, reranker, generator), built once here; every request
builds a light `RagPipeline` around them (the answer cache and sentence vectors are shared through the models).
Pipeline work (retrieval, quoting, generation) runs in a thread pool, so the event loop keeps answering
/healthz, /metrics and other streams while a CPU generation runs.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from rag.answering import Answer, AnswerStream, Turn
from rag.config import Settings
from rag.errors import CollectionNotFoundError, EmbedderMismatchError, RagError, StoreError, UsageError
from rag.generation import GenerationOptions
from rag.privacy import build_redactor
from rag.service.auth import KeyAuth, caller, caller_store, error_status, may_open
from rag.service.batching import BatchingQueryEmbedder
from rag.service.core import ApiError, Service
from rag.service.documents import Library
from rag.service.documents_api import build_router
from rag.service.drift import DriftMonitor
from rag.service.jobs import IngestResult, IngestRunner, Job, JobBook, JobRunner, ShardOpener
from rag.service.metrics import ServiceMetrics
from rag.service.schemas import ChatMessage, ChatRequest, RetrieveRequest, error_body
from rag.service.streaming import BoundedStreamingResponse
from rag.service.telemetry import Tracing, build_tracer_provider, new_request_id, request_id
from rag.store.base import VectorStore

log = logging.getLogger("rag.service")
access = logging.getLogger("rag.service.access")
_QUIET = ("/healthz", "/readyz", "/metrics")  # probes and scrapes every few seconds: not worth a log line each
T = TypeVar("T")
_END = object()  # next()'s default: StopIteration cannot travel through an executor future


def split_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[Turn]]:
    """The last user message is the question; earlier user/assistant pairs are the history (system ones ignored)."""
    last = messages[-1]
    if last.role != "user":
        raise ApiError(
            400,
            f"messages.{len(messages) - 1}.role: the last message must be the user's question, not {last.role!r}",
            "invalid_request_error",
            f"messages.{len(messages) - 1}.role",
        )
    question = last.text.strip()
    if not question:
        raise ApiError(
            400,
            f"messages.{len(messages) - 1}.content: the question is empty",
            "invalid_request_error",
            f"messages.{len(messages) - 1}.content",
        )
    history: list[Turn] = []
    asked: str | None = None
    for m in messages[:-1]:
        if m.role == "user":
            asked = m.text
        elif m.role == "assistant" and asked is not None:
            history.append(Turn(asked, m.text))
            asked = None
    return question, history


def citation_dicts(answer: Answer) -> list[dict[str, Any]]:
    """Each citation with the quoted spans of its chunk that back the answer (offsets into the chunk's stored text)."""
    texts = {c.number: c.chunk.text for c in answer.chunks}
    out = []
    for c in answer.citations:
        spans = [{"text": q.text, "start": q.start, "end": q.end} for q in answer.quotes if q.number == c.number]
        if not spans:  # generated answers: the source sentences the checker matched (answer.verify on)
            for s in answer.support:
                if s.source == c.number and s.span is not None and c.number in texts:
                    start, end = s.span
                    spans.append({"text": texts[c.number][start:end], "start": start, "end": end})
        out.append({**asdict(c), "quotes": spans})
    return out


def answer_fields(answer: Answer) -> dict[str, Any]:
    """What a RAG answer adds to OpenAI's response; the openai client exposes these as attributes (model_extra)."""
    return {
        "citations": citation_dicts(answer),
        "refused": answer.refused,
        "refusal_reason": answer.refusal_reason,
        "mode": answer.mode,
        "evidence": answer.evidence,
        "query": answer.query,
        "unsupported": [s.text for s in answer.unsupported],
        "timings_ms": {k: round(v, 2) for k, v in answer.timings_ms.items()},
        # What a client needs to show the answer as the chat app does (ui/ through a server, rag/client.py):
        # the prompt's chunks with their stored text (quote offsets point into it), the closest passages of a
        # refusal without prompt chunks, each sentence's check with its offsets, and the answering model.
        "chunks": [_chunk_dict(c.chunk, c.number, c.truncated) for c in answer.chunks],
        "retrieved": [] if answer.chunks else [_chunk_dict(c, i) for i, c in enumerate(answer.retrieved[:20], 1)],
        "support": [asdict(s) for s in answer.support],
        "removed": [asdict(s) for s in answer.removed],
        "generator": answer.model,
        "cached": answer.cached,
        "dropped_citations": answer.dropped_citations,
    }


# The payload fields a chunk is shown with (never the whole payload: it holds the access groups).
_SHOWN_PAYLOAD = (
    "text", "document_id", "source", "source_name", "title", "record_id", "pages", "section_path", "chunk_index",
    "chunk_count", "char_start", "char_end",
)  # fmt: skip


def _chunk_dict(chunk: Any, number: int, truncated: bool = False) -> dict[str, Any]:
    payload = {k: chunk.payload[k] for k in _SHOWN_PAYLOAD if k in chunk.payload}
    return {"number": number, "id": chunk.id, "score": chunk.score, "stage_scores": chunk.stage_scores,
            "truncated": truncated, "payload": payload}  # fmt: skip


def usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, default=str)}\n\n"


def _stop(stream: AnswerStream, it: Iterator[str], pending: Future[Any] | None) -> None:
    """Stop reading an abandoned answer: closing the delta chain sets the generator's stop event.

    A delta being produced in a worker thread cannot be interrupted (closing a running generator is an error), so
    then the chain is closed by that thread as soon as the delta is done; the model stops at its next token.
    """

    def close() -> None:
        closer = getattr(it, "close", None)
        if closer is not None:
            closer()
        stream.close()

    if pending is not None and not pending.done():
        pending.add_done_callback(lambda _f: close())
    else:
        close()


def create_app(
    settings: Settings,
    *,
    store: VectorStore | None = None,
    embedder: Any = None,
    generator: Any = None,
    reranker: Any = None,
    workers: int = 4,
    ingest: IngestRunner | None = None,
    dependencies: Sequence[Any] = (),
    tracer_provider: Any = None,
) -> FastAPI:
    """The app; models and store not passed in are built from `settings` (weights load at startup, in the pool).

    `ingest` (rag serve passes ingest.pipeline's) turns on uploads; without it they answer 501. `dependencies`
    (FastAPI `Depends(...)`, e.g. an API key check) guard every /v1 route; health, readiness and metrics stay open.
    `tracer_provider`: an OpenTelemetry SDK provider; default: OTLP export when configured (telemetry.py), else off.
    """
    from rag import factory

    if embedder is None:
        embedder = factory.build_embedder(_one_thread_per_request(settings))
    log_redact = build_redactor(settings.privacy).redact if settings.privacy.redact_logs else None
    batcher = BatchingQueryEmbedder(embedder) if settings.service.batch_queries else None
    service = Service(
        settings=settings,
        store=store if store is not None else factory.build_store(settings),
        embedder=batcher if batcher is not None else embedder,
        generator=generator if generator is not None else factory.build_generator(settings),
        reranker=reranker if reranker is not None else factory.build_reranker(settings.rerank, settings.models_dir),
        pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rag-serve"),
        owns_store=store is None,
        library=Library(settings.data_dir),
        ingest=ingest,
        tracing=Tracing(
            tracer_provider if tracer_provider is not None else build_tracer_provider(settings),
            redact=log_redact,
        ),
        drift=DriftMonitor.from_settings(settings),
    )
    if ingest is not None:
        service.jobs = JobRunner(
            JobBook(settings.data_dir.resolve() / "service" / "jobs.json"),
            lambda job, progress: run_ingest_job(service, job, progress),
            settings.service.ingest_nice,
            on_finish=lambda job, result, start_ns: _ingest_finished(service, job, result, start_ns),
        )
    jobs = service.jobs
    service.metrics.bind(
        queue_depth=lambda: jobs.queued() if jobs is not None else 0,
        running=lambda: sum(j.state == "running" for j in jobs.book.active()) if jobs is not None else 0,
        drift=service.drift,
    )
    if batcher is not None:
        service.metrics.bind_batching(lambda: batcher.batches, lambda: batcher.queries)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loading runs in the background: /healthz answers at once, /readyz says 503 until the models are in.
        warming = asyncio.get_running_loop().run_in_executor(service.pool, service.warm_up)
        try:
            yield
        finally:
            warming.cancel()
            service.pool.shutdown(wait=False, cancel_futures=True)
            if service.jobs is not None:
                service.jobs.shutdown()
            if batcher is not None:
                batcher.close()
            if service.owns_store:
                service.store.close()
            service.tracing.shutdown()

    app = FastAPI(title="rag serve", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, redact=log_redact)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e["loc"] if x != "body") or "body"
            problems.append(f"{where}: {e['msg']}")
        first = exc.errors()[0] if exc.errors() else {"loc": ()}
        param = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return JSONResponse(error_body("; ".join(problems), "invalid_request_error", param), status_code=400)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        if (access_status := error_status(exc)) is not None:  # 401 a bad key, 403 no rights (rag/service/auth.py)
            kind = "invalid_request_error" if access_status == 401 else "permission_error"
            code = "invalid_api_key" if access_status == 401 else "forbidden"
            return JSONResponse(error_body(str(exc), kind, None, code), status_code=access_status)
        if isinstance(exc, CollectionNotFoundError):
            return JSONResponse(error_body(str(exc), "not_found_error", "model", "model_not_found"), status_code=404)
        if isinstance(exc, UsageError):
            return JSONResponse(error_body(str(exc), "invalid_request_error"), status_code=400)
        log.error("request failed: %s", exc)
        # A store that is busy or unreachable is worth retrying; anything else is this server's failure.
        status = 503 if isinstance(exc, StoreError) and not isinstance(exc, EmbedderMismatchError) else 500
        return JSONResponse(error_body(str(exc), "server_error"), status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Models loaded and store reachable (readiness); 503 with the reasons otherwise."""
        problems = []
        if service.warmup_error:
            problems.append(f"models failed to load: {service.warmup_error}")
        elif not service.ready:
            problems.append("models are loading")
        try:
            collections = await service.run(service.store.list_collections)
        except Exception as e:  # reported in the response and the log
            log.warning("store unreachable: %s", e)
            problems.append(f"store unreachable: {type(e).__name__}: {e}")
            collections = []
        body = {
            "ready": not problems,
            "problems": problems,
            "answer_mode": service.answer_mode,
            "store": settings.store.resolved_kind,
            "collections": len(collections),
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # Every /v1 route knows its caller (access.auth); the library filters what that caller reads.
    guarded = [Depends(KeyAuth(settings)), *dependencies]
    v1 = APIRouter(dependencies=guarded)

    @v1.get("/v1/monitoring")
    async def monitoring() -> dict[str, Any]:
        """Drift signals (recent window against since start), the feedback file's thumbs-down rate, ingest queue."""
        assert service.drift is not None
        snapshot = await service.run(service.drift.snapshot)
        active = service.jobs.book.active() if service.jobs is not None else []
        snapshot["ingest"] = {
            "queued": sum(j.state == "queued" for j in active),
            "running": [j.id for j in active if j.state == "running"],
        }
        snapshot["tracing"] = service.tracing.enabled
        return snapshot

    @v1.get("/v1/me")
    async def me(request: Request) -> dict[str, Any]:
        """Who the caller's key belongs to (what a client such as the chat app signs in with) and its rights."""
        principal = caller(request)
        return {"object": "principal", "name": principal.name, "admin": principal.admin,
                "groups": sorted(principal.groups), "auth": settings.access.auth}  # fmt: skip

    @v1.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        """The collections the caller may use, as OpenAI models: `model` in a chat request names one."""

        def rows() -> list[dict[str, Any]]:
            out = []
            view = caller_store(request, service.store)
            for name in sorted(service.store.list_collections()):
                if not may_open(service.store, name, request):
                    continue
                meta = service.store.get_metadata(name)
                out.append(
                    {
                        "id": name,
                        "object": "model",
                        "created": _epoch(meta.get("created_at")),
                        "owned_by": "rag",
                        "chunks": view.count(name),
                        "embedder": meta.get("embedder", {}).get("name"),
                    }
                )
            return out

        return {"object": "list", "data": await service.run(rows)}

    @v1.post("/v1/retrieve")
    async def retrieve(body: RetrieveRequest, request: Request) -> dict[str, Any]:
        """Ranked chunks with each stage's score, as `rag query --json`."""
        from rag.retrieval import retrieval_to_dict, search

        name = body.collection or settings.store.collection

        start_ns = time.time_ns()

        def work() -> dict[str, Any]:
            pipeline = service.pipeline(name, "collection", caller(request))
            handle = pipeline.retriever.handle
            filters = _filters(body.filters, handle)
            reranker = pipeline.reranker if body.rerank else None
            result = search(pipeline.retriever, reranker, body.query, top_k=body.top_k, mode=body.mode, filters=filters)
            constraint = pipeline.retriever.last_constraint
            _observe_stages(service.metrics, result.timings_ms)
            service.tracing.retrieval(start_ns, result.timings_ms, name, result.mode)
            return {**retrieval_to_dict(result, reranker, constraint), "collection": name}

        return await service.run(work)

    def _filters(specs: list[str], handle: Any) -> Any:
        from rag.retrieval import parse_filters

        try:
            return parse_filters(specs, handle.payload_fields, handle.payload_types)
        except UsageError as e:
            raise ApiError(400, f"filters: {e}", "invalid_request_error", "filters") from e

    @v1.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> JSONResponse | BoundedStreamingResponse:
        """OpenAI's chat completions over the collection named by `model`; citations travel in extra fields."""
        question, history = split_messages(body.messages)
        options = GenerationOptions.from_settings(
            settings.generator,
            max_new_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
        )
        if body.stop:
            options = replace(options, stop=body.stop_sequences())

        def start() -> AnswerStream:
            pipeline = service.pipeline(body.model, "model", caller(request))
            filters = _filters(body.filters, pipeline.retriever.handle)
            return pipeline.stream(
                question, history=history, filters=filters, mode=body.retrieval_mode, rerank=body.rerank,
                options=options,
            )  # fmt: skip

        start_ns = time.time_ns()
        stream = await service.run(start)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not body.stream:
            answer = await service.run(stream.read)
            _observe(service, body.model, answer, start_ns)
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer.text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage(answer),
                    **answer_fields(answer),
                }
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return BoundedStreamingResponse(
            _stream_events(service, stream, cid, created, body.model, include_usage, start_ns),
            send_timeout_s=settings.service.stream_send_timeout_s,
            on_timeout=lambda: service.metrics.send_timeouts.labels("/v1/chat/completions").inc(),
        )

    app.include_router(v1)
    app.include_router(build_router(service, guarded))
    return app


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's connection limits from service.*, set here rather than left to uvicorn's defaults: the keep-alive
    of idle connections, the largest request head (h11, whose limit is configurable), connections at once."""
    service = settings.service
    return {
        "http": "h11",
        "timeout_keep_alive": service.keep_alive_s,
        "h11_max_incomplete_event_size": service.max_header_kb * 1024,
        "limit_concurrency": service.max_connections,
    }


def _one_thread_per_request(settings: Settings) -> Settings:
    """The settings the server's embedder is built with: one torch thread unless embedder.threads says otherwise.

    A server embeds for several requests at once; one thread each beats two each fighting over the cores
    (bench/serve_load.py, 4 chat users and an upload on 2 cores: chat p95 215 ms against 365 ms, hybrid
    retrieval p95 111 ms against 259 ms, 30% more answers in the minute).
    """
    if settings.embedder.threads is not None:
        return settings
    return settings.model_copy(update={"embedder": settings.embedder.model_copy(update={"threads": 1})})


def run_ingest_job(service: Service, job: Job, progress: Callable[[Any], None]) -> IngestResult:
    """One job on the ingest thread: (rebuild: drop the collection first) then ingest the job's files."""
    from rag.collections import delete_collection

    assert service.ingest is not None
    settings = service.settings
    if job.kind == "rebuild" and service.store.collection_exists(job.collection):
        delete_collection(service.store, job.collection, settings.cache_dir)
    files = [Path(f) for f in job.files if Path(f).is_file()]
    if not files:
        raise RagError("none of the job's files exist any more (deleted since the upload?): upload them again")
    if service.store.collection_exists(job.collection):  # opened here at the queries' priority (ShardOpener)
        service.pool.submit(service.store.count, job.collection).result()
    store = ShardOpener(service.store, service.pool)
    access = upload_access(settings, service.library, job.collection) if service.library is not None else None
    return service.ingest.run(
        files, settings, store, service.embedder, collection=job.collection, progress=progress, access=access
    )


def upload_access(settings: Settings, library: Library, collection: str) -> Any:
    """The groups each uploaded file of `collection` was given at upload, as exact-path rules; None when no upload
    recorded any (documents then keep the groups already stored, new ones are public)."""
    import glob

    from rag.access.rules import AccessRule, DocumentAccess

    recorded = library.groups(collection)
    if not recorded:
        return None
    folder = library.folder(collection)
    rules = tuple(AccessRule(glob.escape(str(folder / name)), tuple(groups)) for name, groups in recorded.items())
    return DocumentAccess(rules=rules, rules_file="the groups given at upload", require=settings.access.require_groups)


async def _stream_events(
    service: Service, stream: AnswerStream, cid: str, created: int, model: str, include_usage: bool, start_ns: int
) -> AsyncIterator[str]:
    """SSE chunks: the role, each text delta, then a last chunk with finish_reason and the citations; [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return _sse(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
        )

    it = iter(stream)
    # The thread pool's own future, not asyncio's wrapper: cancelling the wrapper (a disconnect) marks it done
    # while the thread still runs, and the delta chain must not be closed under that thread.
    pending: Future[Any] | None = None
    finished = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            pending = service.pool.submit(next, it, _END)
            delta = await asyncio.wrap_future(pending)
            pending = None
            if delta is _END:
                break
            if delta:
                yield chunk({"content": delta})
        finished = True
        answer = stream.answer
        assert answer is not None  # set by the stream when its iteration ends
        _observe(service, model, answer, start_ns)
        yield chunk({}, "stop", **answer_fields(answer))
        if include_usage:
            yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": usage(answer)})  # fmt: skip
        yield "data: [DONE]\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        service.metrics.disconnects.labels("/v1/chat/completions").inc()
        raise
    except RagError as e:  # the headers are sent: the error travels as an event OpenAI's clients raise
        finished = True
        log.error("stream failed: %s", e)
        service.metrics.errors.labels("/v1/chat/completions", "stream").inc()
        yield _sse(error_body(str(e), "server_error"))
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            _stop(stream, it, pending)


def _observe(service: Service, collection: str, answer: Answer, start_ns: int) -> None:
    """An answer's metrics (counts, refusals, stage times, tokens, checked sentences), drift window and trace."""
    metrics = service.metrics
    metrics.answers.labels(collection, answer.mode).inc()
    if answer.refused:
        metrics.refusals.labels(collection, answer.refusal_reason or "unknown").inc()
    _observe_stages(metrics, answer.timings_ms)
    metrics.tokens.labels("prompt").inc(answer.prompt_tokens)
    metrics.tokens.labels("completion").inc(answer.completion_tokens)
    unsupported = len(answer.unsupported)
    if answer.support:
        metrics.sentences.labels("true").inc(len(answer.support) - unsupported)
        metrics.sentences.labels("false").inc(unsupported)
    if service.drift is not None:
        service.drift.observe(answer)
    service.tracing.answer(start_ns, answer, collection)


def _observe_stages(metrics: ServiceMetrics, timings_ms: dict[str, float]) -> None:
    for stage, ms in timings_ms.items():
        if stage != "ttft":  # time to first token lies inside generate, not a stage of its own
            metrics.stage_latency.labels(stage).observe(ms / 1000)


def _ingest_finished(service: Service, job: Job, result: IngestResult | None, start_ns: int) -> None:
    metrics = service.metrics
    metrics.ingest_jobs.labels(job.state).inc()
    seconds = (time.time_ns() - start_ns) / 1e9
    metrics.ingest_seconds.inc(seconds)
    if result is not None:
        metrics.ingest_chunks.inc(result.chunks_written)
        metrics.ingest_files.labels("ingested").inc(result.files_ingested)
        metrics.ingest_files.labels("unchanged").inc(result.files_unchanged)
        metrics.ingest_files.labels("failed").inc(len(result.failures))
        if seconds > 0:
            metrics.ingest_rate.set(result.chunks_written / seconds)
    log.info(
        "ingest job %s %s: %d/%d files, %d chunks in %.1f s",
        job.id, job.state, job.files_done, job.files_total, job.chunks, seconds,
    )  # fmt: skip
    service.tracing.ingest(start_ns, job, result)


def _epoch(stamp: Any) -> int:
    """A collection's created_at ('2026-11-23T10:00:00Z') as Unix seconds; 0 when absent or unreadable."""
    if not isinstance(stamp, str):
        return 0
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0


class MetricsMiddleware:
    """Per request: a request id (the client's X-Request-ID or a fresh one, echoed in the response and set for the
    logs), the count and latency under the route's path template (bounded label values), and one access log line."""

    def __init__(self, app: Any, metrics: ServiceMetrics, redact: Callable[[str], str] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # The access line is redacted here, once per distinct value, and marked so rag.privacy's log filter passes
        # it as it is. Filtered there, every line ran Presidio's phone matcher over its path and client address
        # on the event loop (they have digits): py-spy showed the loop busy there under 8 chat users, every
        # request waiting behind it. Paths, methods and addresses repeat, so a small cache makes it free.
        self._redact = functools.lru_cache(maxsize=4096)(redact) if redact is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = new_request_id(headers.get(b"x-request-id", b"").decode("latin-1") or None)
        token = request_id.set(rid)
        status = 500

        def endpoint() -> str:
            route = scope.get("route")
            return str(getattr(route, "path", "unmatched"))

        async def send_timed(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                name = endpoint()
                self.metrics.latency.labels(name).observe(time.perf_counter() - start)
                self.metrics.requests.labels(name, scope["method"], str(status)).inc()
                if status >= 400 and name != "/readyz":  # "not ready yet" is the probe's answer, not a failure
                    self.metrics.errors.labels(name, "client" if status < 500 else "server").inc()
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        except Exception:
            name = endpoint()
            self.metrics.requests.labels(name, scope["method"], "500").inc()
            self.metrics.errors.labels(name, "server").inc()
            raise
        finally:
            if scope.get("path") not in _QUIET:
                self._log(scope, status, start)
            request_id.reset(token)

    def _log(self, scope: dict[str, Any], status: int, start: float) -> None:
        client = scope.get("client")
        method, path, address = str(scope["method"]), str(scope.get("path")), client[0] if client else None
        extra: dict[str, Any] = {}
        if self._redact is not None:
            method, path = self._redact(method), self._redact(path)
            address = self._redact(address) if address else None
            extra["_rag_redacted"] = True
        access.info(
            "%s %s %d", method, path, status,
            extra={**extra, "method": method, "path": path, "status": status,
                   "duration_ms": round((time.perf_counter() - start) * 1000, 1), "client": address},
        )  # fmt: skip
