"""The int8 embedder against fp32: SciFact nDCG@10 (dense, exact search), speed, and how close the vectors are.

Both sides run through `SentenceTransformerEmbedder`, the class ingest and queries use: `embedder.backend=torch`
(fp32) and `embedder.backend=onnx-int8` (exported and quantised once into a temporary cache here). Each SciFact
document is embedded whole as "title. text" (the model truncates at its window, the same for both), every test
query is searched exactly over all of them, and nDCG@10 is compared per query with a paired bootstrap.

Usage (from the repository root):
    python bench/embed_int8.py [--limit 1000] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (the repository root first on sys.path: see bench/_path.py)
import numpy as np

from bench._common import emit, machine_info, machine_line, reproduce_command
from eval.beir import iter_corpus, load_beir
from eval.metrics import ndcg_at_k
from eval.stats import paired_bootstrap
from rag.config import EmbedderSettings
from rag.embedding import SentenceTransformerEmbedder

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "beir-scifact"


def _embed(backend: str, threads: int, cache: Path, docs: list[str], queries: list[str]) -> dict[str, Any]:
    settings = EmbedderSettings.model_validate({"backend": backend, "device": "cpu", "threads": threads})
    embedder = SentenceTransformerEmbedder(settings, cache)
    started = time.perf_counter()
    embedder.warm_up()  # int8: the one-time export is timed here, not in the docs/s below
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    doc_vectors = embedder.embed_documents(docs)
    docs_s = time.perf_counter() - started
    started = time.perf_counter()
    query_vectors = np.stack([embedder.embed_query(q) for q in queries])
    query_ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
    return {
        "backend": backend,
        "load_s": round(load_s, 1),
        "docs_per_s": round(len(docs) / docs_s, 1),
        "query_ms": round(query_ms, 1),
        "docs": doc_vectors,
        "queries": query_vectors,
    }


def _ndcg(doc_ids: list[str], docs: np.ndarray, queries: np.ndarray, qrels: list[dict[str, int]]) -> list[float]:
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :10]
    return [ndcg_at_k([doc_ids[j] for j in row], rel, 10) for row, rel in zip(top, qrels, strict=True)]


def _summary(side: dict[str, Any], ndcg: list[float]) -> dict[str, Any]:
    return {k: v for k, v in side.items() if k not in ("docs", "queries")} | {"ndcg@10": float(np.mean(ndcg))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a BEIR folder (default: shared SciFact)")
    parser.add_argument("--limit", type=int, default=None, help="the first N documents only (quick check)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both backends")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data}: BEIR folder not found (shared data absent?)")

    dataset = load_beir(args.data)
    records = list(iter_corpus(dataset.corpus_path))[: args.limit]
    doc_ids = [r["_id"] for r in records]
    docs = [f"{r.get('title', '')}. {r['text']}".strip(". ") for r in records]
    known = set(doc_ids)
    judged = [(qid, q) for qid, q in dataset.queries.items() if known & set(dataset.qrels[qid])]
    queries = [q for _, q in judged]
    qrels = [dataset.qrels[qid] for qid, _ in judged]

    with tempfile.TemporaryDirectory() as cache:
        fp32 = _embed("torch", args.threads, Path(cache), docs, queries)
        int8 = _embed("onnx-int8", args.threads, Path(cache), docs, queries)
    cosine = (fp32["docs"] * int8["docs"]).sum(axis=1)
    ndcg_fp32 = _ndcg(doc_ids, fp32["docs"], fp32["queries"], qrels)
    ndcg_int8 = _ndcg(doc_ids, int8["docs"], int8["queries"], qrels)
    diff = paired_bootstrap(ndcg_fp32, ndcg_int8)  # diff = int8 - fp32
    result = {
        "machine": machine_info(),
        "command": reproduce_command("bench/embed_int8.py", argv),
        "documents": len(docs),
        "queries": len(queries),
        "fp32": _summary(fp32, ndcg_fp32),
        "int8": _summary(int8, ndcg_int8),
        "speedup": round(int8["docs_per_s"] / fp32["docs_per_s"], 2),
        "ndcg_diff": {"mean": diff.diff, "ci": [diff.low, diff.high]},
        "cosine": {"mean": float(cosine.mean()), "min": float(cosine.min())},
    }

    def human(r: dict[str, Any]) -> None:
        print(f"{r['documents']} SciFact documents, {r['queries']} queries; {machine_line()}")
        for side in ("fp32", "int8"):
            s = r[side]
            print(
                f"  {side}: nDCG@10 {s['ndcg@10']:.4f}  {s['docs_per_s']} docs/s  query {s['query_ms']} ms  "
                f"(load/export {s['load_s']} s)"
            )
        d = r["ndcg_diff"]
        print(f"  int8 - fp32 nDCG@10: {d['mean']:+.4f} (95% CI {d['ci'][0]:+.4f} .. {d['ci'][1]:+.4f})")
        c = r["cosine"]
        print(f"  speed-up {r['speedup']}x; cosine int8 vs fp32: mean {c['mean']:.4f}, min {c['min']:.4f}")
        print(f"  reproduce: {r['command']}")

    emit(result, args.json, human)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
