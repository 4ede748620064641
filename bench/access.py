"""What the access filter costs a retrieval: the store query with and without a caller's `access` condition.

A Qdrant Edge collection of N chunks (SciFact abstracts for the BM25 side, seeded random unit vectors for the dense
side: the filter's cost is the engine's, not the model's) is labelled like a company's: each document in one of
`--groups` groups, a tenth public. Each query runs through `AccessScopedStore.search`, the path every retrieval
takes, as four callers: an admin (no filter), a key in one group (sees about 1/groups + public), one in three,
and a key in every group (the filter is evaluated but removes nothing). Query embedding is left out: it is the
same with or without the filter (~13 ms idle on this CPU, see shared/OFFLINE.md).

    HF_HUB_OFFLINE=1 python bench/access.py                 # 5000 chunks (exact search, as Edge does below ~6k)
    HF_HUB_OFFLINE=1 python bench/access.py --chunks 30000  # HNSW with a filtered graph search
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (the repository root on sys.path)

from bench._common import machine_info, reproduce_command
from rag.access.principal import PUBLIC, Principal
from rag.access.scoped import scope_store
from rag.config import SparseSettings, StoreSettings
from rag.sparse import build_sparse_encoder, measure_avg_len
from rag.store.base import PointRecord, SearchRequest
from rag.store.edge import QdrantEdgeStore

SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "beir-scifact"
DIM = 384


def _texts(n: int) -> list[str]:
    corpus = SCIFACT / "corpus.jsonl"
    if not corpus.is_file():
        sys.exit(f"SciFact not found at {corpus} (it lives in ../shared/data beside the repo)")
    rows = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            rows.append(f"{record.get('title', '')}. {record['text']}")
    # More chunks than abstracts: split each into sentences-ish pieces, cycling until there are n.
    pieces = [p.strip() for r in rows for p in r.split(". ") if len(p.split()) >= 6]
    return [pieces[i % len(pieces)] for i in range(n)]


def _queries(n: int) -> list[str]:
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:n]


def _unit(rng: random.Random) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(0)
    texts = _texts(args.chunks)
    sparse = build_sparse_encoder(SparseSettings(), measure_avg_len(texts[:2000], "english"))
    groups = [f"g{i}" for i in range(args.groups)]
    chunks_per_doc = 5
    with tempfile.TemporaryDirectory() as tmp:
        store = QdrantEdgeStore(Path(tmp), StoreSettings())
        store.create_collection("bench", DIM, {"schema_version": 1})
        t0 = time.perf_counter()
        for start in range(0, args.chunks, 1000):
            batch = texts[start : start + 1000]
            vectors = sparse.embed_documents(batch)
            points = []
            for i, (text, sv) in enumerate(zip(batch, vectors, strict=True)):
                doc = (start + i) // chunks_per_doc
                access = [PUBLIC] if doc % 10 == 0 else [groups[doc % args.groups]]
                payload = {"document_id": f"d{doc}", "access": access, "text": text}
                points.append(PointRecord(str(uuid.UUID(int=start + i)), _unit(rng), sv, payload))
            store.upsert("bench", points)
        store.flush("bench")
        store.optimize("bench")
        build_s = time.perf_counter() - t0
        callers = {
            "admin (no filter)": Principal("admin", frozenset(), admin=True),
            "one group": Principal("one", frozenset({groups[1]})),
            "three groups": Principal("three", frozenset(groups[1:4])),
            "every group": Principal("all", frozenset(groups)),
        }
        views = {name: scope_store(store, p) for name, p in callers.items()}
        visible = {name: view.count("bench") for name, view in views.items()}
        queries = [(_unit(rng), sparse.embed_query(q)) for q in _queries(args.queries)]
        results: dict[str, dict[str, dict[str, float]]] = {}
        for mode in ("hybrid", "dense", "sparse"):
            samples: dict[str, list[float]] = {name: [] for name in views}
            for rep in range(args.repeats + 1):
                for dense, sv in queries:
                    request = SearchRequest(limit=10, mode=mode, dense=dense, sparse=sv, candidates=200)  # type: ignore[arg-type]
                    order = list(views.items())
                    rng.shuffle(order)  # no caller always runs first (cache warmth, CPU frequency)
                    for name, view in order:
                        t = time.perf_counter()
                        view.search("bench", request)
                        if rep > 0:  # the first pass warms the shard
                            samples[name].append((time.perf_counter() - t) * 1000)
            base = statistics.median(samples["admin (no filter)"])
            results[mode] = {
                name: {
                    "p50_ms": round(statistics.median(s), 3),
                    "p95_ms": round(_percentile(s, 0.95), 3),
                    "p50_vs_no_filter": round(statistics.median(s) / base, 2),
                }
                for name, s in samples.items()
            }
        store.close()
    return {
        "chunks": args.chunks,
        "groups": args.groups,
        "queries": args.queries,
        "repeats": args.repeats,
        "visible_chunks": visible,
        "build_s": round(build_s, 1),
        "results": results,
        "command": reproduce_command("bench/access.py"),
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=5000, help="chunks in the collection")
    parser.add_argument("--groups", type=int, default=10, help="access groups the documents are spread over")
    parser.add_argument("--queries", type=int, default=200, help="SciFact queries")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['chunks']} chunks, {report['groups']} groups, {report['queries']} queries x {report['repeats']}")
    print("visible chunks: " + ", ".join(f"{k} {v}" for k, v in report["visible_chunks"].items()))
    for mode, rows in report["results"].items():
        for name, r in rows.items():
            print(
                f"  {mode:<7} {name:<18} p50 {r['p50_ms']:7.3f} ms  p95 {r['p95_ms']:7.3f} ms  "
                f"x{r['p50_vs_no_filter']:.2f}"
            )
    m = report["machine"]
    print(f"machine: {m['processor']} {m['cpu_count']} cores, load {m['loadavg_1m_5m_at_end']}")
    print(f"reproduce: {report['command']}")


if __name__ == "__main__":
    main()
