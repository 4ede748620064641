"""Hybrid retrieval over a collection: dense + BM25 sparse candidates fused in Qdrant (RRF or DBSF)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

from rag.access.principal import Principal
from rag.amounts import asks_for_amount, favour_amounts
from rag.collections import CollectionHandle
from rag.config import RetrievalSettings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import UsageError
from rag.facets import Facets, InferredConstraint, collect_facets, infer_constraint
from rag.glossary import Expansion, Glossary
from rag.store.base import INDEXED_FIELDS, Condition, Filter, SearchRequest
from rag.types import Mode as Mode
from rag.types import Retrieval as Retrieval
from rag.types import RetrievedChunk as RetrievedChunk


def parse_filters(
    specs: list[str] | tuple[str, ...], known_fields: list[str], field_types: dict[str, list[str]] | None = None
) -> Filter | None:
    """`field=value`, `field=a,b` (any of; `a\\,b` is one value with a comma) or `field^=prefix`.

    Unknown fields are a UsageError. A value is typed like the field's stored values (`field_types`, as the
    collection records them): `record_id=4983` stays the string the ids are stored as.
    """
    conditions = []
    for spec in specs:
        if "^=" in spec:
            key, value = spec.split("^=", 1)
            kind = "prefix"
        elif "=" in spec:
            key, value = spec.split("=", 1)
            kind = "value"
        else:
            raise UsageError(f"--filter {spec!r}: expected field=value, field=a,b or field^=prefix")
        key = key.strip()
        negate = key.startswith("!")
        key = key.lstrip("!")
        if known_fields and key not in known_fields:
            raise UsageError(
                f"--filter {spec!r}: unknown field {key!r}; "
                f"fields in this collection: {', '.join(sorted(known_fields))}"
            )
        if kind == "prefix":
            conditions.append(Condition(key, prefix=value, negate=negate))
        else:
            types = (field_types or {}).get(key)
            values = [_coerce(v.replace("\\,", ","), key, types) for v in re.split(r"(?<!\\),", value) if v]
            if len(values) > 1:
                conditions.append(Condition(key, any_of=tuple(values), negate=negate))
            else:
                conditions.append(Condition(key, value=values[0] if values else "", negate=negate))
    return Filter(tuple(conditions)) if conditions else None


def _coerce(value: str, key: str = "", types: list[str] | None = None) -> str | int | bool:
    """`value` typed as the field stores it; without a record of that, keyword fields stay text, else a guess."""
    if types:
        if types == ["bool"] and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if types == ["int"] and value.lstrip("-").isdigit():
            return int(value)
        return value
    if key in INDEXED_FIELDS:
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value.lstrip("-").isdigit():
        return int(value)
    return value


class QdrantHybridRetriever:
    """Encodes the query both ways and lets Qdrant fuse the two candidate lists.

    Every read goes through `handle.store`, the view of the handle's principal (rag/access/scoped.py): searches,
    counts and the card facets only ever see that caller's documents. `for_principal` serves another caller.
    """

    def __init__(
        self, handle: CollectionHandle, embedder: SentenceTransformerEmbedder, settings: RetrievalSettings
    ) -> None:
        self.handle = handle
        self.embedder = embedder
        self.settings = settings
        # The document constraint the last `retrieve` inferred from its query (None: none tried); `rag query` shows it.
        self.last_constraint: InferredConstraint | None = None
        self.glossary = Glossary.load(settings.glossaries)
        self.last_expansion: Expansion | None = None  # the glossary terms the last query named
        self._facets: Facets | None = None

    @property
    def principal(self) -> Principal:
        return self.handle.principal

    def for_principal(self, principal: Principal) -> QdrantHybridRetriever:
        """This retriever for another caller: same models and settings, that caller's view (and its own facets)."""
        return QdrantHybridRetriever(self.handle.for_principal(principal), self.embedder, self.settings)

    def infer_constraint(self, query: str) -> InferredConstraint | None:
        """The query's document constraint from the collection's card values; None when inference is off."""
        if self.settings.infer_filters == "off":
            return None
        if self._facets is None:  # one scroll of first chunks per retriever (a handle sees one index version)
            self._facets = collect_facets(self.handle.store, self.handle.name)
        return infer_constraint(query, self._facets, self.handle.store, self.handle.name)

    def retrieve(
        self, query: str, *, top_k: int | None = None, mode: Mode | None = None, filters: Filter | None = None
    ) -> Retrieval:
        if not query or not "".join(ch for ch in query if ch.isprintable()).strip():  # "\x00" alone is empty too
            raise UsageError("the query is empty: ask something")
        mode = mode or self.settings.mode
        if top_k is not None and top_k < 1:
            raise UsageError(f"top_k must be at least 1, got {top_k}")
        top_k = top_k or self.settings.top_k
        if filters is not None:
            unknown = filters.fields - set(self.handle.payload_fields)
            if self.handle.payload_fields and unknown:
                raise UsageError(
                    f"filter on unknown field(s) {', '.join(sorted(unknown))}; fields in this collection: "
                    f"{', '.join(sorted(self.handle.payload_fields))}"
                )
        timings: dict[str, float] = {}
        if mode in ("hybrid", "dense"):
            self.embedder.warm_up()
        expansion = self.last_expansion = self.glossary.expand(query)
        t0 = time.perf_counter()
        dense_text = expansion.text
        if expansion.matches and self.embedder.count_tokens(dense_text) > self.embedder.max_tokens:
            dense_text = query  # the meanings would push a long question past the window: BM25 still gets them
        dense = self.embedder.embed_query(dense_text) if mode in ("hybrid", "dense") else None
        t1 = time.perf_counter()
        sparse = self.handle.sparse.embed_query(expansion.text) if mode in ("hybrid", "sparse") else None
        if sparse is not None and len(sparse) == 0 and mode == "sparse":
            raise UsageError(f"the query {query!r} has no searchable words (only stopwords?): rephrase it")
        t2 = time.perf_counter()
        if mode == "hybrid" and sparse is not None and len(sparse) == 0:
            mode = "dense"  # nothing lexical to match: fusing an empty list would only dilute
        # An amount question re-orders a longer fused list by the amounts its chunks print (rag/amounts.py).
        prior = self.settings.amount_prior if asks_for_amount(query) else 0.0
        limit = max(top_k, self.settings.amount_candidates) if prior > 0 else top_k
        request = SearchRequest(
            limit=limit,
            mode=mode,
            dense=dense.tolist() if dense is not None else None,
            sparse=sparse,
            candidates=max(self.settings.candidates, limit),
            fusion=self.settings.fusion,
            rrf_k=self.settings.rrf_k,
            weights=(self.settings.dense_weight, self.settings.sparse_weight),
            hnsw_ef=self.settings.hnsw_ef,
            filter=filters,
        )
        self.last_constraint = None
        if filters is None and self.settings.infer_filters != "off":
            self.last_constraint = self.infer_constraint(query)
        elif filters is not None and self.settings.infer_filters != "off":
            self.last_constraint = InferredConstraint(None, notes=("an explicit filter was given: it wins",))
        inferred = self.last_constraint.filter if self.last_constraint is not None else None
        if inferred is not None:
            points = self.handle.store.search(self.handle.name, replace(request, filter=inferred))
            if self.settings.infer_filters == "prefer" and len(points) < limit:
                # Too few chunks in the named documents: the rest of the collection fills the list, after them.
                seen = {p.id for p in points}
                rest = self.handle.store.search(self.handle.name, request)
                points = list(points) + [p for p in rest if p.id not in seen][: limit - len(points)]
        else:
            points = self.handle.store.search(self.handle.name, request)
        t3 = time.perf_counter()
        timings["embed_dense"] = (t1 - t0) * 1000
        timings["embed_sparse"] = (t2 - t1) * 1000
        timings["search"] = (t3 - t2) * 1000
        if not points and filters is not None and self.handle.store.count(self.handle.name, filters) == 0:
            raise UsageError(
                f"no chunk of collection {self.handle.name!r} matches the filter "
                f"({', '.join(sorted(filters.fields))}): check the value (`rag collections describe --documents`)"
            )
        stage = "fusion" if mode == "hybrid" else mode
        if prior > 0:
            ranked = favour_amounts(points, prior)[:top_k]
            chunks = tuple(RetrievedChunk(p.id, s, p.payload, {stage: p.score, "amounts": b}) for p, s, b in ranked)
        else:
            chunks = tuple(RetrievedChunk(p.id, p.score, p.payload, {stage: p.score}) for p in points)
        return Retrieval(query, mode, chunks, timings, dense, expansion.matches)


def search(
    retriever: QdrantHybridRetriever,
    reranker: Any,
    query: str,
    *,
    top_k: int | None = None,
    mode: Mode | None = None,
    filters: Filter | None = None,
    rerank: bool = True,
) -> Retrieval:
    """Retrieve, then rerank the head of the fused list when a reranker is configured and wanted."""
    top_k = top_k or retriever.settings.top_k
    if not rerank or reranker is None:
        return retriever.retrieve(query, top_k=top_k, mode=mode, filters=filters)
    reranker.warm_up()
    first = retriever.retrieve(query, top_k=max(top_k, reranker.settings.top_n), mode=mode, filters=filters)
    t0 = time.perf_counter()
    chunks = reranker.rerank(query, first.chunks, top_k)
    timings = {**first.timings_ms, "rerank": (time.perf_counter() - t0) * 1000}
    return replace(first, chunks=tuple(chunks), timings_ms=timings)


def retrieval_to_dict(result: Retrieval, reranker: Any = None, constraint: Any = None) -> dict[str, Any]:
    """A search result as `rag query --json` and `POST /v1/retrieve` give it: ranked chunks with their payloads."""
    return {
        "query": result.query,
        "expansion": [{"term": found, "means": list(means)} for found, means in result.expansion],
        "mode": result.mode,
        "reranker": getattr(reranker, "name", None),
        "constraint": constraint.to_dict() if constraint else None,
        "timings_ms": result.timings_ms,
        "chunks": [
            {
                "rank": i + 1,
                "id": c.id,
                "score": c.score,
                "stage_scores": c.stage_scores,
                **{k: v for k, v in c.payload.items() if k != "source_dirs"},
            }
            for i, c in enumerate(result.chunks)
        ],
    }
