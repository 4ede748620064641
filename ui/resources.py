"""Heavy objects built once per process (`st.cache_resource`), keyed on the settings that decide them.

The store stays open for the life of the server: the embedded Qdrant Edge store lets one process hold a
collection, so the app must not open and close it per rerun. Models load lazily on first use and are shared
by every session and collection; a rerun or a new browser tab reloads nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import streamlit as st

from rag.access.keys import KeyStore
from rag.access.principal import Principal
from rag.answering import RagPipeline
from rag.config import Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.factory import build_embedder, build_pipeline, build_store
from rag.generation import Generator, build_generator
from rag.privacy import build_redactor
from rag.reranking import build_reranker
from rag.service.drift import DriftMonitor
from rag.store.base import VectorStore
from ui.conversation import ConversationStore


def _key(settings: Settings, *fields: str) -> str:
    """The part of the settings that decides one object, as a stable string (what the cache is keyed on)."""
    return settings.model_dump_json(include=set(fields))


@st.cache_resource(show_spinner="Opening the index…")
def _store(key: str, _settings: Settings) -> VectorStore:
    return build_store(_settings)


@st.cache_resource(show_spinner=False)
def _embedder(key: str, _settings: Settings) -> SentenceTransformerEmbedder:
    return build_embedder(_settings)


@st.cache_resource(show_spinner=False)
def _generator(key: str, _settings: Settings) -> Generator:
    return build_generator(_settings)


@st.cache_resource(show_spinner=False)
def _reranker(key: str, _settings: Settings) -> Any:
    return build_reranker(_settings.rerank, _settings.models_dir)


def get_feedback_redactor(settings: Settings) -> Callable[[str], str] | None:
    """What feedback.jsonl's free text goes through: the privacy redactor, or None with privacy.redact_feedback off."""
    if not settings.privacy.redact_feedback:
        return None
    return build_redactor(settings.privacy).redact  # one per process and settings (rag/privacy.py caches it)


@st.cache_resource(show_spinner=False)
def ingest_lock(key: str) -> threading.Lock:
    """One ingest at a time per store: two sessions uploading at once would interleave their batches."""
    return threading.Lock()


def get_store(settings: Settings) -> VectorStore:
    return _store(_key(settings, "data_dir", "store"), settings)


def get_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return _embedder(_key(settings, "data_dir", "embedder"), settings)


def get_generator(settings: Settings) -> Generator:
    # Temperature and max tokens are per-question options (GenerationOptions), not part of the model's identity.
    key = settings.generator.model_dump_json(exclude={"temperature", "max_new_tokens"}) + str(settings.data_dir)
    return _generator(key, settings)


def get_reranker(settings: Settings) -> Any:
    """The cross-encoder, or None when `rerank.model` is unset."""
    return _reranker(_key(settings, "data_dir", "rerank"), settings)


def get_pipeline(settings: Settings, collection: str, principal: Principal) -> RagPipeline:
    """A pipeline over `collection` with `settings` (per-question answer settings applied), from shared models:
    only the cheap parts (the collection handle, the retriever) are made per question."""
    reranker = get_reranker(settings)
    pipeline: RagPipeline = build_pipeline(
        settings,
        get_store(settings),
        collection,
        embedder=get_embedder(settings),
        generator=get_generator(settings),
        reranker=reranker,
        rerank=reranker is not None,
        principal=principal,
    )
    return pipeline


@st.cache_resource(show_spinner=False)
def _drift(key: str, _settings: Settings) -> DriftMonitor:
    return DriftMonitor.from_settings(_settings)


def get_drift(settings: Settings) -> DriftMonitor:
    """Drift signals of the answers this app gave (the monitoring page), as `rag serve` keeps them for its own."""
    return _drift(_key(settings, "data_dir", "service"), settings)


def needs_key(settings: Settings) -> bool:
    """Whether the app asks for an API key: access.auth=required, or auto once any key exists (as rag serve)."""
    auth = settings.access.auth
    return auth == "required" or (auth == "auto" and KeyStore(settings.keys_path).has_keys())


def sign_in(settings: Settings, key: str) -> Principal:
    """The principal of `key` (the key store is re-read, so a revoked key stops working at once)."""
    return KeyStore(settings.keys_path).authenticate(key)


@st.cache_resource(show_spinner=False)
def conversations() -> ConversationStore:
    """Every session's conversations, in server memory (see ui.conversation)."""
    return ConversationStore()
