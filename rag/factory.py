"""The composition root: every pluggable part's `kind` setting mapped to the class that implements it.

Entry points (CLI, UI, eval, bench) build components here; library modules never import this module. Builders that
a library module itself needs live next to their backends (`build_sparse_encoder` in `rag.sparse`, used when a
collection is opened; `build_generator` in `rag.generation`; `build_reranker` in `rag.reranking`) and are
re-exported here, so every `build_*` can be found in one place.
"""

from __future__ import annotations

from typing import Any

from rag.config import Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import ConfigError
from rag.generation import build_generator as build_generator
from rag.reranking import build_reranker as build_reranker
from rag.sparse import build_sparse_encoder as build_sparse_encoder
from rag.store.base import VectorStore


def build_store(settings: Settings) -> VectorStore:
    kind = settings.store.resolved_kind
    if kind == "edge":
        from rag.store.edge import QdrantEdgeStore

        return QdrantEdgeStore(settings.index_dir, settings.store)
    if kind in ("server", "local"):
        from rag.store.server import QdrantServerStore

        local = settings.data_dir / "qdrant-local" if kind == "local" else None
        return QdrantServerStore(settings.store, local_path=local)
    raise ConfigError(f"store.kind={kind!r} is not one of edge, server, local")


def build_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The configured embedder; `embedder.model` may name a model trained by `rag finetune retrieval`."""
    from rag.registry import resolve

    if settings.embedder.kind == "sentence-transformers":
        model = resolve(settings.embedder.model, settings.models_dir, "embedder")
        return SentenceTransformerEmbedder(settings.embedder.model_copy(update={"model": model}), settings.cache_dir)
    raise ConfigError(f"embedder.kind={settings.embedder.kind!r} is not supported")


def build_pipeline(
    settings: Settings,
    store: VectorStore,
    collection: str | None = None,
    rerank: bool = True,
    *,
    embedder: SentenceTransformerEmbedder | None = None,
    generator: Any = None,
    reranker: Any = None,
    principal: Any = None,
) -> Any:
    """A `RagPipeline` over one collection of `store`, answering `principal`; models not passed in are built.

    Passing ready models lets one process (the chat app) serve many collections with one set of weights. Without a
    principal the caller is `access.default_principal` (rag/access/principal.py).
    """
    from rag.answering import RagPipeline
    from rag.collections import open_collection
    from rag.retrieval import QdrantHybridRetriever

    embedder = embedder or build_embedder(settings)
    handle = open_collection(store, collection or settings.store.collection, settings, embedder, principal)
    retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
    if rerank and reranker is None:
        reranker = build_reranker(settings.rerank, settings.models_dir)
    return RagPipeline(
        retriever, generator or build_generator(settings), settings, reranker=reranker if rerank else None
    )
