"""Server-sent event streams of `rag serve`: a streaming response that cuts off a client that stops reading, and
the progress events of an ingest job (GET /v1/jobs/{id}/events).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Send

from rag.service.jobs import ACTIVE, Job, JobBook

log = logging.getLogger("rag.service")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of events


class _SlowClient(Exception):
    """A send did not complete within the stream's send timeout."""


class BoundedStreamingResponse(StreamingResponse):
    """A StreamingResponse whose every send must complete within `send_timeout_s`.

    A client that stops reading fills the socket's buffers, and then uvicorn's send waits for it to drain, forever:
    the body iterator is not resumed, so a generation stream would hold the generator (its lock) for as long as the
    client keeps the connection open. On the timeout the body iterator is closed (its `finally` stops the
    generation), `on_timeout` is called, and the response ends unfinished (uvicorn then closes the connection).
    """

    def __init__(
        self,
        content: AsyncIterator[str],
        *,
        send_timeout_s: float,
        on_timeout: Callable[[], None],
        media_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers if headers is not None else SSE_HEADERS)
        self.send_timeout_s = send_timeout_s
        self.on_timeout = on_timeout

    async def stream_response(self, send: Send) -> None:
        async def bounded(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), self.send_timeout_s)
            except TimeoutError as e:
                raise _SlowClient from e

        try:
            await super().stream_response(bounded)
        except _SlowClient:
            log.warning(
                "a streaming client took no data for service.stream_send_timeout_s=%g s: stream cut off",
                self.send_timeout_s,
            )
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                await closer()
            self.on_timeout()


def sse_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


def _progress(job: Job) -> tuple[Any, ...]:
    return (job.state, job.files_done, job.files_total, job.chunks, job.current)


async def stream_job(
    book: JobBook, job_id: str, render: Callable[[Job], dict[str, Any]], heartbeat_s: float
) -> AsyncIterator[str]:
    """The job now, then one event per change of its progress (state, files done of total, chunks, current file),
    named by its state; the stream ends after the done, failed or interrupted event. A comment line every
    `heartbeat_s` keeps proxies from closing a quiet stream (a large file can take minutes)."""
    loop = asyncio.get_running_loop()
    changes: asyncio.Queue[Job] = asyncio.Queue()
    # The first snapshot and the watch are taken together: every later update is queued, none lost or repeated.
    first, unwatch = book.watch(job_id, lambda job: loop.call_soon_threadsafe(changes.put_nowait, job))
    try:
        job = first
        if job is None:  # deleted from the book between the route's check and now
            return
        last: tuple[Any, ...] | None = None
        while True:
            if _progress(job) != last:
                last = _progress(job)
                yield sse_event(job.outcome, render(job))
            if job.state not in ACTIVE:
                return
            try:
                job = await asyncio.wait_for(changes.get(), heartbeat_s)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:  # the end, a client that left (GeneratorExit) or a cut-off slow client: stop the callbacks
        unwatch()
