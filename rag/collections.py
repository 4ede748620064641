"""A collection's recorded identity: which embedder, sparse encoder and chunker built it.

Ingest writes it when it creates a collection and checks it on every later
run; retrieval reads it to encode queries the same way the chunks were.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rag.access.principal import ACCESS_FIELD, PUBLIC, Principal, check_group, resolve_principal
from rag.access.scoped import scope_store
from rag.config import ChunkingSettings, Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import AccessDeniedError, ConfigError, EmbedderMismatchError, StoreError
from rag.privacy import check_ingest_redaction, ingest_redaction
from rag.sparse import Bm25SparseEncoder, build_sparse_encoder
from rag.store.base import Condition, Filter, VectorStore

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CollectionHandle:
    """An open, checked collection and the encoders that match it, as `principal` sees it.

    `store` is the principal's view (rag/access/scoped.py): every read through the handle is filtered to the
    documents the principal may see.
    """

    name: str
    store: VectorStore
    metadata: dict[str, Any]
    sparse: Bm25SparseEncoder
    principal: Principal = field(default_factory=Principal.local)

    def for_principal(self, principal: Principal) -> CollectionHandle:
        """The same collection as another caller sees it (no reopening: the view is a thin wrapper)."""
        check_collection_access(self.name, self.metadata, principal)
        return replace(self, store=scope_store(self.store, principal), principal=principal)

    @property
    def payload_fields(self) -> list[str]:
        return list(self.metadata.get("payload_fields", []))

    @property
    def payload_types(self) -> dict[str, list[str]]:
        """Per payload field, the value types stored in it ('str', 'int', 'float', 'bool'; a list's items)."""
        return {k: list(v) for k, v in self.metadata.get("payload_types", {}).items()}

    def content_key(self) -> str:
        """The stored content's identity now (see `content_key`): part of every answer-cache key."""
        return content_key(self.store, self.name)

    def answers_dir(self, cache_dir: Path) -> Path:
        """Where answers derived from this collection are cached; removed when its content changes."""
        return answers_dir(cache_dir, self.metadata, self.name)


def _embedder_matches(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    keys = ("name", "dimension", "fingerprint")
    return all(recorded.get(k) == current.get(k) for k in keys)


def check_embedder(name: str, metadata: dict[str, Any], embedder: SentenceTransformerEmbedder) -> None:
    recorded = metadata.get("embedder", {})
    current = embedder.identity()
    if not _embedder_matches(recorded, current):
        raise EmbedderMismatchError(
            f"collection {name!r} was built with embedder {recorded.get('name')!r} "
            f"(dimension {recorded.get('dimension')}, fingerprint {recorded.get('fingerprint')}), "
            f"but this run uses {current['name']!r} (dimension {current['dimension']}, fingerprint "
            f"{current['fingerprint']}): use that embedder, another --collection, or "
            f"`rag collections delete {name}` and ingest again"
        )


def check_chunking(name: str, metadata: dict[str, Any], chunking: ChunkingSettings) -> None:
    recorded = metadata.get("chunking")
    current = chunking.model_dump()
    if recorded is not None:
        # Settings added since a collection was built, at the value that reproduces how it was built
        # (a collection from before document cards has none in its chunks: card_tokens=0).
        recorded = {"card_tokens": 0, **recorded}
    if recorded is not None and recorded != current:
        changed = sorted(k for k in current if recorded.get(k) != current[k])
        raise ConfigError(
            f"collection {name!r} was chunked with other settings ({', '.join(f'chunking.{k}' for k in changed)} "
            "differ): a mix would make incremental ingest inconsistent; use the recorded settings, "
            f"another --collection, or `rag collections delete {name}` and ingest again"
        )


def check_collection_access(name: str, metadata: dict[str, Any], principal: Principal) -> None:
    """AccessDeniedError when the collection is limited to groups (`set_collection_access`) the caller is not in.

    Refused whole, before any retrieval: a caller without rights to a collection gets a 403, never an answer
    filtered down to its public documents.
    """
    groups = metadata.get("access_groups")
    if groups and not principal.admin and not set(groups) & principal.groups:
        raise AccessDeniedError(
            f"collection {name!r} is limited to group(s) {', '.join(sorted(groups))}, and {principal.name!r} is "
            "in none of them: ask an admin for a key in one"
        )


def open_collection(
    store: VectorStore,
    name: str,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    principal: Principal | None = None,
) -> CollectionHandle:
    """Open an existing collection for querying as `principal`, refusing one built with another embedder.

    Without a principal the caller is `access.default_principal` (local: sees everything, the single-user default).
    """
    principal = resolve_principal(principal, settings)
    metadata = store.get_metadata(name)
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"collection {name!r} was not created by this framework (schema_version "
            f"{metadata.get('schema_version')!r}, expected {SCHEMA_VERSION})"
        )
    check_embedder(name, metadata, embedder)
    check_collection_access(name, metadata, principal)
    sparse = build_sparse_encoder(settings.sparse, float(metadata["sparse"]["avg_len"]))
    return CollectionHandle(name, scope_store(store, principal), metadata, sparse, principal)


def create_or_open_for_ingest(
    store: VectorStore,
    name: str,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    sample_texts: list[str],
) -> CollectionHandle:
    """Open the collection for writing, creating it with metadata on first use.

    BM25's mean length is measured on `sample_texts` (the first batch of chunks)
    when the collection is created, then kept fixed so every later document is
    weighted on the same scale.
    """
    if store.collection_exists(name):
        handle = open_collection(store, name, settings, embedder, Principal.local())  # ingest writes as the operator
        check_chunking(name, handle.metadata, settings.chunking)
        check_ingest_redaction(name, handle.metadata, settings)
        return handle
    from rag.sparse import measure_avg_len

    avg_len = measure_avg_len(sample_texts, settings.sparse.language) if sample_texts else 64.0
    sparse = build_sparse_encoder(settings.sparse, avg_len)
    metadata: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedder": embedder.identity(),
        "sparse": sparse.identity(),
        "chunking": settings.chunking.model_dump(),
        "redaction": ingest_redaction(settings),  # ingest.redact_pii: checked by every later ingest
        "index_version": 0,
        "payload_fields": [],
        # Names are reused (delete, then ingest again): the uid tells two lives of one name apart.
        "collection_uid": uuid.uuid4().hex,
    }
    store.create_collection(name, embedder.dimension, metadata)
    return CollectionHandle(name, store, metadata, sparse)


def _uid(metadata: dict[str, Any], name: str) -> str:
    return str(metadata.get("collection_uid") or f"{name}@{metadata.get('created_at')}")


def answers_dir(cache_dir: Path, metadata: dict[str, Any], name: str) -> Path:
    """One answer-cache folder per collection life (its uid), so eviction is removing a folder."""
    return cache_dir / "answers" / _uid(metadata, name).replace(":", "-")


def evict_answers(cache_dir: Path, metadata: dict[str, Any], name: str) -> None:
    """Drop every cached answer derived from this collection (all of them are stale once its content moved)."""
    folder = answers_dir(cache_dir, metadata, name)
    if folder.is_dir():
        shutil.rmtree(folder)


def content_key(store: VectorStore, name: str) -> str:
    """What identifies a collection's content for caches: its uid and index version, never reused.

    The version alone restarts at 1 when a collection is deleted and created again under the same
    name; the uid, drawn when the collection is created, does not. Collections from before the uid
    fall back to their creation time.
    """
    metadata = store.get_metadata(name)
    return f"{_uid(metadata, name)}:{metadata.get('index_version')}"


def value_types(payload: dict[str, Any]) -> dict[str, set[str]]:
    """The type names of each payload value (of a list's items), for typing filter values like the stored ones."""
    out: dict[str, set[str]] = {}
    for key, value in payload.items():
        items = value if isinstance(value, list) else [value]
        out[key] = {type(v).__name__ for v in items if v is not None}
    return out


def begin_write(
    handle: CollectionHandle,
    payload_types: dict[str, set[str]],
    cache_dir: Path | None = None,
    *,
    bump: bool = True,
) -> CollectionHandle:
    """Record, before any chunk is written, that the content changes and which payload fields it will carry.

    Write-ahead: a run killed after its chunks are flushed has already moved the version (so no cache
    key of the old content matches) and recorded their fields (so filters on them work). A version
    that moved without a change only costs cache misses. Call once per run, and again whenever
    new payload fields or types appear (`bump=False` then); returns the handle with the metadata as
    written. Cached answers of the collection (under `cache_dir`) are evicted: their keys carry the old version.
    """
    metadata = dict(handle.metadata)
    metadata["payload_fields"] = sorted(set(metadata.get("payload_fields", [])) | set(payload_types))
    types = {k: set(v) for k, v in metadata.get("payload_types", {}).items()}
    for key, names in payload_types.items():
        types.setdefault(key, set()).update(names)
    metadata["payload_types"] = {k: sorted(v) for k, v in sorted(types.items())}
    if bump:
        metadata["index_version"] = int(metadata.get("index_version", 0)) + 1
        metadata["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    handle.store.set_metadata(handle.name, metadata)
    if cache_dir is not None and bump:
        evict_answers(cache_dir, metadata, handle.name)
    return CollectionHandle(handle.name, handle.store, metadata, handle.sparse)


def record_ingest(handle: CollectionHandle, payload_fields: set[str]) -> dict[str, Any]:
    """Remember payload fields seen without a write (begin_write recorded the others); the metadata as stored."""
    metadata = dict(handle.store.get_metadata(handle.name))
    fields = sorted(set(metadata.get("payload_fields", [])) | payload_fields)
    if fields == metadata.get("payload_fields"):
        return metadata
    metadata["payload_fields"] = fields
    handle.store.set_metadata(handle.name, metadata)
    return metadata


LOCK_FILE = "ingest.lock"


@contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data folder's ingest lock: one process at a time creates collections and writes chunks.

    An OS file lock (flock), so a killed holder releases it; a second process fails at once with a
    clear message rather than racing the first (two runs both reporting version 1, or a collection
    created twice with the second removing the first's open shard).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    with path.open("a+", encoding="utf-8") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; Edge's own shard lock still refuses a second writer
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise StoreError(
                f"another ingest is running into {data_dir} (pid {holder}, lock {path}): wait for it to "
                "finish, or use another data_dir"
            ) from e
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def collection_summaries(store: VectorStore) -> list[dict[str, Any]]:
    """Every collection with its chunk count, embedder name and index version, for `rag collections list`."""
    rows = []
    for name in store.list_collections():
        metadata = store.get_metadata(name)
        rows.append(
            {
                "name": name,
                "chunks": store.count(name),
                "embedder": metadata.get("embedder", {}).get("name"),
                "index_version": metadata.get("index_version"),
            }
        )
    return rows


def describe_collection(store: VectorStore, name: str, principal: Principal | None = None) -> dict[str, Any]:
    """Counts by document and file type, for `rag collections describe`; only what `principal` may see when given
    (or when `store` is already a caller's view)."""
    if principal is not None:
        check_collection_access(name, store.get_metadata(name), principal)
        store = scope_store(store, principal)
    metadata = store.get_metadata(name)
    documents: dict[str, int] = Counter()
    file_types: Counter[str] = Counter()
    sources: dict[str, str] = {}
    access: dict[str, list[str]] = {}
    for _, payload in store.scroll(name, fields=["document_id", "file_type", "source", ACCESS_FIELD]):
        doc = str(payload.get("document_id"))
        documents[doc] += 1
        file_types[str(payload.get("file_type"))] += 1
        sources[doc] = str(payload.get("source"))
        access[doc] = list(payload.get(ACCESS_FIELD) or [])
    return {
        "name": name,
        "backend": store.backend,
        "chunks": sum(documents.values()),
        "documents": len(documents),
        "chunks_by_file_type": dict(sorted(file_types.items())),
        "metadata": metadata,
        "document_list": [
            {"document_id": d, "source": sources[d], "chunks": n, "access": access[d]}
            for d, n in sorted(documents.items())
        ],
    }


def delete_collection(store: VectorStore, name: str, cache_dir: Path) -> None:
    """Delete the collection and every answer cached from it."""
    metadata = store.get_metadata(name)
    store.delete_collection(name)
    evict_answers(cache_dir, metadata, name)


def delete_document(store: VectorStore, name: str, document_id: str, cache_dir: Path | None = None) -> int:
    """Delete every chunk of one document and bump the index version (so cached answers citing it expire).

    With `cache_dir`, the collection's cached answers are removed from disk too.
    Returns the number of chunks deleted; 0 (and nothing changed) when the document is not in the collection.
    """
    doc_filter = Filter((Condition("document_id", value=document_id),))
    count = store.count(name, doc_filter)
    if count == 0:
        return 0
    # Version first: a crash between the two steps then costs cache misses, never a stale answer.
    _bump_version(store, name, cache_dir)
    store.delete(name, doc_filter)
    store.flush(name)
    return count


def neighbour_chunks(
    store: VectorStore,
    name: str,
    document_id: str,
    chunk_index: int,
    radius: int = 1,
    principal: Principal | None = None,
) -> list[dict[str, Any]]:
    """Payloads of the chunks `chunk_index - radius` .. `chunk_index + radius` of one document, in order.

    What a reader needs to see a chunk in context; the chunk itself is included, missing neighbours are left out,
    and so is everything `principal` may not see (when given, or when `store` is already a caller's view).
    """
    if principal is not None:
        store = scope_store(store, principal)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    wanted = tuple(range(max(0, chunk_index - radius), chunk_index + radius + 1))
    flt = Filter((Condition("document_id", value=document_id), Condition("chunk_index", any_of=wanted)))
    payloads = [payload for _, payload in store.scroll(name, flt)]
    return sorted(payloads, key=lambda p: int(p.get("chunk_index", 0)))


def _bump_version(store: VectorStore, name: str, cache_dir: Path | None) -> None:
    """Move the index version (and drop cached answers): who sees which document is part of every answer."""
    metadata = dict(store.get_metadata(name))
    metadata["index_version"] = int(metadata.get("index_version", 0)) + 1
    metadata["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store.set_metadata(name, metadata)
    if cache_dir is not None:
        evict_answers(cache_dir, metadata, name)


def set_document_access(
    store: VectorStore, name: str, document_id: str, groups: list[str] | tuple[str, ...], cache_dir: Path | None = None
) -> int:
    """Give one document new access groups in place (a payload update, no re-embedding); its chunk count, 0 when
    the collection has no such document. `groups` empty means public.

    The version moves first, as for a delete: a cached answer built while the document was visible to others must
    not be served to them afterwards.
    """
    clean = sorted({check_group(g, "--access") for g in groups}) or [PUBLIC]
    doc_filter = Filter((Condition("document_id", value=document_id),))
    count = store.count(name, doc_filter)
    if count == 0:
        return 0
    _bump_version(store, name, cache_dir)
    store.set_payload(name, doc_filter, {ACCESS_FIELD: clean})
    store.flush(name)
    return count


def set_collection_access(store: VectorStore, name: str, groups: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Limit the whole collection to callers in one of `groups` (others get AccessDeniedError); () lifts the limit."""
    metadata = dict(store.get_metadata(name))
    clean = sorted({check_group(g, "--groups") for g in groups})
    if clean:
        metadata["access_groups"] = clean
    else:
        metadata.pop("access_groups", None)
    store.set_metadata(name, metadata)
    return metadata
