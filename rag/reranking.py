"""Cross-encoder reranking of the fused candidates (sentence-transformers `CrossEncoder`).

A cross-encoder reads query and chunk together, so it costs one forward pass
per candidate: ~40 ms for 128 tokens on this 2-core CPU (shared/OFFLINE.md),
hence the bound `rerank.top_n`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import RerankSettings
from rag.embedding import resolve_device
from rag.errors import ConfigError
from rag.retrieval import RetrievedChunk

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class CrossEncoderReranker:
    """Scores (query, chunk) pairs and reorders by that score; weights load on first use."""

    def __init__(self, settings: RerankSettings, model_path: str) -> None:
        self.settings = settings
        self.model_path = model_path
        self._model: CrossEncoder | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.settings.model or self.model_path

    @property
    def model(self) -> CrossEncoder:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> CrossEncoder:
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device = resolve_device(self.settings.device)
        try:
            model = CrossEncoder(self.model_path, device=device, max_length=self.settings.max_length)
        except OSError as e:
            raise ConfigError(
                f"rerank.model={self.name!r} could not be loaded ({e}); give a local folder, a hub name in the "
                "local cache, or a model trained with `rag finetune retrieval --kind reranker`"
            ) from e
        if device.startswith("cuda"):
            model.model.half()
        return model

    def warm_up(self) -> None:
        _ = self.model

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        import torch

        with torch.inference_mode():
            scores = self.model.predict(
                [(query, t) for t in texts], batch_size=self.settings.batch_size, show_progress_bar=False
            )
        return [float(s) for s in scores]

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        """The first `rerank.top_n` chunks rescored and reordered; the rest keep their fused order after them."""
        head = list(chunks[: self.settings.top_n])
        tail = list(chunks[self.settings.top_n :])
        scores = self.score(query, [c.text for c in head])
        rescored = [
            replace(c, score=s, stage_scores={**c.stage_scores, "rerank": s}) for c, s in zip(head, scores, strict=True)
        ]
        rescored.sort(key=lambda c: c.score, reverse=True)
        return (rescored + tail)[:top_k]


def build_reranker(settings: RerankSettings, models_dir: Path) -> CrossEncoderReranker | None:
    """The configured reranker, or None when `rerank.model` is unset."""
    if settings.model is None:
        return None
    if settings.kind != "cross-encoder":
        raise ConfigError(f"rerank.kind={settings.kind!r} is not supported")
    from rag.registry import resolve

    return CrossEncoderReranker(settings, resolve(settings.model, models_dir, "reranker"))


def describe(reranker: CrossEncoderReranker | None) -> dict[str, Any]:
    return {"model": reranker.name if reranker else None, "top_n": reranker.settings.top_n if reranker else 0}
