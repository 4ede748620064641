"""Query latency of the embedded store (Qdrant Edge) by stage, at ~10k and ~100k chunks, and the reranker vs the CPU.

The collections are built from a real ingested BEIR collection (SciFact by default): its points are
read from a copy of its shard (the original is never opened) and written under new ids; the larger
sizes repeat them. Queries are the dataset's test queries, embedded per query as `rag query` does.

Usage (from the repository root):
    python bench/query.py --source-data-dir /work/scifact-data --source-collection beir-beir-scifact \
        [--sizes 10000,100000] [--queries 300] [--rerank-queries 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, emit, machine_info, reproduce_command  # noqa: E402
from bench.ingest import encoder_flops_per_token  # noqa: E402
from bench.matmul import measure_machine  # noqa: E402

DEFAULT_BEIR = REPO.parent / "shared" / "data" / "beir-scifact"
# Fixed, so the copied collections get the same ids on every run.
ID_NAMESPACE = uuid.UUID("5b0c1a52-7f0e-4c55-9d1e-2f4f3c6b8a10")
WARMUP_QUERIES = 10


# -- the source collection -----------------------------------------------------------------
def _lock_held(wal_dir: Path) -> bool:
    """Whether some process holds the shard's lock (Edge flocks its `wal` folder), read from /proc/locks.

    Read passively rather than by trying the lock: a probe that briefly took it could make the
    owner's own reopen fail with WouldBlock.
    """
    locks = Path("/proc/locks")
    if not locks.is_file():
        return False  # not Linux: the copy is loaded anyway; a half-written one fails there
    st = wal_dir.stat()
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(key in line.split() for line in locks.read_text().splitlines())


def copy_source(data_dir: Path, name: str | None, dest: Path, wait_s: float) -> tuple[str, Path]:
    """Copy the source collection's folder into `dest` once no process holds it; return (name, copy)."""
    root = data_dir / "qdrant"
    if name is None:
        names = sorted(p.name for p in root.iterdir() if (p / "collection.json").is_file()) if root.is_dir() else []
        if len(names) != 1:
            sys.exit(f"{root}: expected exactly one collection, found {names or 'none'}; pass --source-collection")
        name = names[0]
    folder = root / name
    if not (folder / "collection.json").is_file():
        sys.exit(f"{folder}: no collection.json; pass --source-data-dir and --source-collection of an ingested one")
    deadline = time.monotonic() + wait_s
    if _lock_held(folder / "shard" / "wal"):
        print(f"waiting up to {wait_s:.0f} s: {folder} is open in another process", file=sys.stderr)
    while _lock_held(folder / "shard" / "wal"):
        if time.monotonic() > deadline:
            sys.exit(f"{folder} is still open in another process after {wait_s:.0f} s; raise --wait-s")
        time.sleep(1)  # short: another run may open it again soon after this one closes it
    copy = dest / name
    shutil.copytree(folder, copy)
    return name, copy


def read_points(shard_dir: Path) -> tuple[list[str], Any, list[tuple[tuple[int, ...], tuple[float, ...]]], list[Any]]:
    """Every point of an Edge shard, read with qdrant_edge directly: ids, dense matrix, sparse vectors, payloads."""
    import numpy as np
    import qdrant_edge as q

    shard = q.EdgeShard.load(str(shard_dir))
    ids: list[str] = []
    dense: list[list[float]] = []
    sparse: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    payloads: list[Any] = []
    offset = None
    try:
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(offset=offset, limit=1024, with_vector=True, with_payload=True)
            )
            for rec in records:
                ids.append(str(rec.id))
                named: Any = rec.vector  # {"dense": [...], "sparse": SparseVector} for our collections
                dense.append(named["dense"])
                sv = named["sparse"]
                sparse.append((tuple(sv.indices), tuple(sv.values)))
                payloads.append(dict(rec.payload or {}))
            if offset is None:
                break
    finally:
        shard.close()
    return ids, np.asarray(dense, dtype=np.float32), sparse, payloads


# -- building the sized collections --------------------------------------------------------
def copies_for(size: int, available: int) -> Iterator[tuple[int, int]]:
    """(copy index, source index) for `size` points: the source in order, repeated as often as needed."""
    for i in range(size):
        yield divmod(i, available)


def build_collection(
    store: Any, name: str, size: int, metadata: dict[str, Any], source: tuple[Any, ...], batch: int = 1024
) -> dict[str, Any]:
    from rag.sparse import SparseVector
    from rag.store.base import PointRecord

    ids, dense, sparse, payloads = source
    store.create_collection(name, int(dense.shape[1]), metadata)
    t0 = time.perf_counter()
    pending: list[PointRecord] = []
    for copy, i in copies_for(size, len(ids)):
        indices, values = sparse[i]
        pending.append(
            PointRecord(
                str(uuid.uuid5(ID_NAMESPACE, f"{copy}:{ids[i]}")),
                dense[i].tolist(),
                SparseVector(indices, values),
                payloads[i],
            )
        )
        if len(pending) == batch:
            store.upsert(name, pending)
            pending = []
    store.upsert(name, pending)
    store.flush(name)
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.optimize(name)
    store.flush(name)
    optimize_s = time.perf_counter() - t0
    # The shard's own info (private accessor): shows whether HNSW covers every vector.
    info = store._shard(name).info()
    return {
        "chunks": store.count(name),
        "copies": math.ceil(size / len(ids)),
        "repeats": round(size / len(ids), 2),
        "upsert_s": round(upsert_s, 2),
        "optimize_s": round(optimize_s, 2),
        "segments": info.segments_count,
        "indexed_vectors": info.indexed_vectors_count,
    }


# -- measuring -----------------------------------------------------------------------------
class OtherCpu:
    """Share of the machine's CPU that other processes used between start() and share(), from /proc/stat.

    The load average lags by minutes and counts this process too; this is what disturbed a phase.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        stat = Path("/proc/stat")
        if not stat.is_file():
            return None
        fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def start(self) -> OtherCpu:
        self._start = self._snapshot()
        return self

    def share(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self._start, strict=True))
        return round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 50), 3),
        "p95": round(pct(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def time_queries(retriever: Any, queries: Sequence[str], mode: str, top_k: int) -> dict[str, dict[str, float]]:
    """Per-stage timings of `retriever.retrieve` over `queries`; "total" is the wall time of the call."""
    stages: dict[str, list[float]] = {}
    for query in queries[:WARMUP_QUERIES]:
        retriever.retrieve(query, top_k=top_k, mode=mode)
    for query in queries:
        t0 = time.perf_counter()
        result = retriever.retrieve(query, top_k=top_k, mode=mode)
        total = (time.perf_counter() - t0) * 1000
        for stage, ms in {**result.timings_ms, "total": total}.items():
            stages.setdefault(stage, []).append(ms)
    return {stage: summary(ms) for stage, ms in stages.items()}


def bench_size(store: Any, name: str, settings: Any, embedder: Any, queries: Sequence[str]) -> dict[str, Any]:
    from rag.collections import open_collection
    from rag.retrieval import QdrantHybridRetriever

    handle = open_collection(store, name, settings, embedder)
    retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
    top_k = settings.retrieval.top_k
    other = OtherCpu().start()
    return {
        "hybrid": time_queries(retriever, queries, "hybrid", top_k),
        "dense": time_queries(retriever, queries, "dense", top_k),
        "sparse": time_queries(retriever, queries, "sparse", top_k),
        "other_cpu_share": other.share(),
    }


def build_untrained_cross_encoder(embedder_path: str, folder: Path, max_length: int) -> str:
    """The cross-encoder `rag finetune retrieval` trains (MiniLM-L6, mean pooling, one-score head), untrained:
    a trained one of this shape costs exactly the same."""
    from rag.reranking import build_cross_encoder

    build_cross_encoder(embedder_path, max_length).save_pretrained(str(folder))
    return str(folder)


def pair_flops(config: dict[str, Any], lengths: Sequence[int]) -> float:
    """Forward FLOPs of the encoder over pairs of these token lengths (attention grows with each pair's own length)."""
    total = 0.0
    for n in lengths:
        linear, attention = encoder_flops_per_token(config, n)
        total += n * (linear + attention)
    return total


def bench_rerank(
    store: Any,
    name: str,
    settings: Any,
    embedder: Any,
    queries: Sequence[str],
    model_dir: Path,
    top_n: int,
    peak_flops: float,
) -> dict[str, Any]:
    import torch

    from rag.collections import open_collection
    from rag.config import RerankSettings
    from rag.reranking import BATCH_OVERHEAD_TOKENS, CrossEncoderReranker, plan_batches
    from rag.retrieval import QdrantHybridRetriever, search

    max_length = settings.rerank.max_length
    path = build_untrained_cross_encoder(embedder.model_path, model_dir, max_length)
    reranker = CrossEncoderReranker(
        RerankSettings(
            kind="cross-encoder",
            model=path,
            top_n=top_n,
            max_length=max_length,
            batch_size=max(top_n, 32),
            device="cpu",
        ),
        path,
    )
    handle = open_collection(store, name, settings, embedder)
    retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    for query in queries[:3]:  # warm-up: first forward passes allocate
        search(retriever, reranker, query, top_k=top_n, mode="hybrid")
    rerank_ms, real_tokens, padded_tokens, floors_ms, ratios, padded_ratios = [], [], [], [], [], []
    one_batch_ms: list[float] = []
    n_batches: list[int] = []
    other = OtherCpu().start()
    for query in queries:
        result = search(retriever, reranker, query, top_k=top_n, mode="hybrid")
        texts = [c.text for c in result.chunks]
        # What the model reads: each pair truncated to the window, as CrossEncoder.predict tokenizes it.
        lengths = reranker.pair_lengths(query, texts)
        floor_ms = pair_flops(config, lengths) / peak_flops * 1000
        # Each length-sorted sub-batch is padded to its longest pair: the model computes on these tokens.
        batches = plan_batches(lengths, reranker.settings.batch_size, BATCH_OVERHEAD_TOKENS)
        padded = [lengths[b[0]] for b in batches for _ in b]
        n_batches.append(len(batches))
        ms = result.timings_ms["rerank"]
        rerank_ms.append(ms)
        real_tokens.append(sum(lengths))
        padded_tokens.append(sum(padded))
        floors_ms.append(floor_ms)
        ratios.append(ms / floor_ms)
        padded_ratios.append(ms / (pair_flops(config, padded) / peak_flops * 1000))
        # For comparison: the same pairs in one batch padded to the longest (what sub-batching replaced).
        t0 = time.perf_counter()
        with torch.inference_mode():
            reranker.model.predict([(query, t) for t in texts], batch_size=len(texts), show_progress_bar=False)
        one_batch_ms.append((time.perf_counter() - t0) * 1000)
    per_token_linear, _ = encoder_flops_per_token(config, 0)
    return {
        "queries": len(queries),
        "pairs_per_query": top_n,
        "max_length": max_length,
        "rerank_ms": summary(rerank_ms),
        "tokens_per_query_mean": round(statistics.fmean(real_tokens), 1),
        "tokens_per_pair_mean": round(statistics.fmean(real_tokens) / top_n, 1),
        "padded_tokens_per_query_mean": round(statistics.fmean(padded_tokens), 1),
        "mflop_per_token_linear": round(per_token_linear / 1e6, 2),
        "floor_ms": summary(floors_ms),
        "ratio_to_floor": summary(ratios),
        "ratio_to_floor_incl_padding": summary(padded_ratios),
        "ratio_p50_over_floor_p50": round(pct(rerank_ms, 50) / pct(floors_ms, 50), 2),
        "sub_batches_per_query_mean": round(statistics.fmean(n_batches), 2),
        "one_batch_ms": summary(one_batch_ms),
        "one_batch_ratio_to_floor": summary([m / f for m, f in zip(one_batch_ms, floors_ms, strict=True)]),
        "ms_per_pair_p50": round(pct(rerank_ms, 50) / top_n, 1),
        "other_cpu_share": other.share(),
    }


# -- report --------------------------------------------------------------------------------
def print_table(result: dict[str, Any]) -> None:
    src = result["source"]
    sizes = result["sizes"]
    print(
        f"source: {src['collection']} ({src['chunks']} chunks, {src['data_dir']}); "
        f"{result['queries']} {src['queries_from']} queries, hybrid top_k {result['top_k']}, "
        f"{result['fusion']} over {result['candidates']} candidates per list, hnsw_ef {result['hnsw_ef']}"
    )
    for s in sizes:
        if s["repeats"] > 1:
            print(
                f"{s['chunks']:,} = {src['collection']} chunks repeated {s['repeats']} times "
                f"({s['copies']} copies, the last partial) under new ids"
            )
        else:
            print(f"{s['chunks']:,} = the first {s['chunks']:,} chunks of {src['collection']}")
    head = "".join(f"{s['chunks']:>16,}" for s in sizes)
    print(f"\n{'ms, p50 / p95':34}{head}")

    def row(label: str, cell: Any) -> None:
        print(f"{label:34}" + "".join(f"{cell(s):>16}" for s in sizes))

    for stage in ("embed_dense", "embed_sparse", "search", "total"):
        row(f"hybrid {stage}", lambda s, st=stage: f"{s['hybrid'][st]['p50']:.2f} / {s['hybrid'][st]['p95']:.2f}")
    row("  store share of hybrid p50", lambda s: f"{s['hybrid']['search']['p50'] / s['hybrid']['total']['p50']:.0%}")
    row("dense-only search", lambda s: f"{s['dense']['search']['p50']:.2f} / {s['dense']['search']['p95']:.2f}")
    row("sparse-only search", lambda s: f"{s['sparse']['search']['p50']:.2f} / {s['sparse']['search']['p95']:.2f}")
    row("build: upsert s / HNSW optimize s", lambda s: f"{s['upsert_s']} / {s['optimize_s']}")
    row("indexed vectors (dense+sparse)", lambda s: f"{s['indexed_vectors']:,}")
    row("segments", lambda s: s["segments"])
    row(
        "other processes' CPU while timing",
        lambda s: "n/a" if s["other_cpu_share"] is None else f"{s['other_cpu_share']:.0%}",
    )

    largest = max(sizes, key=lambda s: s["chunks"])
    p50 = largest["hybrid"]["total"]["p50"]
    goal = result["goals"]["hybrid_p50_ms"]
    print(
        f"\nhybrid p50 at {largest['chunks']:,} chunks: {p50:.1f} ms (goal <= {goal} ms: "
        f"{'met' if p50 <= goal else 'NOT met'}); of which query embedding "
        f"{largest['hybrid']['embed_dense']['p50']:.1f} ms, store {largest['hybrid']['search']['p50']:.2f} ms"
    )
    rr = result.get("rerank")
    if rr:
        ratio = rr["ratio_to_floor"]["p50"]
        limit = result["goals"]["rerank_ratio_to_floor"]
        print(
            f"rerank {rr['pairs_per_query']} candidates ({rr['queries']} queries, {rr['tokens_per_pair_mean']} tokens "
            f"per pair, {rr['padded_tokens_per_query_mean']:.0f} incl. padding per query): "
            f"p50 {rr['rerank_ms']['p50']:.0f} ms, p95 {rr['rerank_ms']['p95']:.0f} ms; "
            f"matmul floor p50 {rr['floor_ms']['p50']:.0f} ms; other processes' CPU meanwhile "
            f"{'n/a' if rr['other_cpu_share'] is None else format(rr['other_cpu_share'], '.0%')}"
        )
        print(
            f"rerank / matmul floor: p50 {ratio:.3f}x, p95 {rr['ratio_to_floor']['p95']:.2f}x "
            f"(goal <= {limit}x: {'met' if ratio <= limit else 'NOT met'}; floor = real tokens x "
            f"({rr['mflop_per_token_linear']} MFLOP linear + attention at each pair's length) / "
            f"{result['matmul_gflops_best']:.1f} GFLOP/s); counting the padding the sub-batches compute: "
            f"p50 {rr['ratio_to_floor_incl_padding']['p50']:.2f}x"
        )
        print(
            f"length-sorted sub-batches: {rr['sub_batches_per_query_mean']} per query; the same pairs as one "
            f"padded batch: p50 {rr['one_batch_ms']['p50']:.0f} ms = {rr['one_batch_ratio_to_floor']['p50']:.3f}x "
            "the floor"
        )
    print("\nfp32 matmul: " + ", ".join(f"{r['shape']} {r['gflops_best']:.1f} GFLOP/s" for r in result["matmul"]))
    print("machine:", ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    shares = [s["other_cpu_share"] for s in sizes] + [rr["other_cpu_share"] if rr else None]
    busiest = max((x for x in shares if x is not None), default=0.0)
    if busiest > 0.1:
        print(
            f"note: other processes used up to {busiest:.0%} of the CPU while timing; torch's threads then wait "
            "on descheduled peers, so latencies are inflated: rerun on an idle machine"
        )
    print("reproduce:", result["command"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-data-dir", type=Path, required=True, help="data_dir holding the ingested collection")
    parser.add_argument("--source-collection", help="default: the only collection in --source-data-dir")
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="BEIR folder whose test queries are used")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--queries", type=int, default=300, help="test queries timed per size and mode")
    parser.add_argument("--rerank-queries", type=int, default=50, help="queries reranked (0 = skip)")
    parser.add_argument("--rerank-top-n", type=int, default=20, help="fused candidates the cross-encoder scores")
    parser.add_argument("--wait-s", type=float, default=1800, help="how long to wait for the source to be released")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set_option(parser, "retrieval.hnsw_ef=64")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    from transformers.utils import logging as hf_logging

    from eval.beir import load_beir
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store

    hf_logging.set_verbosity_error()  # the untrained head's "newly initialized" report is expected
    hf_logging.disable_progress_bar()
    dataset = load_beir(args.beir, "test")
    queries = list(dataset.queries.values())[: args.queries]

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        settings = load_settings(None, [f"data_dir={tmp}/data", *args.overrides])
        source_name, copy = copy_source(args.source_data_dir, args.source_collection, Path(tmp) / "source", args.wait_s)
        metadata = json.loads((copy / "collection.json").read_text(encoding="utf-8"))
        source = read_points(copy / "shard")
        shutil.rmtree(copy)
        embedder = build_embedder(settings)
        embedder.warm_up()  # weights load before any timing
        results: list[dict[str, Any]] = []
        with build_store(settings) as store:
            for size in sizes:
                name = f"bench-{size}"
                built = build_collection(store, name, size, metadata, source)
                print(
                    f"built {name}: upsert {built['upsert_s']} s, optimize {built['optimize_s']} s",
                    file=sys.stderr,
                )
                results.append({**built, **bench_size(store, name, settings, embedder, queries)})
            rates = measure_machine(seconds=2.0)
            peak = max(r.gflops_best for r in rates) * 1e9
            rerank = None
            if args.rerank_queries:
                largest = f"bench-{max(sizes)}"
                rerank = bench_rerank(
                    store,
                    largest,
                    settings,
                    embedder,
                    queries[: args.rerank_queries],
                    Path(tmp) / "cross-encoder",
                    args.rerank_top_n,
                    peak,
                )
                rerank["collection_chunks"] = max(sizes)

    result: dict[str, Any] = {
        "source": {
            "data_dir": str(args.source_data_dir),
            "collection": source_name,
            "chunks": len(source[0]),
            "queries_from": f"{dataset.name} {dataset.split}",
        },
        "queries": len(queries),
        "top_k": settings.retrieval.top_k,
        "candidates": settings.retrieval.candidates,
        "fusion": settings.retrieval.fusion,
        "hnsw_ef": settings.retrieval.hnsw_ef,
        "sizes": results,
        "rerank": rerank,
        "goals": {"hybrid_p50_ms": 25, "rerank_ratio_to_floor": 1.5},
        "matmul": [r.__dict__ for r in rates],
        "matmul_gflops_best": round(peak / 1e9, 1),
        "machine": machine_info(
            loadavg_1m_5m_at_start=[round(x, 2) for x in load_at_start[:2]] if load_at_start else None
        ),
        "command": reproduce_command("bench/query.py"),
    }
    emit(result, args.json, print_table)


if __name__ == "__main__":
    main()
