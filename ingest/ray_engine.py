"""ingest.engine=ray: parse and chunk as Ray Data tasks, embed in a pool of Ray actors, write through the driver.

The driver plans exactly as the local engine (ingest/pipeline.py `_plan`: hashes, unchanged, duplicates, prune)
and writes every chunk itself with the same deterministic ids and payloads, so a retried Ray task or a re-run
after a crash overwrites instead of duplicating. Only `prepare_with_ray` differs from the local engine: it
yields the same `PreparedFile`s, with the dense vectors already attached by the embedding actors.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ingest import pipeline
from ingest.pipeline import PreparedFile, _resolve_workers, _WorkerConfig
from rag.config import EmbedderSettings, Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import ConfigError, require_extra


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
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know


# A parse worker process is replaced after this many files: what a parser leaks stays bounded, and reloading the
# tokenizer (~0.5 s) costs little against a few hundred files. A task whose worker dies is re-run by Ray (3 times,
# its default for tasks); its chunks are still written once, by the driver, under deterministic ids.
_FILES_PER_PARSE_WORKER = 256


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
        ds = (
            ray.data.from_items(items, override_num_blocks=len(items))  # one file per block: one task per file
            # max_calls also keeps Ray Data from fusing the parse into the embedding actors (their remote args
            # differ), where it would run inside the (GPU) actors, one at a time, instead of as CPU tasks beside them.
            .map(
                partial(_prepare_row, config=config),
                num_cpus=1,
                max_calls=_FILES_PER_PARSE_WORKER,
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
            )
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["prepared"])
    finally:
        if started:
            ray.shutdown()
