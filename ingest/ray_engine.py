"""ingest.engine=ray: parse and chunk as Ray Data tasks, embed in a pool of Ray actors, write from the driver or
(on a Qdrant server) from a pool of Ray writer actors.

The driver plans exactly as the local engine (ingest/pipeline.py `_plan`: hashes, unchanged, duplicates, prune)
and builds every point itself with the same deterministic ids and payloads, so a retried Ray task or a re-run
after a crash overwrites instead of duplicating. `prepare_with_ray` yields the same `PreparedFile`s as the local
engine, with the dense vectors already attached by the embedding actors; `pooled_writes` sends the upserts of a
store that other processes can reach (a Qdrant server) through writer actors, in bounded batches.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ingest import pipeline
from ingest.pipeline import PreparedFile, _resolve_workers, _WorkerConfig
from rag.config import EmbedderSettings, Settings, StoreSettings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import ConfigError, StoreError, require_extra
from rag.store.base import Filter, PointRecord, ScoredPoint, SearchRequest, VectorStore


def connect(settings: Settings) -> bool:
    """Join the cluster at RAY_ADDRESS, or start a local Ray; True when this call started it (and should stop it).

    A Ray already initialised in this process (a test fixture, a notebook) is used as it is.
    """
    require_extra("ray", "distributed", "ingest.engine=ray")
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        _probe(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, TimeoutError) as e:
            raise ConfigError(
                f"RAY_ADDRESS={address}: no Ray cluster answers there ({e}); start one (`ray start --head`) "
                "or unset RAY_ADDRESS to run a local Ray"
            ) from e
        return True
    num_cpus = settings.ingest.ray_num_cpus or os.cpu_count() or 1
    ray.init(num_cpus=num_cpus, **quiet)
    return True


# How long a RAY_ADDRESS may take to accept a connection. ray.init itself retries for minutes (measured here:
# still waiting after 5 min on a closed port), so an address that does not answer is checked first.
_PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    """ConfigError unless the head at `address` ('host:port' or 'ray://host:port') accepts a TCP connection."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=_PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({e}); start one (`ray start --head`) "
            "or unset RAY_ADDRESS to run a local Ray"
        ) from e


def _quiet() -> None:
    """Ray Data's progress bars and per-run INFO lines would interleave with `rag ingest`'s own progress."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the local engine's order: the same first owner of a hash
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = -1  # a file that fails past its retries is reported by prepare_with_ray, not fatal
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know


# A parse worker process is replaced after this many files: what a parser leaks stays bounded, and reloading the
# tokenizer (~0.5 s) costs little against a few hundred files.
_FILES_PER_PARSE_WORKER = 256

# A task whose worker process dies (a parser crash, out of memory, a lost node) is re-run this many times, and an
# embedding actor that dies is restarted and its batch retried as often. Ray Data's own default is to retry for
# ever: one file that always kills its worker would hang the run. Past the bound the file is reported by name.
# The chunks of a retried task are still written once, by the driver, under deterministic ids.
_RETRIES = 3


# -- Ray worker side ------------------------------------------------------------------------
def _prepare_row(row: dict[str, Any], config: _WorkerConfig) -> dict[str, Any]:
    """One Ray task: parse, clean and chunk one file (the tokenizer loads once per worker process, not per file)."""
    if pipeline._worker_config != config:
        pipeline._init_worker(config)
    prepared = pipeline.prepare_file(str(row["path"]), json.loads(row["known"]))
    # Pickled whole: a PreparedFile is nested dataclasses that Arrow cannot hold as columns.
    return {"path": row["path"], "prepared": pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)}


class _EmbedActor:
    """One embedding model per actor, loaded in the constructor: never per batch."""

    def __init__(self, embedder_settings: EmbedderSettings, cache_dir: Path | None, batch_chunks: int) -> None:
        self.embedder = SentenceTransformerEmbedder(embedder_settings, cache_dir)
        self.batch_chunks = batch_chunks

    def __call__(self, batch: Any) -> Any:  # a pyarrow Table of prepared files in, the same with vectors out
        import pyarrow as pa

        files: list[PreparedFile] = [pickle.loads(blob) for blob in batch.column("prepared").to_pylist()]
        texts = [chunk.embed_text for f in files for d in f.documents for chunk in d.chunks]
        vectors: list[Any] = []
        started = time.perf_counter()
        for start in range(0, len(texts), self.batch_chunks):
            vectors.extend(self.embedder.embed_documents(texts[start : start + self.batch_chunks]))
        seconds = time.perf_counter() - started
        out, at = [], 0
        for f in files:
            docs = []
            for d in f.documents:
                docs.append(replace(d, vectors=tuple(vectors[at : at + len(d.chunks)])))
                at += len(d.chunks)
            share = seconds * sum(len(d.chunks) for d in docs) / max(1, len(texts))  # the batch's time, by chunks
            done = replace(f, documents=tuple(docs), seconds_embed=share)
            out.append(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({"path": batch.column("path"), "prepared": pa.array(out, pa.binary())})


# -- driver side ----------------------------------------------------------------------------
def prepare_with_ray(
    jobs: Sequence[tuple[str, dict[str, str]]],
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    boilerplate: frozenset[str] = frozenset(),
) -> Iterator[PreparedFile]:
    """Prepared files with their chunks' dense vectors, in `jobs` order (as the local engine yields them).

    Ray Data streams: parse tasks run ahead of the embedding actors only as far as its back-pressure lets them,
    so memory stays bounded by the blocks in flight, not by the corpus.
    """
    if not jobs:
        return
    started = connect(settings)
    import ray

    try:
        _quiet()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = settings.ingest.ray_embed_actors
        if gpus and actors > gpus:
            raise ConfigError(
                f"ingest.ray_embed_actors={actors}: the cluster has {gpus} GPUs, one actor per GPU; lower it"
            )
        config = _WorkerConfig(embedder.model_path, embedder.max_tokens, settings, boilerplate=boilerplate)
        items = [{"path": path, "known": json.dumps(known)} for path, known in jobs]
        parse_workers = _resolve_workers(settings.ingest.workers) or 1
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args (removal in 2.64: pyproject caps ray below it) but has no named
            # max_retries / max_restarts / max_task_retries yet.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = (
                ray.data.from_items(items, override_num_blocks=len(items))  # one file per block: one task per file
                # max_calls also keeps Ray Data from fusing the parse into the embedding actors (their remote args
                # differ), where it would run inside the (GPU) actors, one at a time, instead of as CPU tasks
                # beside them.
                .map(
                    partial(_prepare_row, config=config),
                    num_cpus=1,
                    max_calls=_FILES_PER_PARSE_WORKER,
                    max_retries=_RETRIES,
                    compute=ray.data.TaskPoolStrategy(size=parse_workers),
                )
                .map_batches(
                    _EmbedActor,
                    fn_constructor_kwargs={
                        "embedder_settings": embedder.settings,
                        "cache_dir": embedder.cache_dir,
                        "batch_chunks": settings.ingest.embed_batch_chunks,
                    },
                    batch_size=settings.ingest.queue_files,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=actors),
                    num_gpus=1 if gpus else 0,
                    num_cpus=0 if gpus else 1,
                    max_restarts=_RETRIES,
                    max_task_retries=_RETRIES,
                )
            )
        done: set[str] = set()
        for row in ds.iter_rows():
            done.add(row["path"])
            yield pickle.loads(row["prepared"])
        # Blocks (files) whose task failed past its retries are skipped (DataContext.max_errored_blocks): the
        # others are written, and these reported by name, never left out silently.
        for path, _ in jobs:
            if path not in done:
                reason = (
                    f"its Ray worker died {_RETRIES + 1} times while parsing or embedding it (a parser crash, "
                    "out of memory or a lost node: see the Ray worker logs); the other files were written"
                )
                yield PreparedFile(path, failure=reason)
    finally:
        if started:
            ray.shutdown()


# -- writes to a store that other processes can reach (a Qdrant server): a pool of writer actors -----------------
# One upsert: (collection, points). Built once per writer actor by a picklable factory (a server client each).
WriteFn = Callable[[str, Sequence[PointRecord]], None]
WriterFactory = Callable[[], WriteFn]

# Seconds before the second try of a refused upsert; doubled for each later try (0.5, 1, 2 s...): long enough for
# a Qdrant node's restart to be noticed by the cluster, short enough that a node that stays down stops the run soon.
_RETRY_BACKOFF_S = 0.5


def _server_writer(store_settings: StoreSettings, needs_key: bool) -> WriteFn:
    """Inside a writer actor: its own client of the Qdrant server (connections are not shared across processes).

    The URL comes resolved from the driver; the API key from this node's own QDRANT_API_KEY, so the secret never
    travels through Ray's object store.
    """
    from rag.store.server import QdrantServerStore

    if needs_key and store_settings.api_key is None:
        raise StoreError(
            f"QDRANT_API_KEY is not set on Ray node {socket.gethostname()}: the ingest driver has one; set it in "
            "every Ray node's environment (docker-compose.ray.yml does) so the writer actors can reach Qdrant"
        )
    return QdrantServerStore(store_settings).upsert


def writer_factory(store: VectorStore, settings: Settings) -> WriterFactory | None:
    """How writer actors reach `store`, or None when only this process can write it (the embedded stores).

    A store may offer its own (`remote_writer()`, returning a factory): how the tests run the real actor pool
    against a store several processes reach through Ray.
    """
    own = getattr(store, "remote_writer", None)
    if callable(own):
        factory: WriterFactory = own()
        return factory
    if store.backend == "server":
        resolved = settings.store.model_copy(update={"url": settings.store.resolved_url})
        return partial(_server_writer, resolved, settings.store.api_key is not None)
    return None


class _WriterActor:
    """Upserts batches of points with bounded retries; a retry is safe, as ids are deterministic."""

    def __init__(self, factory: WriterFactory, attempts: int, backoff_s: float) -> None:
        self.write = factory()
        self.attempts = attempts
        self.backoff_s = backoff_s

    def upsert(self, collection: str, points: Sequence[PointRecord]) -> int:
        for attempt in range(1, self.attempts + 1):
            try:
                self.write(collection, points)
                return len(points)
            except StoreError as e:
                reason = str(getattr(e, "cause", None) or e).splitlines()[0]  # a Ray-wrapped error: its cause
                if attempt == self.attempts:
                    raise StoreError(f"{len(points)} points refused {self.attempts} times, last: {reason}") from e
                logging.getLogger(__name__).warning("upsert try %d of %d refused: %s", attempt, self.attempts, reason)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last try returns or raises")


class PooledWriteStore(VectorStore):
    """`inner` with its upserts sent to Ray writer actors: `batch` points per call, at most `in_flight` calls
    pending (the driver waits beyond that: back-pressure, so memory stays bounded when the store is slower than
    the embedding). Every other call (delete, flush, reads) first waits for the pending upserts, so the pipeline's
    order holds: a document's stale chunks are dropped only once its new ones are all stored.

    A batch refused past its retries stops the run with a StoreError saying what was written (chunks, whole and
    partial documents) and a JSON report beside the ingest reports; a re-run redoes the partial documents.
    """

    def __init__(
        self, inner: VectorStore, actors: Sequence[Any], batch: int, in_flight: int, reports_dir: Path
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.actors = list(actors)
        self.batch = batch
        self.in_flight = in_flight
        self.reports_dir = reports_dir
        self.pending: dict[Any, list[tuple[str, int]]] = {}  # ObjectRef -> (document id, chunk count) per point
        self.calls = 0
        self.chunks_written = 0
        self.stored: Counter[str] = Counter()  # chunks stored per document by this run
        self.totals: dict[str, int] = {}

    # -- the pooled write --
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        for start in range(0, len(points), self.batch):
            part = list(points[start : start + self.batch])
            while len(self.pending) >= self.in_flight:
                self._settle(everything=False)
            actor = self.actors[self.calls % len(self.actors)]
            self.calls += 1
            docs = [(str(p.payload.get("document_id")), int(p.payload.get("chunk_count", 0))) for p in part]
            self.pending[actor.upsert.remote(name, part)] = docs

    def drain(self) -> None:
        """Wait for every pending upsert; StoreError (with what was written) if one was refused for good."""
        while self.pending:
            self._settle(everything=True)

    def _settle(self, everything: bool) -> None:
        import ray

        refs = list(self.pending)
        ready, _ = ray.wait(refs, num_returns=len(refs) if everything else 1)
        failure = None
        for ref in ready:
            failure = self._collect(ref) or failure
        if failure is not None:
            rest = list(self.pending)  # what else was under way: finish it, so the report is exact
            if rest:
                ray.wait(rest, num_returns=len(rest))
            for ref in rest:
                self._collect(ref)
            raise StoreError(self._stopped(failure)) from failure

    def _collect(self, ref: Any) -> BaseException | None:
        import ray

        docs = self.pending.pop(ref)
        try:
            ray.get(ref)
        except (StoreError, ray.exceptions.RayError) as e:  # refused past its tries, or the actor lost for good
            return e
        self.chunks_written += len(docs)
        for doc_id, total in docs:
            self.stored[doc_id] += 1
            self.totals[doc_id] = total
        return None

    def _stopped(self, failure: BaseException) -> str:
        """The one-line error of a refused write, after writing the report of what was stored."""
        whole = sorted(d for d, n in self.stored.items() if n >= self.totals[d])
        partial_docs = sorted(d for d, n in self.stored.items() if n < self.totals[d])
        cause = getattr(failure, "cause", None) or failure  # a RayTaskError carries the actor's exception
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.reports_dir / f"ingest-stopped-{stamp}-{os.getpid()}.json"
        report = {
            "error": str(cause).splitlines()[0] if str(cause) else type(cause).__name__,
            "chunks_written": self.chunks_written,
            "documents_whole": whole,
            "documents_partial": partial_docs,
        }
        path.write_text(json.dumps(report, indent=2), encoding="utf-8")
        return (
            f"the store refused writes: {report['error']}; written before the run stopped: {self.chunks_written} "
            f"chunks, {len(whole)} documents whole, {len(partial_docs)} partial (report: {path}); re-run the "
            "ingest once the store accepts writes: it keeps the whole documents and redoes the partial ones"
        )

    # -- everything else: after the pending upserts, on the driver's own connection --
    def list_collections(self) -> list[str]:
        self.drain()
        return self.inner.list_collections()

    def collection_exists(self, name: str) -> bool:
        self.drain()
        return self.inner.collection_exists(name)

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        self.drain()
        self.inner.create_collection(name, dimension, metadata)

    def get_metadata(self, name: str) -> dict[str, Any]:
        self.drain()
        return self.inner.get_metadata(name)

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        self.drain()
        self.inner.set_metadata(name, metadata)

    def delete_collection(self, name: str) -> None:
        self.drain()
        self.inner.delete_collection(name)

    def delete(self, name: str, flt: Filter) -> None:
        self.drain()
        self.inner.delete(name, flt)

    def create_keyword_index(self, name: str, field: str) -> None:
        self.drain()
        self.inner.create_keyword_index(name, field)

    def set_payload(self, name: str, flt: Filter, payload: dict[str, Any]) -> None:
        self.drain()
        self.inner.set_payload(name, flt, payload)

    def count(self, name: str, flt: Filter | None = None) -> int:
        self.drain()
        return self.inner.count(name, flt)

    def scroll(
        self, name: str, flt: Filter | None = None, fields: Sequence[str] | None = None, batch: int = 1024
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.drain()
        return self.inner.scroll(name, flt, fields, batch)

    def retrieve(self, name: str, ids: Sequence[str]) -> list[ScoredPoint]:
        self.drain()
        return self.inner.retrieve(name, ids)

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        self.drain()
        return self.inner.dense_vectors(name, ids)

    def search(self, name: str, request: SearchRequest) -> list[ScoredPoint]:
        self.drain()
        return self.inner.search(name, request)

    def flush(self, name: str) -> None:
        self.drain()
        self.inner.flush(name)

    def optimize(self, name: str) -> None:
        self.drain()
        self.inner.optimize(name)

    def close(self) -> None:
        """The pool is the caller's (pooled_writes); the inner store stays open for it to close."""
        self.drain()


@contextmanager
def pooled_writes(settings: Settings, store: VectorStore) -> Iterator[VectorStore]:
    """`store` with upserts through `ingest.ray_writers` Ray writer actors when other processes can reach it
    (writer_factory); else `store` itself, written by this process alone (the embedded stores).

    Ray is joined (or started) here for the whole run, so the actors outlive the parse and embedding stage.
    """
    factory = writer_factory(store, settings)
    if factory is None:
        yield store
        return
    started = connect(settings)
    import ray

    ingest = settings.ingest
    actors: list[Any] = []
    try:
        # num_cpus=0: writers wait on the network, they must not take a parse task's CPU. A writer lost with its
        # node is restarted and its batch re-sent (an upsert under the same ids is idempotent).
        writer = ray.remote(num_cpus=0, max_restarts=_RETRIES, max_task_retries=_RETRIES)(_WriterActor)
        actors = [
            writer.remote(factory, ingest.ray_write_attempts, _RETRY_BACKOFF_S) for _ in range(ingest.ray_writers)
        ]
        pooled = PooledWriteStore(store, actors, ingest.ray_write_batch, 2 * ingest.ray_writers, settings.reports_dir)
        yield pooled
        pooled.drain()
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
