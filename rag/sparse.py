"""BM25 sparse vectors computed in-process with Qdrant Edge's `Bm25`, for both store backends.

Documents get BM25 term-frequency weights, queries get 1.0 per unique term,
and the store applies IDF (`Modifier.Idf`), so the product is Okapi BM25.
Edge's tokenizer mirrors the Qdrant server's BM25 config, so one encoder
serves the embedded store and a server alike, with no model download.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rag.config import SparseSettings
from rag.errors import ConfigError


@dataclass(frozen=True)
class SparseVector:
    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.indices)


class Bm25SparseEncoder:
    """BM25 with the collection's own mean document length.

    `avg_len` matters: Edge's default of 256 tokens is wrong for chunks of
    ~200 word pieces (~90 BM25 tokens after stopwords). It is measured on the
    first ingest into a collection and recorded in its metadata.
    """

    def __init__(self, settings: SparseSettings, avg_len: float) -> None:
        if avg_len <= 0:
            raise ValueError(f"avg_len must be positive, got {avg_len}")
        self.settings = settings
        self.avg_len = float(avg_len)

    @cached_property
    def _model(self) -> Any:
        from qdrant_edge import Bm25, Bm25Config

        return Bm25(
            Bm25Config(k=self.settings.k1, b=self.settings.b, avg_len=self.avg_len, language=self.settings.language)
        )

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.settings.kind,
            "k1": self.settings.k1,
            "b": self.settings.b,
            "language": self.settings.language,
            "avg_len": self.avg_len,
        }

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        out = []
        for text in texts:
            vec = self._model.embed_document(text)
            out.append(SparseVector(tuple(vec.indices), tuple(vec.values)))
        return out

    def embed_query(self, text: str) -> SparseVector:
        vec = self._model.embed_query(text)
        return SparseVector(tuple(vec.indices), tuple(vec.values))


def build_sparse_encoder(settings: SparseSettings, avg_len: float) -> Bm25SparseEncoder:
    """The encoder for `sparse.kind`; here rather than in the factory because a collection rebuilds the encoder
    it was indexed with (`rag.collections`), and library modules do not import the factory."""
    if settings.kind == "bm25":
        return Bm25SparseEncoder(settings, avg_len)
    raise ConfigError(f"sparse.kind={settings.kind!r} is not supported")


def measure_avg_len(texts: Sequence[str], language: str) -> float:
    """Mean BM25 token count of `texts` under the same tokenizer, stopwords and stemmer.

    With b=0 and a huge k the BM25 weight tf*(k+1)/(tf+k) equals the raw term
    count, so the weights of a document sum to its length in BM25 tokens.
    """
    from qdrant_edge import Bm25, Bm25Config

    counter = Bm25(Bm25Config(k=1e9, b=0.0, language=language))
    lengths = [sum(counter.embed_document(t).values) for t in texts]
    nonzero = [n for n in lengths if n > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 1.0
