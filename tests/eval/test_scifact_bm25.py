"""Metric code and the BM25 half of retrieval against a published figure: Anserini BM25 on SciFact, 0.679."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from eval.beir import iter_corpus, load_beir
from eval.metrics import ndcg_at_k, recall_at_k
from rag.config import SparseSettings, StoreSettings
from rag.sparse import Bm25SparseEncoder, measure_avg_len
from rag.store.base import PointRecord, SearchRequest
from rag.store.edge import QdrantEdgeStore
from tests.conftest import SCIFACT, require

ANSERINI_NDCG10 = 0.679


@pytest.mark.integration
def test_bm25_on_scifact_matches_anserini(tmp_path: Path) -> None:
    require(SCIFACT)
    dataset = load_beir(SCIFACT, "test")
    records = list(iter_corpus(dataset.corpus_path))
    texts = [f"{r['title']} {r['text']}" for r in records]
    # Whole documents, as Anserini indexes them, with Anserini's k1=0.9, b=0.4.
    settings = SparseSettings(k1=0.9, b=0.4)
    encoder = Bm25SparseEncoder(settings, measure_avg_len(texts, settings.language))
    store = QdrantEdgeStore(tmp_path, StoreSettings())
    store.create_collection("scifact", 1, {"schema_version": 1})
    vectors = encoder.embed_documents(texts)
    points = [
        PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, r["_id"])), [1.0], v, {"record_id": r["_id"]})
        for r, v in zip(records, vectors, strict=True)
    ]
    for i in range(0, len(points), 1000):
        store.upsert("scifact", points[i : i + 1000])
    ndcg, recall = [], []
    for qid, query in dataset.queries.items():
        hits = store.search("scifact", SearchRequest(limit=100, mode="sparse", sparse=encoder.embed_query(query)))
        ranking = [h.payload["record_id"] for h in hits]
        ndcg.append(ndcg_at_k(ranking, dataset.qrels[qid], 10))
        recall.append(recall_at_k(ranking, dataset.qrels[qid], 100))
    store.close()
    mean_ndcg = sum(ndcg) / len(ndcg)
    assert len(ndcg) == 300
    assert abs(mean_ndcg - ANSERINI_NDCG10) <= 0.01, mean_ndcg
    assert sum(recall) / len(recall) > 0.88
