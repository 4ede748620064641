"""Choose hybrid fusion settings on a BEIR train split, then report the chosen setting on the test split.

Queries are embedded once; each setting only reruns the Qdrant query, so a
grid of ~30 settings over SciFact's 809 train queries takes about a minute.
The collection must already hold the corpus (`rag eval retrieval --beir DIR` builds it).

    HF_HUB_OFFLINE=1 python bench/fusion.py --beir ../shared/data/beir-scifact
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import add_set_option, machine_info, reproduce_command
from eval.beir import default_collection, load_beir
from eval.metrics import doc_ranking_from_chunks, ndcg_at_k, recall_at_k
from eval.stats import bootstrap_ci
from rag.collections import open_collection
from rag.config import load_settings
from rag.factory import build_embedder, build_store
from rag.store.base import SearchRequest

LIMIT = 200  # chunks per query, pooled to documents by max


def _encode(dataset: Any, embedder: Any, handle: Any) -> dict[str, tuple[list[float], Any]]:
    return {
        qid: (embedder.embed_query(text).tolist(), handle.sparse.embed_query(text))
        for qid, text in dataset.queries.items()
    }


def _score(
    store: Any, name: str, dataset: Any, encoded: dict[str, Any], setting: dict[str, Any]
) -> dict[str, list[float]]:
    ndcg, recall = [], []
    for qid, (dense, sparse) in encoded.items():
        relevant = {d: g for d, g in dataset.qrels[qid].items() if g > 0}
        if not relevant:
            continue
        request = SearchRequest(limit=LIMIT, dense=dense, sparse=sparse, **setting)
        hits = store.search(name, request)
        ranking = doc_ranking_from_chunks([(str(h.payload.get("record_id")), h.score) for h in hits])
        ndcg.append(ndcg_at_k(ranking, relevant, 10))
        recall.append(recall_at_k(ranking, relevant, 100))
    return {"ndcg@10": ndcg, "recall@100": recall}


def grid() -> list[dict[str, Any]]:
    settings: list[dict[str, Any]] = [{"mode": "dense"}, {"mode": "sparse"}]
    for k, (wd, ws), cand in itertools.product(
        (10, 30, 60, 100), ((1, 1), (1, 1.5), (1.5, 1), (1, 2), (2, 1)), (100, 200)
    ):
        settings.append({"mode": "hybrid", "fusion": "rrf", "rrf_k": k, "weights": (wd, ws), "candidates": cand})
    for cand in (50, 100, 200):
        settings.append({"mode": "hybrid", "fusion": "dbsf", "candidates": cand})
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/beir-scifact"))
    parser.add_argument("--collection", help="default: beir-<folder name>")
    parser.add_argument("--config")
    add_set_option(parser, "retrieval.rrf_k=60")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = load_settings(args.config, args.overrides)
    embedder = build_embedder(settings)
    train, test = load_beir(args.beir, "train"), load_beir(args.beir, "test")
    name = args.collection or default_collection(train.name)
    with build_store(settings) as store:
        handle = open_collection(store, name, settings, embedder)
        enc_train, enc_test = _encode(train, embedder, handle), _encode(test, embedder, handle)
        rows = []
        for setting in grid():
            scores = _score(store, name, train, enc_train, setting)
            rows.append((sum(scores["ndcg@10"]) / len(scores["ndcg@10"]), setting))
        rows.sort(key=lambda r: -r[0])
        best = rows[0][1]
        default = {"mode": "hybrid", "fusion": "rrf", "rrf_k": 60, "weights": (1, 1), "candidates": 100}
        report: dict[str, Any] = {
            "train_top5": [{"ndcg@10": s, **st} for s, st in rows[:5]],
            "chosen": best,
            "test": {},
        }
        for label, setting in (
            ("dense", {"mode": "dense"}),
            ("sparse", {"mode": "sparse"}),
            ("hybrid rrf k=60 (default)", default),
            ("hybrid chosen on train", best),
        ):
            scores = _score(store, name, test, enc_test, setting)
            report["test"][label] = {m: vars(bootstrap_ci(v)) for m, v in scores.items()}
    report["machine"] = machine_info()
    report["command"] = reproduce_command("bench/fusion.py")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"collection {name}: {len(train.queries)} train queries, {len(test.queries)} test queries")
    print("best on train (nDCG@10):")
    for s, st in rows[:5]:
        print(f"  {s:.4f}  {st}")
    print("on test (mean [95% CI]):")
    for label, metrics in report["test"].items():
        cells = "  ".join(f"{m} {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for m, v in metrics.items())
        print(f"  {label:28} {cells}")
    print(f"command: {report['command']}  ({report['machine']['platform']})")


if __name__ == "__main__":
    main()
