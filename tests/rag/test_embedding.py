"""The dense embedder: batches sorted by token count, vectors returned in input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import EmbedderSettings
from rag.embedding import SentenceTransformerEmbedder, length_batches

TEXTS = [
    "short",
    "Employees receive 28 days of paid annual leave, including public holidays, and may carry five days over.",
    "The Toronto Maple Leafs have won the Stanley Cup 13 times.",
    "1,577 2,345 3,456 4,567 5,678 6,789",  # few characters, many tokens: character order would misplace it
    "Quarterly revenue grew 12%.",
]


def test_length_batches_put_similar_lengths_together_longest_first() -> None:
    assert length_batches([3, 9, 1, 7, 5], 2) == [[1, 3], [4, 0], [2]]
    assert length_batches([], 4) == []
    batches = length_batches([5, 5, 5], 8)
    assert batches == [[0, 1, 2]]  # ties keep input order (a stable sort)


def test_vectors_come_back_in_input_order_whatever_the_batches(embedder: Any) -> None:
    small = SentenceTransformerEmbedder(embedder.settings.model_copy(update={"batch_size": 2}))
    small._model = embedder.model  # the session's loaded weights
    batched = small.embed_documents(TEXTS)
    alone = np.stack([small.embed_documents([t])[0] for t in TEXTS])
    assert batched.shape == (len(TEXTS), embedder.dimension) and batched.dtype == np.float32
    # fp32: padding is masked out, so a vector does not depend on its batch-mates
    assert np.allclose(batched, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_the_default_batch_is_16_on_a_cpu_and_64_on_a_gpu() -> None:
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cpu")).batch_size == 16
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cuda")).batch_size == 64
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cpu", batch_size=40)).batch_size == 40


def test_auto_backend_is_int8_on_a_cpu_and_torch_elsewhere(tmp_path: Path) -> None:
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cpu")).backend == "onnx-int8"
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cuda")).backend == "torch"
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cpu", precision="fp32")).backend == "torch"
    assert SentenceTransformerEmbedder(EmbedderSettings(device="cpu", backend="torch")).backend == "torch"
    # a model with a projection after pooling: the ONNX path does not run it, so auto takes torch
    model = tmp_path / "projected"
    model.mkdir()
    modules = [{"type": "sentence_transformers.models.Transformer"}, {"type": "sentence_transformers.models.Dense"}]
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    assert SentenceTransformerEmbedder(EmbedderSettings(model=str(model), device="cpu")).backend == "torch"
