"""Background ingest jobs of `rag serve`: one at a time, at low CPU priority, with progress kept in a JSON file.

The ingest itself is injected (`IngestRunner`; `rag serve` passes ingest.pipeline's), since rag/ imports nothing
from ingest. Jobs are persisted to `<data_dir>/service/jobs.json` on every state change, so a server restarted
during a job reports it `failed` (interrupted) instead of leaving it silently half done; a retry re-runs its files,
and the ingest, being resumable, writes only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from rag.config import Settings
from rag.errors import RagError

log = logging.getLogger("rag.service.jobs")

JobState = Literal["queued", "running", "done", "failed"]
ACTIVE: tuple[JobState, ...] = ("queued", "running")
_KEEP_JOBS = 500  # finished jobs kept in the file (the oldest are dropped)
_SAVE_EVERY_S = 1.0  # progress is written at most this often; state changes always


class FileProblem(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def reason(self) -> str: ...


class IngestProgressEvent(Protocol):
    @property
    def files_done(self) -> int: ...
    @property
    def files_total(self) -> int: ...
    @property
    def chunks_written(self) -> int: ...


class IngestResult(Protocol):
    """What a job reads from an ingest run's report (ingest.pipeline.IngestReport has these)."""

    @property
    def files_ingested(self) -> int: ...
    @property
    def files_unchanged(self) -> int: ...
    @property
    def chunks_written(self) -> int: ...
    @property
    def failures(self) -> Sequence[FileProblem]: ...
    @property
    def duplicates(self) -> Sequence[FileProblem]: ...


class IngestFunction(Protocol):
    """ingest.pipeline.ingest_paths' signature: files into a collection, resumable, progress reported."""

    def __call__(
        self,
        paths: Sequence[Path],
        settings: Settings,
        store: Any,
        embedder: Any,
        *,
        collection: str | None = None,
        prune: bool = False,
        progress: Callable[[Any], None] | None = None,
        access: Any = None,
    ) -> IngestResult: ...


@dataclass(frozen=True)
class IngestRunner:
    """The ingest a server runs for uploads: the function and the file extensions it can read."""

    run: IngestFunction
    extensions: frozenset[str]


@dataclass
class Job:
    """One ingest job as the API shows it (GET /v1/jobs/{id})."""

    id: str
    collection: str
    files: list[str]
    kind: Literal["ingest", "reindex", "rebuild"] = "ingest"
    state: JobState = "queued"
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    files_done: int = 0
    files_total: int = 0
    chunks: int = 0
    current: str | None = None  # the file being read or written now
    files_ingested: int = 0
    files_unchanged: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it was not ingested
    error: str | None = None  # why the whole job failed
    retry_of: str | None = None

    @property
    def outcome(self) -> str:
        """The state, with `interrupted` for a job a restart or shutdown stopped (recorded as failed)."""
        if self.state == "failed" and (self.error or "").startswith("interrupted"):
            return "interrupted"
        return self.state

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        out = asdict(self)
        out["progress"] = {"files_done": self.files_done, "files_total": self.files_total, "chunks": self.chunks}
        if root is not None:  # file names relative to the upload folder, not the server's paths
            out["files"] = [_relative(f, root) for f in self.files]
            out["current"] = _relative(self.current, root) if self.current else None
            out["errors"] = {_relative(f, root): r for f, r in self.errors.items()}
        return out


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _copy(job: Job) -> Job:
    return replace(job, files=list(job.files), errors=dict(job.errors))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class JobBook:
    """The jobs and their JSON file; every method is safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._saved = 0.0
        self._watchers: dict[str, list[Callable[[Job], object]]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            jobs = [Job(**row) for row in rows]
        except (OSError, ValueError, TypeError) as e:
            raise RagError(f"{self.path}: the job file is unreadable ({e}); move it away to start afresh") from e
        interrupted = 0
        for job in jobs:
            if job.state in ACTIVE:
                was = job.state
                job.state = "failed"
                job.finished_at = _now()
                job.error = (
                    f"interrupted: the server stopped while this job was {was} ({job.files_done} of "
                    f"{job.files_total} files done); POST /v1/jobs/{job.id}/retry re-runs it and writes only "
                    "what is missing"
                )
                interrupted += 1
            self._jobs[job.id] = job
        if interrupted:
            log.warning("%d ingest job(s) were interrupted by a restart and are marked failed", interrupted)
            self._save()

    def _save(self) -> None:
        """Write the file atomically (a crash mid-write leaves the previous version)."""
        jobs = sorted(self._jobs.values(), key=lambda j: j.created_at)
        finished = [j for j in jobs if j.state not in ACTIVE]
        for old in finished[: max(0, len(finished) - _KEEP_JOBS)]:
            del self._jobs[old.id]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(j) for j in self._jobs.values()], indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
        self._saved = time.monotonic()

    def add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            self._save()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """Newest first; jobs created within the same second (the stamps' resolution) by submission order."""
        with self._lock:
            return [j for _, j in sorted(enumerate(self._jobs.values()), key=lambda p: (p[1].created_at, p[0]))][::-1]

    def active(self, collection: str | None = None) -> list[Job]:
        with self._lock:
            return [
                j
                for j in self._jobs.values()
                if j.state in ACTIVE and (collection is None or j.collection == collection)
            ]

    def watch(self, job_id: str, callback: Callable[[Job], object]) -> tuple[Job | None, Callable[[], None]]:
        """Call `callback` with a copy of the job after each of its updates (on the updating thread: keep it short,
        e.g. a loop's call_soon_threadsafe). Returns the job as it is now (every later update reaches `callback`)
        and the function that stops the calls."""
        with self._lock:
            self._watchers.setdefault(job_id, []).append(callback)
            job = self._jobs.get(job_id)
            now = _copy(job) if job is not None else None

        def unwatch() -> None:
            with self._lock:
                callbacks = self._watchers.get(job_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._watchers.pop(job_id, None)

        return now, unwatch

    def watching(self, job_id: str | None = None) -> int:
        """How many watchers a job (or all jobs together) has: open event streams."""
        with self._lock:
            if job_id is not None:
                return len(self._watchers.get(job_id, []))
            return sum(len(c) for c in self._watchers.values())

    def update(self, job: Job, *, force: bool = True, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            if force or time.monotonic() - self._saved >= _SAVE_EVERY_S:
                self._save()
            callbacks = list(self._watchers.get(job.id, []))
            copy = _copy(job) if callbacks else None
        for callback in callbacks:
            assert copy is not None
            callback(copy)


def lower_thread_priority(nice: int) -> None:
    """Lower the calling thread's priority by `nice` (and that of the threads and processes it starts later).

    On Linux niceness is per thread, and a new thread or process inherits its creator's: torch's OpenMP team
    of this thread and the parse worker processes the ingest spawns all run at `nice`, while the query pool's
    threads keep priority 0. Elsewhere this does nothing (logged).
    """
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        # Relative to the server's own priority: a server started at nice 5 ingests at 15.
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except (AttributeError, OSError) as e:  # no per-thread priority on this OS: ingest runs at normal priority
        log.warning("cannot lower the ingest thread's priority (%s): queries may slow down during ingest", e)


class ShardOpener:
    """The store as the low-priority ingest thread sees it: collections are created on a query thread.

    An Edge shard starts its pool of search threads when it is created or opened, and on Linux they inherit the
    niceness of the thread that did it; a collection created by the ingest thread would be searched at the ingest's
    low priority for the life of the server (seen: edge-search threads at nice 10). Everything else is the store's.
    """

    def __init__(self, store: Any, pool: Executor) -> None:
        self._store = store
        self._pool = pool

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        self._pool.submit(self._store.create_collection, name, dimension, metadata).result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class JobRunner:
    """Runs jobs one at a time on a single low-priority thread, apart from the query pool.

    A daemon thread, not an executor: a server stopping mid-ingest exits at once instead of waiting for the job
    (an executor's worker is joined at exit). The job is then recorded as interrupted, and the ingest, resumable,
    redoes only what is missing when it is retried.
    """

    def __init__(
        self,
        book: JobBook,
        work: Callable[[Job, Callable[[Any], None]], IngestResult],
        nice: int,
        on_finish: Callable[[Job, IngestResult | None, int], None] | None = None,
    ) -> None:
        self.book = book
        self.work = work
        self.on_finish = on_finish
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, args=(nice,), name="rag-ingest", daemon=True)
        self._thread.start()

    def submit(
        self,
        collection: str,
        files: Sequence[Path],
        kind: Literal["ingest", "reindex", "rebuild"] = "ingest",
        retry_of: str | None = None,
    ) -> Job:
        names = [str(f) for f in files]
        job = Job(
            id=f"job-{uuid.uuid4().hex[:16]}", collection=collection, files=names, kind=kind, created_at=_now(),
            files_total=len(names), retry_of=retry_of,
        )  # fmt: skip
        self.book.add(job)
        self._queue.put(job)
        return job

    def _loop(self, nice: int) -> None:
        lower_thread_priority(nice)
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if not self._stopping:
                    self._run(job)
            finally:
                self._queue.task_done()

    def wait_idle(self) -> None:
        """Block until every submitted job has finished (tests, benchmarks)."""
        self._queue.join()

    def queued(self) -> int:
        return sum(1 for j in self.book.active() if j.state == "queued")

    def _run(self, job: Job) -> None:
        start_ns = time.time_ns()
        result: IngestResult | None = None
        self.book.update(job, state="running", started_at=_now())

        def progress(event: Any) -> None:
            self.book.update(
                job, force=False, files_done=int(event.files_done), files_total=int(event.files_total),
                chunks=int(event.chunks_written), current=getattr(event, "current", None) or None,
            )  # fmt: skip

        try:
            result = self.work(job, progress)
        except Exception as e:  # the job's failure is its result: recorded in the job and the log, not lost
            log.exception("ingest job %s failed", job.id)
            self.book.update(job, state="failed", finished_at=_now(), error=f"{type(e).__name__}: {e}")
        else:
            errors = {f.path: f.reason for f in result.failures}
            errors.update({f.path: f.reason for f in result.duplicates})
            # Some files failing is a finished job with errors; every file failing is a failed job.
            failed = bool(result.failures) and len(result.failures) >= job.files_total
            self.book.update(
                job, state="failed" if failed else "done", finished_at=_now(), files_done=job.files_total, current=None,
                chunks=result.chunks_written, files_ingested=result.files_ingested,
                files_unchanged=result.files_unchanged, errors=errors,
                error="no file could be ingested (see errors)" if failed else None,
            )  # fmt: skip
        if self.on_finish is not None:
            self.on_finish(job, result, start_ns)

    def shutdown(self) -> None:
        """Stop taking jobs; unfinished ones are recorded as interrupted now (the thread dies with the process)."""
        self._stopping = True
        for job in self.book.active():
            self.book.update(
                job, state="failed", finished_at=_now(),
                error=f"interrupted: the server shut down while this job was {job.state} ({job.files_done} of "
                f"{job.files_total} files done); POST /v1/jobs/{job.id}/retry re-runs it and writes only what is "
                "missing",
            )  # fmt: skip
        self._queue.put(None)
