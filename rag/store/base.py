"""The small vector-store interface every Qdrant backend implements, and its value types.

A collection holds one point per chunk with a named dense vector ("dense"), a
named BM25 sparse vector ("sparse", IDF applied by the store) and the chunk's
payload. Collection metadata records which embedder and chunker built it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rag.errors import UsageError
from rag.sparse import SparseVector
from rag.types import Mode

DENSE = "dense"
SPARSE = "sparse"

# Payload fields with a keyword index: the ones filters and incremental ingest use.
INDEXED_FIELDS = (
    "document_id",
    "source",
    "source_dirs",
    "file_type",
    "content_hash",
    "record_id",
    # The document card's text fields (ingest/cards.py): inferred and explicit document filters use them.
    "organisation",
    "form",
    "doc_type",
    # The document's access groups (rag/access): every read by a non-admin caller filters on it.
    "access",
)
# Integer payload fields with an integer index: the card's years and quarter.
INTEGER_INDEXED_FIELDS = ("year", "quarter")

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

FilterValue = str | int | bool


def validate_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name):
        raise UsageError(
            f"collection name {name!r} is invalid: use letters, digits, '_', '-', '.' "
            "(up to 128, starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class Condition:
    """One payload condition: exact value, any of several values, or keyword prefix."""

    field: str
    value: FilterValue | None = None
    any_of: tuple[FilterValue, ...] | None = None
    prefix: str | None = None
    negate: bool = False

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.value, self.any_of, self.prefix))
        if given != 1:
            raise ValueError(f"condition on {self.field!r} needs exactly one of value, any_of, prefix")


@dataclass(frozen=True)
class Filter:
    """All conditions must hold (negated ones must not)."""

    conditions: tuple[Condition, ...] = ()

    @property
    def fields(self) -> set[str]:
        return {c.field for c in self.conditions}


@dataclass(frozen=True)
class FilterBuilder:
    """Translates a Filter into one client library's filter objects, given its constructors."""

    value: Callable[[FilterValue], Any]
    any_of: Callable[[list[FilterValue]], Any]
    prefix: Callable[[str], Any]
    condition: Callable[[str, Any], Any]
    combine: Callable[[list[Any] | None, list[Any] | None], Any]

    def build(self, flt: Filter | None) -> Any:
        if flt is None or not flt.conditions:
            return None

        def one(c: Condition) -> Any:
            if c.value is not None:
                return self.condition(c.field, self.value(c.value))
            if c.any_of is not None:
                return self.condition(c.field, self.any_of(list(c.any_of)))
            return self.condition(c.field, self.prefix(str(c.prefix)))

        must = [one(c) for c in flt.conditions if not c.negate]
        must_not = [one(c) for c in flt.conditions if c.negate]
        return self.combine(must or None, must_not or None)


@dataclass(frozen=True)
class PointRecord:
    """A chunk as written to the store."""

    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class ScoredPoint:
    id: str
    score: float
    payload: dict[str, Any]


def points_in_order(ids: Sequence[str], records: Iterable[Any]) -> list[ScoredPoint]:
    """Records read by id (any backend's: `.id`, `.payload`) as points in the order of `ids`; missing ids left out."""
    by_id = {str(r.id): dict(r.payload or {}) for r in records}
    return [ScoredPoint(i, 0.0, by_id[i]) for i in ids if i in by_id]


def require_conditions(flt: Filter, action: str, hint: str = "") -> None:
    """A write by filter must name what it touches: an empty filter would match the whole collection."""
    if not flt.conditions:
        raise ValueError(f"refusing to {action} with an empty filter{hint}")


@dataclass(frozen=True)
class SearchRequest:
    """One retrieval over a collection. `mode` picks which vectors are used."""

    limit: int
    mode: Mode = "hybrid"
    dense: Sequence[float] | None = None
    sparse: SparseVector | None = None
    candidates: int = 100
    fusion: Literal["rrf", "dbsf"] = "rrf"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    hnsw_ef: int = 128
    filter: Filter | None = None
    with_payload: bool = True

    def check(self) -> None:
        """Raise ValueError when the query vectors the mode needs are missing."""
        if self.mode in ("hybrid", "dense") and self.dense is None:
            raise ValueError(f"{self.mode} search needs a dense query vector")
        if self.mode in ("hybrid", "sparse") and self.sparse is None:
            raise ValueError(f"{self.mode} search needs a sparse query vector")


class VectorStore(abc.ABC):
    """What ingest and retrieval need from Qdrant; one implementation per backend."""

    backend: str

    @abc.abstractmethod
    def list_collections(self) -> list[str]: ...

    @abc.abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        """Create the collection with dense+sparse vectors and the payload indexes."""

    @abc.abstractmethod
    def get_metadata(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def set_metadata(self, name: str, metadata: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def delete_collection(self, name: str) -> None: ...

    @abc.abstractmethod
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None: ...

    @abc.abstractmethod
    def delete(self, name: str, flt: Filter) -> None:
        """Delete every point matching `flt`."""

    @abc.abstractmethod
    def create_keyword_index(self, name: str, field: str) -> None:
        """Index a keyword payload field of an existing collection (one created before the field was indexed)."""

    @abc.abstractmethod
    def set_payload(self, name: str, flt: Filter, payload: dict[str, Any]) -> None:
        """Set these payload keys on every point matching `flt` (vectors untouched: a metadata-only update)."""

    @abc.abstractmethod
    def count(self, name: str, flt: Filter | None = None) -> int: ...

    @abc.abstractmethod
    def scroll(
        self, name: str, flt: Filter | None = None, fields: Sequence[str] | None = None, batch: int = 1024
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every matching point as (id, payload restricted to `fields`)."""

    @abc.abstractmethod
    def retrieve(self, name: str, ids: Sequence[str]) -> list[ScoredPoint]:
        """Points by id with their payload (score 0), in the order given; missing ids are left out."""

    @abc.abstractmethod
    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The stored dense vectors of these points (missing ids are left out)."""

    @abc.abstractmethod
    def search(self, name: str, request: SearchRequest) -> list[ScoredPoint]: ...

    @abc.abstractmethod
    def flush(self, name: str) -> None:
        """Make every write so far durable."""

    def optimize(self, name: str) -> None:  # noqa: B027 - optional for backends that self-optimise
        """Build indexes now rather than in the background (no-op where the engine does it)."""

    def close(self) -> None:  # noqa: B027
        """Release files and connections."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
