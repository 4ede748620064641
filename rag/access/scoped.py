"""A view of a vector store as one caller sees it: every read carries the caller's access condition.

Collections are opened through this view (`rag.collections.open_collection`), so retrieval, facets, counts,
neighbours, document lists and the answer's evidence vectors all read through it; no entry point adds the filter
itself, and none can leave it out. Writes need an admin principal (ingest and deletes are an operator's job; an
upload runs the ingest on the uploader's behalf with groups checked by `Principal.check_groups`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from rag.access.principal import Principal
from rag.errors import AccessDeniedError
from rag.store.base import Filter, PointRecord, ScoredPoint, SearchRequest, VectorStore


def scope_store(store: VectorStore, principal: Principal) -> AccessScopedStore:
    """`store` as `principal` sees it; a view of a view re-scopes the underlying store (never narrows twice)."""
    inner = store.inner if isinstance(store, AccessScopedStore) else store
    return AccessScopedStore(inner, principal)


class AccessScopedStore(VectorStore):
    """Reads ANDed with the principal's `access` condition; writes refused unless the principal is an admin."""

    def __init__(self, inner: VectorStore, principal: Principal) -> None:
        self.inner = inner
        self.principal = principal
        self.backend = inner.backend

    def _filter(self, flt: Filter | None) -> Filter | None:
        condition = self.principal.filter_condition()
        if condition is None:
            return flt
        return Filter((*(flt.conditions if flt is not None else ()), condition))

    def _write(self, what: str, name: str) -> None:
        if not self.principal.admin:
            raise AccessDeniedError(
                f"collection {name!r}: {self.principal.name!r} may not {what} (an admin key is needed)"
            )

    # -- collection-level: metadata, not document content ------------------------------------------
    def list_collections(self) -> list[str]:
        return self.inner.list_collections()

    def collection_exists(self, name: str) -> bool:
        return self.inner.collection_exists(name)

    def get_metadata(self, name: str) -> dict[str, Any]:
        return self.inner.get_metadata(name)

    # -- reads: always filtered ---------------------------------------------------------------------
    def count(self, name: str, flt: Filter | None = None) -> int:
        return self.inner.count(name, self._filter(flt))

    def scroll(
        self, name: str, flt: Filter | None = None, fields: Sequence[str] | None = None, batch: int = 1024
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return self.inner.scroll(name, self._filter(flt), fields, batch)

    def search(self, name: str, request: SearchRequest) -> list[ScoredPoint]:
        return self.inner.search(name, replace(request, filter=self._filter(request.filter)))

    def retrieve(self, name: str, ids: Sequence[str]) -> list[ScoredPoint]:
        # By id there is no query to filter: the payload read decides, by the same rule as the condition.
        return [p for p in self.inner.retrieve(name, ids) if self.principal.can_see(p.payload)]

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        if self.principal.admin:
            return self.inner.dense_vectors(name, ids)
        visible = [p.id for p in self.retrieve(name, ids)]
        return self.inner.dense_vectors(name, visible)

    # -- writes: admins only -----------------------------------------------------------------------
    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        self._write("create collections", name)
        self.inner.create_collection(name, dimension, metadata)

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        self._write("change the collection", name)
        self.inner.set_metadata(name, metadata)

    def delete_collection(self, name: str) -> None:
        self._write("delete the collection", name)
        self.inner.delete_collection(name)

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        self._write("write chunks", name)
        self.inner.upsert(name, points)

    def delete(self, name: str, flt: Filter) -> None:
        self._write("delete documents", name)
        self.inner.delete(name, flt)

    def create_keyword_index(self, name: str, field: str) -> None:
        self._write("index the collection", name)
        self.inner.create_keyword_index(name, field)

    def set_payload(self, name: str, flt: Filter, payload: dict[str, Any]) -> None:
        self._write("change documents", name)
        self.inner.set_payload(name, flt, payload)

    def flush(self, name: str) -> None:
        self.inner.flush(name)

    def optimize(self, name: str) -> None:
        self.inner.optimize(name)

    def close(self) -> None:
        """A view does not own the store: closing it leaves the store open for the other callers."""
