"""Hybrid retrieval, reranking and the llama-index components on the sample documents with the real models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rag.collections import open_collection
from rag.config import RerankSettings, load_settings
from rag.errors import UsageError
from rag.factory import build_store
from rag.reranking import CrossEncoderReranker
from rag.retrieval import QdrantHybridRetriever, parse_filters, search
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    from ingest.pipeline import ingest_paths

    root = tmp_path_factory.mktemp("retrieval")
    docs = root / "docs"
    shutil.copytree(SAMPLES, docs)
    settings = load_settings("test", [f"data_dir={root / 'data'}"])
    store = build_store(settings)
    ingest_paths([docs], settings, store, embedder)
    handle = open_collection(store, "documents", settings, embedder)
    yield {
        "settings": settings,
        "retriever": QdrantHybridRetriever(handle, embedder, settings.retrieval),
        "root": root,
        "docs": docs,
    }
    store.close()


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> CrossEncoderReranker:
    """A real cross-encoder built from the bundled MiniLM weights (untrained head): it runs the real code path."""
    from sentence_transformers import CrossEncoder

    path = tmp_path_factory.mktemp("ce") / "ce"
    CrossEncoder(embedder.model_path, num_labels=1, max_length=128).save_pretrained(str(path))
    return CrossEncoderReranker(RerankSettings(model=str(path), top_n=5, batch_size=4, max_length=128), str(path))


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("How many days of paid leave do employees get?", "employee-handbook.md"),
        ("minimum password length", "security-policy.txt"),
        ("How often must the torque wrench be calibrated?", "product-faq.html"),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_each_mode_finds_the_right_document(setup: Any, question: str, source: str, mode: str) -> None:
    result = setup["retriever"].retrieve(question, top_k=3, mode=mode)
    assert result.chunks[0].payload["source_name"] == source
    stage = "fusion" if mode == "hybrid" else mode
    assert all(stage in c.stage_scores for c in result.chunks)
    scores = [c.score for c in result.chunks]
    assert scores == sorted(scores, reverse=True)


def test_filters_restrict_results(setup: Any) -> None:
    retriever = setup["retriever"]
    fields = retriever.handle.payload_fields
    only_txt = parse_filters(["file_type=txt"], fields)
    result = retriever.retrieve("paid leave", top_k=5, filters=only_txt)
    assert result.chunks and {c.payload["file_type"] for c in result.chunks} == {"txt"}
    folder = parse_filters([f"source_dirs={setup['docs'].resolve()}"], fields)
    assert len(retriever.retrieve("leave", top_k=50, filters=folder).chunks) > 0
    outside = parse_filters(["source_dirs=/nowhere"], fields)
    assert retriever.retrieve("leave", top_k=5, filters=outside).chunks == ()
    with pytest.raises(UsageError, match="unknown field 'colour'"):
        parse_filters(["colour=red"], fields)


def test_stopword_only_query_is_an_error_for_sparse(setup: Any) -> None:
    with pytest.raises(UsageError, match="no searchable words"):
        setup["retriever"].retrieve("the of and", mode="sparse")
    assert setup["retriever"].retrieve("the of and", mode="hybrid").mode == "dense"


def test_reranker_rescores_the_head_and_keeps_the_tail(setup: Any, reranker: CrossEncoderReranker) -> None:
    result = search(setup["retriever"], reranker, "paid leave days", top_k=8)
    assert "rerank" in result.timings_ms
    head, tail = result.chunks[:5], result.chunks[5:]
    assert all("rerank" in c.stage_scores and "fusion" in c.stage_scores for c in head)
    assert [c.score for c in head] == sorted((c.score for c in head), reverse=True)
    assert all("rerank" not in c.stage_scores for c in tail)
    plain = search(setup["retriever"], reranker, "paid leave days", top_k=8, rerank=False)
    assert {c.id for c in plain.chunks[:5]} == {c.id for c in head}, "reranking reorders the same candidates"


def test_llama_index_components(setup: Any, reranker: CrossEncoderReranker) -> None:
    from llama_index.core.schema import QueryBundle

    from rag.llama_index import CrossEncoderNodePostprocessor, QdrantHybridLlamaRetriever

    nodes = QdrantHybridLlamaRetriever(setup["retriever"], top_k=4).retrieve("warranty of the TW-200")
    assert len(nodes) == 4 and nodes[0].node.metadata["source_name"] == "product-faq.html"
    assert nodes[0].node.node_id == search(setup["retriever"], None, "warranty of the TW-200", top_k=1).chunks[0].id
    post = CrossEncoderNodePostprocessor(reranker, top_k=2)
    reranked = post.postprocess_nodes(nodes, QueryBundle("warranty of the TW-200"))
    assert len(reranked) == 2 and "rerank" in reranked[0].node.metadata["stage_scores"]
    assert {n.node.node_id for n in reranked} <= {n.node.node_id for n in nodes}


def test_missing_reranker_model_names_the_setting(tmp_path: Path) -> None:
    from rag.errors import ConfigError
    from rag.reranking import build_reranker

    assert build_reranker(RerankSettings(), tmp_path) is None
    broken = build_reranker(RerankSettings(model=str(tmp_path / "nope")), tmp_path)
    assert broken is not None
    with pytest.raises(ConfigError, match=r"rerank\.model"):
        broken.warm_up()
