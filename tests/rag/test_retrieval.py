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
from rag.reranking import CrossEncoderReranker, blend_scores
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
    from rag.reranking import build_cross_encoder

    path = tmp_path_factory.mktemp("ce") / "ce"
    build_cross_encoder(embedder.model_path, 128).save_pretrained(str(path))
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
    with pytest.raises(UsageError, match=r"no chunk of collection .* matches the filter"):  # said, not silent
        retriever.retrieve("leave", top_k=5, filters=outside)
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


def test_sub_batches_minimise_computed_tokens() -> None:
    from rag.reranking import plan_batches

    # Sorted 200, 190, 60, 50 (indices 0, 2, 3, 1). One batch: 48 + 4*200 = 848 tokens of work;
    # {200,190}{60,50}: 2*48 + 2*200 + 2*60 = 616; {200}{190}{60,50}: 3*48 + 200 + 190 + 120 = 654.
    assert plan_batches([200, 50, 190, 60], max_batch=32, overhead=48) == [[0, 2], [3, 1]]
    assert plan_batches([100] * 5, max_batch=32, overhead=48) == [[0, 1, 2, 3, 4]], "equal lengths: one batch"
    capped = plan_batches([100] * 5, max_batch=2, overhead=48)
    assert sorted(len(b) for b in capped) == [1, 2, 2] and sorted(i for b in capped for i in b) == [0, 1, 2, 3, 4]
    assert plan_batches([], max_batch=4, overhead=48) == []


def test_sub_batched_scores_match_one_padded_batch(reranker: CrossEncoderReranker, setup: Any) -> None:
    chunks = search(setup["retriever"], None, "paid leave days", top_k=12).chunks
    texts = [c.text for c in chunks] + ["Short.", "Leave."]
    lengths = reranker.pair_lengths("paid leave days", texts)
    assert len(set(lengths)) > 3, "the fixture must mix lengths"
    whole = reranker.model.predict([("paid leave days", t) for t in texts], batch_size=len(texts))
    assert reranker.score("paid leave days", texts) == pytest.approx([float(s) for s in whole], abs=1e-4)


def test_blend_share_comes_from_the_setting_else_the_trained_models_card(
    setup: Any, reranker: CrossEncoderReranker, tmp_path: Path
) -> None:
    from rag.registry import ModelCard, register
    from rag.reranking import build_reranker

    (tmp_path / "ce-card").mkdir()
    register(tmp_path, ModelCard("ce-card", "reranker", "minilm", "abc", metrics={"blend": 0.3}))
    built = build_reranker(RerankSettings(model="ce-card"), tmp_path)
    assert built is not None and built.blend == 0.3
    forced = build_reranker(RerankSettings(model="ce-card", blend=0.8), tmp_path)
    assert forced is not None and forced.blend == 0.8, "the setting wins over the card"
    assert build_reranker(RerankSettings(model=reranker.model_path), tmp_path).blend == 1.0  # type: ignore[union-attr]

    # Blended: the final score mixes the standardised fused and cross-encoder scores; the raw one stays visible.
    half = CrossEncoderReranker(reranker.settings.model_copy(update={"blend": 0.5}), reranker.model_path)
    half._model = reranker.model
    chunks = search(setup["retriever"], None, "paid leave days", top_k=5).chunks
    out = half.rerank("paid leave days", chunks, top_k=5)
    raw = {c.id: c.stage_scores["rerank"] for c in out}
    fused = {c.id: c.score for c in chunks}
    ids = [c.id for c in chunks]
    expected = blend_scores([raw[i] for i in ids], [fused[i] for i in ids], 0.5)
    assert [c.score for c in out] == pytest.approx(sorted(expected, reverse=True))


def test_glossary_meanings_never_push_a_long_question_past_the_window(setup: Any, embedder: Any) -> None:
    retriever = setup["retriever"]
    question = "What was the capex for laptops? " + " ".join(["laptop"] * 230)
    window = embedder.max_tokens
    assert embedder.count_tokens(question) <= window < embedder.count_tokens(retriever.glossary.expand(question).text)
    result = retriever.retrieve(question, top_k=3)  # the meanings go to BM25 only; no over-length error
    assert result.chunks and result.expansion[0][0] == "capex"
    with pytest.raises(UsageError, match="over the embedder's window"):
        retriever.retrieve(question + " laptop" * 40, top_k=3)
