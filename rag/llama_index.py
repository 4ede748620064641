"""Our retriever and reranker as llama-index components, for use inside any llama-index app.

Chunks become `TextNode`s whose id is the Qdrant point id and whose metadata is
the chunk payload (source, pages, section path, offsets), so citations survive.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.reranking import CrossEncoderReranker
from rag.retrieval import Mode, QdrantHybridRetriever, RetrievedChunk
from rag.store.base import Filter

_HIDDEN_METADATA = ("source_dirs", "chunk_hash", "content_hash", "ingested_at")


def to_node(chunk: RetrievedChunk) -> NodeWithScore:
    metadata = {k: v for k, v in chunk.payload.items() if k != "text"}
    node = TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata={**metadata, "stage_scores": dict(chunk.stage_scores)},
        excluded_embed_metadata_keys=[*metadata, "stage_scores"],
        excluded_llm_metadata_keys=[
            k
            for k in (*metadata, "stage_scores")
            if k in _HIDDEN_METADATA or k not in ("source_name", "pages", "section_path", "title")
        ],
    )
    return NodeWithScore(node=node, score=chunk.score)


def from_node(node: NodeWithScore) -> RetrievedChunk:
    metadata = dict(node.node.metadata)
    stage_scores = dict(metadata.pop("stage_scores", {}) or {})
    return RetrievedChunk(
        node.node.node_id, float(node.score or 0.0), {**metadata, "text": node.node.get_content()}, stage_scores
    )


class QdrantHybridLlamaRetriever(BaseRetriever):
    """llama-index `BaseRetriever` over `QdrantHybridRetriever` (hybrid, dense or sparse)."""

    def __init__(
        self,
        retriever: QdrantHybridRetriever,
        *,
        top_k: int | None = None,
        mode: Mode | None = None,
        filters: Filter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._inner = retriever
        self._top_k = top_k
        self._mode = mode
        self._filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self._inner.retrieve(
            query_bundle.query_str,
            top_k=self._top_k,
            mode=self._mode,
            filters=self._filters,
        )
        return [to_node(c) for c in result.chunks]


class CrossEncoderNodePostprocessor(BaseNodePostprocessor):
    """llama-index node postprocessor that reranks nodes with our cross-encoder."""

    top_k: int = 10
    _reranker: CrossEncoderReranker = PrivateAttr()

    def __init__(self, reranker: CrossEncoderReranker, top_k: int = 10, **kwargs: Any) -> None:
        super().__init__(top_k=top_k, **kwargs)  # type: ignore[call-arg]  # pydantic field
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "CrossEncoderNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("reranking needs the query")
        chunks = [from_node(n) for n in nodes]
        return [to_node(c) for c in self._reranker.rerank(query_bundle.query_str, chunks, self.top_k)]
