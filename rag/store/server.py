"""A Qdrant server through qdrant-client (also its local emulation, used to test this path offline).

Collection metadata lives in Qdrant's own collection `metadata`, so a server
carries everything needed to reopen a collection from another machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.config import StoreSettings
from rag.errors import CollectionNotFoundError, MissingDependencyError, StoreError
from rag.store.base import (
    DENSE,
    INDEXED_FIELDS,
    INTEGER_INDEXED_FIELDS,
    SPARSE,
    Filter,
    FilterBuilder,
    PointRecord,
    ScoredPoint,
    SearchRequest,
    VectorStore,
    points_in_order,
    require_conditions,
    validate_collection_name,
)


def _models() -> Any:
    try:
        from qdrant_client import models
    except ImportError as e:
        raise MissingDependencyError("a Qdrant server needs its client: pip install qdrant-client") from e
    return models


def _client_filter(m: Any, flt: Filter | None) -> Any:
    return FilterBuilder(
        value=lambda v: m.MatchValue(value=v),
        any_of=lambda values: m.MatchAny(any=values),
        prefix=lambda p: m.MatchPrefix(prefix=p),
        condition=lambda key, match: m.FieldCondition(key=key, match=match),
        combine=lambda must, must_not: m.Filter(must=must, must_not=must_not),
    ).build(flt)


class QdrantServerStore(VectorStore):
    """A Qdrant server at `url`, or with `local_path` qdrant-client's brute-force emulation."""

    def __init__(self, settings: StoreSettings, *, local_path: Path | None = None) -> None:
        self.settings = settings
        self.local_path = local_path
        self.backend = "local" if local_path is not None else "server"
        self._client_obj: Any = None

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            try:
                from qdrant_client import QdrantClient
            except ImportError as e:
                raise MissingDependencyError("a Qdrant server needs its client: pip install qdrant-client") from e
            if self.local_path is not None:
                self.local_path.mkdir(parents=True, exist_ok=True)
                self._client_obj = QdrantClient(path=str(self.local_path))
            else:
                url = self.settings.resolved_url
                if not url:
                    raise StoreError("store.kind=server needs a URL: set QDRANT_URL or store.url")
                key = self.settings.api_key
                self._client_obj = QdrantClient(
                    url=url,
                    api_key=key.get_secret_value() if key else None,
                    timeout=int(self.settings.timeout_s),
                )
        return self._client_obj

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, turning transport and server errors into one-line StoreErrors."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, KeyError):
            raise
        except Exception as e:  # qdrant-client raises httpx, grpc and its own errors alike
            where = self.local_path or self.settings.resolved_url
            raise StoreError(f"Qdrant at {where}: {what} failed: {e}") from e

    def list_collections(self) -> list[str]:
        response = self._call("listing collections", self._client.get_collections)
        return sorted(c.name for c in response.collections)

    def collection_exists(self, name: str) -> bool:
        validate_collection_name(name)
        return bool(self._call("checking a collection", self._client.collection_exists, name))

    def _require(self, name: str) -> None:
        if not self.collection_exists(name):
            known = ", ".join(self.list_collections()) or "none yet"
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist on {self.local_path or self.settings.resolved_url} "
                f"(collections: {known}); ingest documents into it first"
            )

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        m = _models()
        validate_collection_name(name)
        self._call(
            "creating the collection",
            self._client.create_collection,
            name,
            vectors_config={DENSE: m.VectorParams(size=dimension, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            hnsw_config=m.HnswConfigDiff(
                m=self.settings.hnsw_m,
                ef_construct=self.settings.hnsw_ef_construct,
                full_scan_threshold=self.settings.full_scan_threshold,
            ),
            metadata=metadata,
            **self._cluster_options(),
        )
        indexes = [(f, m.PayloadSchemaType.KEYWORD) for f in INDEXED_FIELDS]
        indexes += [(f, m.PayloadSchemaType.INTEGER) for f in INTEGER_INDEXED_FIELDS]
        for field_name, schema in indexes:
            self._call(
                "creating a payload index",
                self._client.create_payload_index,
                name,
                field_name=field_name,
                field_schema=schema,
            )

    def _cluster_options(self) -> dict[str, Any]:
        """store.shard_number / replication_factor / write_consistency_factor, those that are set (a cluster)."""
        names = ("shard_number", "replication_factor", "write_consistency_factor")
        return {n: getattr(self.settings, n) for n in names if getattr(self.settings, n) is not None}

    def _read_consistency(self, m: Any) -> dict[str, Any]:
        level = self.settings.read_consistency
        if level is None:
            return {}
        return {"consistency": level if isinstance(level, int) else m.ReadConsistencyType(level)}

    def get_metadata(self, name: str) -> dict[str, Any]:
        self._require(name)
        info = self._call("reading the collection", self._client.get_collection, name)
        return dict(info.config.metadata or {})

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        self._require(name)
        self._call("updating metadata", self._client.update_collection, name, metadata=metadata)

    def delete_collection(self, name: str) -> None:
        self._require(name)
        self._call("deleting the collection", self._client.delete_collection, name)

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        if not points:
            return
        m = _models()
        structs = [
            m.PointStruct(
                id=p.id,
                vector={
                    DENSE: [float(x) for x in p.dense],
                    SPARSE: m.SparseVector(indices=list(p.sparse.indices), values=list(p.sparse.values)),
                },
                payload=p.payload,
            )
            for p in points
        ]
        self._call("upserting points", self._client.upsert, name, points=structs, wait=True)

    def delete(self, name: str, flt: Filter) -> None:
        require_conditions(flt, "delete", "; use delete_collection")
        m = _models()
        selector = m.FilterSelector(filter=_client_filter(m, flt))
        self._call("deleting points", self._client.delete, name, points_selector=selector, wait=True)

    def create_keyword_index(self, name: str, field: str) -> None:
        m = _models()
        self._call(
            "creating a payload index",
            self._client.create_payload_index,
            name,
            field_name=field,
            field_schema=m.PayloadSchemaType.KEYWORD,
        )

    def set_payload(self, name: str, flt: Filter, payload: dict[str, Any]) -> None:
        require_conditions(flt, "set a payload")
        m = _models()
        selector = m.FilterSelector(filter=_client_filter(m, flt))
        self._call("setting a payload", self._client.set_payload, name, payload=payload, points=selector, wait=True)

    def count(self, name: str, flt: Filter | None = None) -> int:
        m = _models()
        self._require(name)
        result = self._call(
            "counting points", self._client.count, name, count_filter=_client_filter(m, flt), exact=True
        )
        return int(result.count)

    def scroll(
        self, name: str, flt: Filter | None = None, fields: Sequence[str] | None = None, batch: int = 1024
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        m = _models()
        self._require(name)
        with_payload: Any = m.PayloadSelectorInclude(include=list(fields)) if fields is not None else True
        offset = None
        while True:
            records, offset = self._call(
                "scrolling points",
                self._client.scroll,
                name,
                scroll_filter=_client_filter(m, flt),
                limit=batch,
                offset=offset,
                with_payload=with_payload,
                with_vectors=False,
            )
            for rec in records:
                yield str(rec.id), dict(rec.payload or {})
            if offset is None:
                return

    def retrieve(self, name: str, ids: Sequence[str]) -> list[ScoredPoint]:
        if not ids:
            return []
        records = self._call("retrieving points", self._client.retrieve, name, ids=list(ids), with_payload=True)
        return points_in_order(ids, records)

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}
        records = self._call(
            "retrieving vectors", self._client.retrieve, name, ids=list(ids), with_payload=False, with_vectors=[DENSE]
        )
        out = {}
        for r in records:
            vectors = r.vector if isinstance(r.vector, dict) else {}
            if DENSE in vectors:
                out[str(r.id)] = [float(x) for x in vectors[DENSE]]
        return out

    def search(self, name: str, request: SearchRequest) -> list[ScoredPoint]:
        m = _models()
        flt = _client_filter(m, request.filter)
        params = m.SearchParams(hnsw_ef=request.hnsw_ef)
        request.check()
        dense_query = sparse_query = None
        if request.dense is not None:
            dense_query = [float(x) for x in request.dense]
        if request.sparse is not None:
            sparse_query = m.SparseVector(indices=list(request.sparse.indices), values=list(request.sparse.values))
        if request.mode == "hybrid":
            fusion: Any
            if request.fusion == "rrf":
                fusion = m.RrfQuery(rrf=m.Rrf(k=request.rrf_k, weights=list(request.weights)))
            else:
                fusion = m.FusionQuery(fusion=m.Fusion.DBSF)
            response = self._call(
                "searching",
                self._client.query_points,
                name,
                prefetch=[
                    m.Prefetch(query=dense_query, using=DENSE, limit=request.candidates, filter=flt, params=params),
                    m.Prefetch(query=sparse_query, using=SPARSE, limit=request.candidates, filter=flt),
                ],
                query=fusion,
                limit=request.limit,
                with_payload=request.with_payload,
                **self._read_consistency(m),
            )
        else:
            response = self._call(
                "searching",
                self._client.query_points,
                name,
                query=dense_query if request.mode == "dense" else sparse_query,
                using=DENSE if request.mode == "dense" else SPARSE,
                query_filter=flt,
                search_params=params if request.mode == "dense" else None,
                limit=request.limit,
                with_payload=request.with_payload,
                **self._read_consistency(m),
            )
        return [ScoredPoint(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def flush(self, name: str) -> None:
        """Writes use wait=True, so the server has applied them when upsert returns."""

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None
