"""Parse worker processes for the local ingest engine: a bounded look-ahead of parsed files, a hard per-file deadline.

Each worker has its own pipe, so the pool knows which process holds which file. A file whose parse runs past its
deadline (a parser stuck inside C code, where `ingest.file_timeout_s`'s SIGALRM never reaches Python) has its worker
killed and replaced; the other workers keep their files, and the run goes on. A worker that dies (a segfault, the
OOM killer) is reported the same way, naming the file it held.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Generic, TypeVar

from rag.errors import RagError

R = TypeVar("R")
Job = tuple[str, dict[str, str]]  # (source path, hashes of its stored documents)
# target(path, known, on_parsed) -> result: parse one file in the worker; calls on_parsed() once the parser returned.
Target = Callable[[str, dict[str, str], Callable[[], None]], Any]

# How often the dispatcher looks at deadlines and room in the look-ahead when nothing else wakes it.
_TICK_S = 0.2
# How long a worker asked to stop at the end of a run gets before it is killed.
_STOP_S = 5.0


@dataclass
class PoolStats:
    """Where the parse workers' time went (seconds summed over workers), filled in by `parse_in_workers`."""

    workers: int = 0
    seconds_starting: float = 0.0  # spawning and initialising (imports, tokenizer), replacements included
    seconds_queue_full: float = 0.0  # idle because the look-ahead was full: waiting for the embedder
    seconds_no_work: float = 0.0  # idle with every file handed out: the tail of the run
    killed: int = 0  # workers killed past a file's deadline
    died: int = 0  # workers that died on their own while holding a file


def _worker_main(conn: connection.Connection, initializer: Callable[..., None], initargs: tuple[Any, ...],
                 target: Target) -> None:  # fmt: skip
    """A worker process: initialise once, then parse the files sent down `conn` until told to stop (None)."""
    # Ctrl-C reaches the whole process group: the ingest process stops its workers itself (and they die with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        initializer(*initargs)
    except Exception as e:
        conn.send(("init_failed", traceback.format_exception_only(type(e), e)[-1].strip()))
        return
    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        path, known = job
        result = target(path, known, lambda: conn.send(("parsed",)))
        conn.send(("done", result))


@dataclass
class _Slot:
    process: SpawnProcess
    conn: connection.Connection
    state: str = "starting"  # starting | idle | busy
    job: Job | None = None
    started: float = 0.0  # when the job was handed over (monotonic)
    parsed: bool = False  # the parser returned; the deadline no longer applies (cleaning and chunking remain)


class _Dispatcher(Generic[R]):
    """Runs in a thread of the ingest process: hands files to idle workers while the look-ahead has room, collects
    results into `out`, kills workers past their file's deadline. Runs while the main thread embeds and writes."""

    def __init__(
        self,
        jobs: Sequence[Job],
        workers: int,
        context: SpawnContext,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
        target: Target,
        lookahead: int,
        deadline_s: Callable[[str], float | None],
        lost: Callable[[str, str], R],
        stats: PoolStats,
    ) -> None:
        self.pending: deque[Job] = deque(jobs)
        self.workers = workers
        self.context = context
        self.initializer, self.initargs, self.target = initializer, initargs, target
        self.deadline_s, self.lost, self.stats = deadline_s, lost, stats
        self.room = threading.Semaphore(lookahead)  # files handed out or parsed and not yet taken by the consumer
        self.out: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stop = threading.Event()
        self.slots: list[_Slot] = []
        self.outstanding = 0  # files handed to a worker whose result is not in `out` yet

    # -- workers ---------------------------------------------------------------------------
    def spawn(self) -> _Slot:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main, args=(child_end, self.initializer, self.initargs, self.target), daemon=True
        )
        process.start()
        child_end.close()
        return _Slot(process, parent_end)

    def replace(self, slot: _Slot) -> None:
        slot.conn.close()
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join()
        self.slots[self.slots.index(slot)] = self.spawn()

    def give_back(self, slot: _Slot, result: Any) -> None:
        slot.state, slot.job, slot.parsed = "idle", None, False
        self.outstanding -= 1
        self.out.put(("result", result))

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.slots = [self.spawn() for _ in range(self.workers)]
            self.loop()
            self.out.put(("end", None))
        except BaseException as e:  # handed to the consumer, which raises it: never lost in this thread
            self.out.put(("error", e))
        finally:
            self.shutdown()

    def loop(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            self.dispatch()
            if not self.pending and self.outstanding == 0:
                return
            now = time.monotonic()
            self.account(now - last)
            last = now
            ready = connection.wait([s.conn for s in self.slots], timeout=self.wait_s(now))
            for conn in ready:
                slot = next(s for s in self.slots if s.conn is conn)
                self.receive(slot)
            self.enforce_deadlines()

    def dispatch(self) -> None:
        for slot in self.slots:
            if slot.state != "idle" or not self.pending:
                continue
            if not self.room.acquire(blocking=False):
                return
            job = self.pending.popleft()
            try:
                slot.conn.send(job)
            except OSError:  # the worker died between jobs: its file was not handed over
                self.pending.appendleft(job)
                self.room.release()
                self.replace(slot)
                continue
            slot.state, slot.job, slot.started, slot.parsed = "busy", job, time.monotonic(), False
            self.outstanding += 1

    def account(self, dt: float) -> None:
        for slot in self.slots:
            if slot.state == "starting":
                self.stats.seconds_starting += dt
            elif slot.state == "idle":
                if self.pending:
                    self.stats.seconds_queue_full += dt
                else:
                    self.stats.seconds_no_work += dt

    def wait_s(self, now: float) -> float:
        wait = _TICK_S
        for slot in self.slots:
            if slot.state == "busy" and not slot.parsed and slot.job is not None:
                limit = self.deadline_s(slot.job[0])
                if limit is not None:
                    wait = min(wait, max(0.0, slot.started + limit - now))
        return wait

    def receive(self, slot: _Slot) -> None:
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            self.died(slot)
            return
        kind = message[0]
        if kind == "ready":
            slot.state = "idle"
        elif kind == "parsed":
            slot.parsed = True
        elif kind == "done":
            self.give_back(slot, message[1])
        elif kind == "init_failed":
            raise RagError(f"a parse worker could not start: {message[1]}")

    def died(self, slot: _Slot) -> None:
        slot.process.join(timeout=_STOP_S)
        code = slot.process.exitcode
        if slot.state == "starting":
            raise RagError(f"a parse worker died while starting ({_exit_reason(code)}): see the messages above")
        if slot.job is not None:
            self.stats.died += 1
            reason = (
                f"the parse worker reading this file died ({_exit_reason(code)}): a parser crash or the "
                "out-of-memory killer; repair or re-save the file, or ingest it alone to see its messages"
            )
            self.give_back(slot, self.lost(slot.job[0], reason))
        self.replace(slot)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.state != "busy" or slot.parsed or slot.job is None:
                continue
            limit = self.deadline_s(slot.job[0])
            if limit is None or now - slot.started < limit:
                continue
            self.stats.killed += 1
            reason = (
                f"parser did not finish within {limit:g} s: killed (stuck inside a C library on a malformed file?); "
                "repair or re-save the file, or raise ingest.file_timeout_s"
            )
            self.give_back(slot, self.lost(slot.job[0], reason))
            self.replace(slot)

    def shutdown(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError):  # already gone
                slot.conn.send(None)
        end = time.monotonic() + _STOP_S
        for slot in self.slots:
            slot.process.join(timeout=max(0.0, end - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def parse_in_workers(
    jobs: Sequence[Job],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    target: Target,
    *,
    lookahead: int,
    deadline_s: Callable[[str], float | None],
    lost: Callable[[str, str], R],
    stats: PoolStats,
) -> Iterator[R]:
    """Results of `target` over `jobs` in `workers` spawned processes, in the order they finish.

    At most `lookahead` files are handed out or parsed and waiting for the consumer, so memory stays flat, and the
    workers go on parsing while the consumer works on what it took. A file still parsing `deadline_s(path)` seconds
    after it was handed out (None: no limit) has its worker killed and replaced, and comes back as
    `lost(path, reason)`, as does a file whose worker died. RagError when a worker cannot start.
    """
    import multiprocessing

    stats.workers = workers
    # spawn, not fork: the parent may already hold torch threads and an open store.
    context = multiprocessing.get_context("spawn")
    dispatcher: _Dispatcher[R] = _Dispatcher(
        jobs, workers, context, initializer, initargs, target, lookahead, deadline_s, lost, stats
    )
    thread = threading.Thread(target=dispatcher.run, name="parse-dispatcher", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = dispatcher.out.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            dispatcher.room.release()
            yield value
    finally:
        dispatcher.stop.set()
        thread.join()
