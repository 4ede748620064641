"""Cross-encoder reranking of the fused candidates (sentence-transformers `CrossEncoder`).

A cross-encoder reads query and chunk together, so it costs one forward pass
per candidate: ~40 ms for 128 tokens on this 2-core CPU (shared/OFFLINE.md),
hence the bound `rerank.top_n`. The final order of the reranked head can blend
the cross-encoder's score with the first-stage (fused) score, both standardised
per query (`rerank.blend`); a reranker trained here records the share that was
best on its validation queries.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import RerankSettings
from rag.errors import ConfigError
from rag.models import resolve_device
from rag.types import RetrievedChunk

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


# The fixed cost of one forward pass, in tokens of work: what a further sub-batch must save in padding.
# Measured with MiniLM-L6 on this 2-core CPU: one pass over a single 8-token pair takes 10.5 ms, the time
# of ~59 tokens at the 5.6k tokens/s of long batches, so ~50 tokens of overhead per pass.
BATCH_OVERHEAD_TOKENS = 48


def plan_batches(lengths: Sequence[int], max_batch: int, overhead: int) -> list[list[int]]:
    """Split pairs into sub-batches of at most `max_batch` that minimise the tokens computed.

    A batch computes every pair at its longest pair's length, and costs `overhead`
    tokens more per batch. Sorted by length (longest first), the best split into
    contiguous runs is found exactly by dynamic programming over the cut points.
    Returns indices into `lengths`, one list per batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    cost = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_batch), end):
            c = cost[start] + overhead + (end - start) * lengths[order[start]]
            if c < cost[end]:
                cost[end], cut[end] = c, start
    batches = []
    end = n
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


def standardise(values: Sequence[float]) -> list[float]:
    """(v - mean) / std over one query's candidates; all zero when they are all equal."""
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
    return [(v - mean) / std if std > 1e-12 else 0.0 for v in values]


def blend_scores(rerank: Sequence[float], first_stage: Sequence[float], share: float) -> list[float]:
    """`share` of the standardised cross-encoder score plus the rest of the standardised first-stage score."""
    if share >= 1.0:
        return [float(s) for s in rerank]
    r, f = standardise(rerank), standardise(first_stage)
    return [share * a + (1.0 - share) * b for a, b in zip(r, f, strict=True)]


# Characters of a document title kept in the reranker's context line: organisation and period tell look-alikes
# apart, a long title would only take the chunk's place in the window.
CONTEXT_TITLE_CHARS = 80


def document_context_text(payload: Mapping[str, Any], text: str) -> str:
    """The chunk as a reranker trained with document context reads it: the document card's short form (title ·
    organisation · period, from the payload's card fields), the section path, then the chunk's text.

    The stored chunk text says nothing about whose document it is, so "Research and development (in millions)"
    is identical in every filing; a reranker reading only it cannot tell look-alike documents apart."""
    parts: list[str] = []
    title = str(payload.get("title") or "")[:CONTEXT_TITLE_CHARS]
    for value in (title, payload.get("organisation"), payload.get("period")):
        value = str(value or "").strip()
        if value and not any(value.lower() in p.lower() for p in parts):
            parts = [p for p in parts if p.lower() not in value.lower()] + [value]
    section = " > ".join(str(s) for s in payload.get("section_path") or [])
    head = "\n".join(x for x in (" · ".join(parts), section) if x)
    return f"{head}\n\n{text}" if head else text


def build_cross_encoder(base_model: str, max_length: int, seed: int = 0) -> CrossEncoder:
    """A new cross-encoder on a pretrained encoder: the encoder reads "query [SEP] text", its tokens are
    mean-pooled and a linear layer gives one raw score (no sigmoid).

    Mean pooling, not the [CLS] classification head: sentence-embedding models such as the bundled
    all-MiniLM-L6-v2 were trained for mean-pooled outputs, and from them the [CLS] head barely
    learned on SciFact (validation nDCG@10 of the reranker alone 0.25 after 60 steps, against 0.54
    after 100 steps with mean pooling at a higher learning rate).
    """
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(seed)
    encoder = Transformer(base_model, transformer_task="feature-extraction", max_seq_length=max_length)
    dim = encoder.get_embedding_dimension()
    head = Dense(dim, 1, activation_function=torch.nn.Identity(), module_output_name="scores")
    return CrossEncoder(modules=[encoder, Pooling(dim, "mean"), head], device="cpu", activation_fn=torch.nn.Identity())


def for_device(model: CrossEncoder, device: str) -> CrossEncoder:
    """fp16 on CUDA, all of it: the encoder and any head after it (a half encoder feeding an fp32 `Dense`
    head fails on every call); fp32 elsewhere."""
    if device.startswith("cuda"):
        model.half()
    return model


class CrossEncoderReranker:
    """Scores (query, chunk) pairs and reorders by that score (blended, see `blend`); weights load on first use."""

    def __init__(
        self, settings: RerankSettings, model_path: str, blend: float | None = None, document_context: bool = False
    ) -> None:
        self.settings = settings
        self.model_path = model_path
        # Trained on `document_context_text` (recorded on its model card): it reads each chunk that way too.
        self.document_context = document_context
        # The cross-encoder's share of the final score: the setting, else the model's own, else all of it.
        self.blend = settings.blend if settings.blend is not None else (1.0 if blend is None else blend)
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
        return for_device(model, device)

    def warm_up(self) -> None:
        _ = self.model

    def pair_lengths(self, query: str, texts: Sequence[str]) -> list[int]:
        """Tokens of each (query, text) pair as the model reads it (truncated to `rerank.max_length`).

        `predict` tokenizes the pairs again: ~3.5 ms for 20 pairs of 256 tokens with the fast tokenizer,
        against the ~500 ms of scoring them on this 2-core CPU.
        """
        encoded = self.model.tokenizer(
            [query] * len(texts), list(texts), truncation=True, max_length=self.settings.max_length
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text, computed in length-sorted sub-batches so that little padding is computed."""
        if not texts:
            return []
        import torch

        batches = plan_batches(self.pair_lengths(query, texts), self.settings.batch_size, BATCH_OVERHEAD_TOKENS)
        scores = [0.0] * len(texts)
        with torch.inference_mode():
            for batch in batches:
                out = self.model.predict(
                    [(query, texts[i]) for i in batch], batch_size=len(batch), show_progress_bar=False
                )
                for i, s in zip(batch, out, strict=True):
                    scores[i] = float(s)
        return scores

    def rerank(self, query: str, chunks: Sequence[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        """The first `rerank.top_n` chunks rescored and reordered; the rest keep their fused order after them."""
        head = list(chunks[: self.settings.top_n])
        tail = list(chunks[self.settings.top_n :])
        texts = [document_context_text(c.payload, c.text) if self.document_context else c.text for c in head]
        scores = self.score(query, texts)
        final = blend_scores(scores, [c.score for c in head], self.blend)
        rescored = [
            replace(c, score=f, stage_scores={**c.stage_scores, "rerank": s})
            for c, s, f in zip(head, scores, final, strict=True)
        ]
        rescored.sort(key=lambda c: c.score, reverse=True)
        return (rescored + tail)[:top_k]


def build_reranker(settings: RerankSettings, models_dir: Path) -> CrossEncoderReranker | None:
    """The configured reranker, or None when `rerank.model` is unset."""
    if settings.model is None:
        return None
    if settings.kind != "cross-encoder":
        raise ConfigError(f"rerank.kind={settings.kind!r} is not supported")
    from rag.registry import read_card, resolve

    path = resolve(settings.model, models_dir, "reranker")
    card = read_card(Path(path))
    blend = card.metrics.get("blend") if card is not None else None
    context = bool(card.hyperparameters.get("document_context")) if card is not None else False
    return CrossEncoderReranker(settings, path, None if blend is None else float(blend), context)
