"""`rag eval retrieval`: index a BEIR corpus through the normal ingest path and score each retrieval mode.

Chunk hits are mapped back to documents by their best chunk (max), so long
documents split into several chunks are scored as BEIR scores documents.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.beir import default_collection, ingest_corpus, load_beir
from eval.metrics import doc_ranking_from_chunks, mrr_at_k, ndcg_at_k, recall_at_k
from eval.stats import ConfidenceInterval, PairedComparison, bootstrap_ci, paired_bootstrap, percentile
from rag.config import Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.store.base import VectorStore

METRICS: dict[str, tuple[Callable[[Sequence[str], dict[str, int], int], float], int]] = {
    "ndcg@10": (ndcg_at_k, 10),
    "recall@100": (recall_at_k, 100),
    "mrr@10": (mrr_at_k, 10),
}
# Chunks fetched per query: enough distinct documents for Recall@100 after max-pooling.
CHUNKS_PER_QUERY = 200


@dataclass(frozen=True)
class ModeResult:
    mode: str
    metrics: dict[str, ConfidenceInterval]
    latency_ms: dict[str, dict[str, float]]
    per_query: list[dict[str, Any]] = field(repr=False)


@dataclass(frozen=True)
class RetrievalEvalResult:
    dataset: str
    split: str
    collection: str
    queries: int
    modes: tuple[ModeResult, ...]
    ingest: dict[str, Any]
    output: str

    def rerank_effects(self) -> dict[str, PairedComparison]:
        """nDCG@10 of each reranked mode against the same mode fused, paired by query (b = reranked)."""
        fused = {m.mode: m for m in self.modes}
        return {
            m.mode: paired_bootstrap(
                [r["ndcg@10"] for r in fused[m.mode.removesuffix("+rerank")].per_query],
                [r["ndcg@10"] for r in m.per_query],
            )
            for m in self.modes
            if m.mode.endswith("+rerank") and m.mode.removesuffix("+rerank") in fused
        }

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "collection": self.collection,
            "queries": self.queries,
            "output": self.output,
            "ingest": {k: self.ingest[k] for k in ("chunks_written", "files_unchanged", "seconds_total")},
            "modes": {
                m.mode: {
                    "metrics": {k: vars(v) for k, v in m.metrics.items()},
                    "latency_ms": m.latency_ms,
                }
                for m in self.modes
            },
            "rerank_vs_fused_ndcg@10": {mode: vars(c) for mode, c in self.rerank_effects().items()},
        }


def evaluate_beir(
    beir_dir: Path,
    settings: Settings,
    store: VectorStore,
    embedder: SentenceTransformerEmbedder,
    *,
    split: str = "test",
    modes: Sequence[str] = ("sparse", "dense", "hybrid"),
    collection: str | None = None,
    max_queries: int | None = None,
    output: Path | None = None,
    progress: Any = None,
    seed: int = 0,
    reranker: Any = None,
) -> RetrievalEvalResult:
    from rag.collections import open_collection
    from rag.retrieval import QdrantHybridRetriever, search

    dataset = load_beir(beir_dir, split)
    name = collection or default_collection(dataset.name)
    report = ingest_corpus(dataset, settings, store, embedder, collection=name, progress=progress)
    handle = open_collection(store, name, settings, embedder)
    retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
    query_ids = sorted(dataset.queries)[: max_queries or None]

    results = []
    # Each mode as fused, and reranked too when a reranker is given: the report shows both.
    runs = [(m, False) for m in modes] + ([(m, True) for m in modes] if reranker is not None else [])
    for mode, rerank in runs:
        per_query: list[dict[str, Any]] = []
        for qid in query_ids:
            relevant = {d: g for d, g in dataset.qrels[qid].items() if g > 0}
            if not relevant:
                continue  # BEIR keeps such queries, but no metric is defined for them
            t0 = time.perf_counter()
            retrieval = search(
                retriever,
                reranker,
                dataset.queries[qid],
                top_k=CHUNKS_PER_QUERY,
                mode=mode,  # type: ignore[arg-type]
                rerank=rerank,
            )
            total_ms = (time.perf_counter() - t0) * 1000
            # The list's order is the ranking: a reranked head scores on another scale than the fused tail after it.
            hits = [(str(c.payload.get("record_id")), -float(i)) for i, c in enumerate(retrieval.chunks)]
            ranking = doc_ranking_from_chunks(hits)
            row: dict[str, Any] = {
                "query_id": qid,
                "retrieved": ranking[:100],
                "latency_ms": {**retrieval.timings_ms, "total": total_ms},
            }
            for metric, (fn, k) in METRICS.items():
                row[metric] = fn(ranking, relevant, k)
            per_query.append(row)
        metrics = {m: bootstrap_ci([r[m] for r in per_query], seed=seed) for m in METRICS}
        stages = per_query[0]["latency_ms"].keys() if per_query else []
        latency = {
            s: {
                "p50": percentile([r["latency_ms"][s] for r in per_query], 50),
                "p95": percentile([r["latency_ms"][s] for r in per_query], 95),
            }
            for s in stages
        }
        results.append(ModeResult(f"{mode}+rerank" if rerank else mode, metrics, latency, per_query))

    out = (
        output
        or settings.reports_dir
        / f"eval-retrieval-{dataset.name}-{split}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result = RetrievalEvalResult(dataset.name, split, name, len(query_ids), tuple(results), report.to_dict(), str(out))
    document = {
        **result.summary(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "settings": settings.model_dump(mode="json"),
        "per_query": {m.mode: m.per_query for m in results},
    }
    out.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return result


def format_table(result: RetrievalEvalResult) -> str:
    lines = [
        f"{result.dataset} ({result.split}, {result.queries} queries), collection {result.collection}",
        f"{'mode':14} {'nDCG@10':>22} {'Recall@100':>22} {'MRR@10':>22} {'p50 ms':>8} {'p95 ms':>8}",
    ]
    for m in result.modes:
        cells = [f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]" for ci in m.metrics.values()]
        total = m.latency_ms.get("total", {"p50": 0.0, "p95": 0.0})
        lines.append(
            f"{m.mode:14} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22} {total['p50']:8.1f} {total['p95']:8.1f}"
        )
    for mode, c in result.rerank_effects().items():
        lines.append(
            f"{mode} vs {mode.removesuffix('+rerank')}: nDCG@10 {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] "
            f"(paired bootstrap over {c.n} queries; "
            f"{'no detectable difference' if c.low <= 0 <= c.high else 'better' if c.low > 0 else 'WORSE'})"
        )
    lines.append(f"per-query results: {result.output}")
    return "\n".join(lines)
