"""What every route of `rag serve` shares: the service state (settings, store, models, pools, jobs, metrics) and
the API's error type. A module of its own so route modules import it, not the app.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag.access.principal import Principal
from rag.answering import RagPipeline
from rag.config import Settings
from rag.service.documents import Library
from rag.service.drift import DriftMonitor
from rag.service.jobs import IngestRunner, JobRunner
from rag.service.metrics import ServiceMetrics
from rag.service.telemetry import Tracing
from rag.store.base import VectorStore

log = logging.getLogger("rag.service")
T = TypeVar("T")


class ApiError(Exception):
    """A request the API refuses: HTTP status, OpenAI error type, and the request field at fault."""

    def __init__(self, status: int, message: str, kind: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param
        self.code = code


@dataclass
class Service:
    """What the routes share: settings, the store, the models built once, the worker pool and the metrics."""

    settings: Settings
    store: VectorStore
    embedder: Any
    generator: Any
    reranker: Any
    pool: ThreadPoolExecutor
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    owns_store: bool = False
    ready: bool = False
    warmup_error: str | None = None
    answer_mode: str | None = None
    library: Library | None = None
    ingest: IngestRunner | None = None
    jobs: JobRunner | None = None
    tracing: Tracing = field(default_factory=lambda: Tracing(None))
    drift: DriftMonitor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # The context travels with the work, so logs written in the pool carry the request id.
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    def warm_up(self) -> None:
        """Load the weights the answers need now, not on the first question (readyz waits for this)."""
        from rag.modes import resolve_mode

        try:
            _ = self.embedder.model
            if self.reranker is not None:
                self.reranker.warm_up()
            self.answer_mode = resolve_mode(self.generator, self.settings)
            if self.answer_mode == "generate":  # quoted answers never call the generator
                self.generator.warm_up()
        except Exception as e:  # reported by /readyz and logged, never hidden
            self.warmup_error = f"{type(e).__name__}: {e}"
            log.exception("loading the models failed")
            return
        self.ready = True

    def pipeline(self, collection: str, param: str, principal: Principal) -> RagPipeline:
        """The collection's pipeline as `principal` sees it (rag/service/auth.py: `caller(request)`)."""
        from rag.factory import build_pipeline

        if not self.store.collection_exists(collection):
            if self.library is not None and collection in self.library.declared():
                raise ApiError(
                    404,
                    f"{param}: collection {collection!r} has no documents yet: upload some with "
                    f"POST /v1/collections/{collection}/documents",
                    "not_found_error",
                    param,
                    "model_not_found",
                )
            known = ", ".join(sorted(self.store.list_collections())) or "none"
            raise ApiError(
                404,
                f"{param}: collection {collection!r} does not exist (collections: {known}; GET /v1/models lists them)",
                "not_found_error",
                param,
                "model_not_found",
            )
        return build_pipeline(  # type: ignore[no-any-return]
            self.settings, self.store, collection, embedder=self.embedder, generator=self.generator,
            reranker=self.reranker, principal=principal,
        )  # fmt: skip
