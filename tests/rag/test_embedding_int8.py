"""embedder.backend=onnx-int8: the bundled model exported and quantised here, checked against the fp32 vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.config import EmbedderSettings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import ConfigError

PASSAGES = [
    "Employees receive 28 days of paid annual leave, including public holidays.",
    "The Toronto Maple Leafs have won the Stanley Cup 13 times, most recently in 1967.",
    "Capital expenditure for fiscal 2018 was $1,577 million, up from $1,373 million in 2017.",
    "Quarterly revenue grew 12% on strong demand for cloud services in Europe.",
]
QUESTIONS = [
    "How many days of paid leave do employees get?",
    "How many Stanley Cups have the Maple Leafs won?",
    "What was the capital expenditure in 2018?",
    "How much did quarterly revenue grow?",
]


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> SentenceTransformerEmbedder:
    settings = EmbedderSettings.model_validate({"backend": "onnx-int8", "device": "cpu"})
    return SentenceTransformerEmbedder(settings, tmp_path_factory.mktemp("cache"))


def test_int8_vectors_are_close_to_fp32_and_rank_the_same(int8: SentenceTransformerEmbedder, embedder: Any) -> None:
    quantised = int8.embed_documents(PASSAGES)
    reference = embedder.embed_documents(PASSAGES)
    assert quantised.shape == reference.shape and quantised.dtype == np.float32
    assert np.allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosine = (quantised * reference).sum(axis=1)
    assert cosine.min() > 0.98, cosine  # measured 0.99+ (bench/embed_int8.py: mean 0.995 on SciFact)
    queries = np.stack([int8.embed_query(q) for q in QUESTIONS])
    assert ((queries @ quantised.T).argmax(axis=1) == np.arange(len(QUESTIONS))).all()


def test_the_export_is_cached_and_reused(int8: SentenceTransformerEmbedder) -> None:
    int8.warm_up()
    path = int8.int8.path
    assert path.is_file() and path.parent.parent.name == "onnx" and path.parent.name == int8.fingerprint
    stamp = path.stat().st_mtime_ns
    again = SentenceTransformerEmbedder(int8.settings, int8.cache_dir)
    one = again.embed_documents(PASSAGES[:1])
    assert path.stat().st_mtime_ns == stamp  # loaded, not exported again
    assert np.allclose(one, int8.embed_documents(PASSAGES[:1]), atol=1e-6)
    assert int8.identity()["backend"] == "onnx-int8"


def test_int8_input_order_is_kept_across_batches(tmp_path: Path, int8: SentenceTransformerEmbedder) -> None:
    # Activations are quantised per batch, so a vector moves a little with its batch-mates: close, not equal.
    small = SentenceTransformerEmbedder(int8.settings.model_copy(update={"batch_size": 2}), int8.cache_dir)
    texts = [*PASSAGES, "short", "a somewhat longer text about leave"]
    cosine = (small.embed_documents(texts) * int8.embed_documents(texts)).sum(axis=1)
    assert cosine.min() > 0.97, cosine  # measured 0.977 for "short" padded among long texts, 0.99+ otherwise


def test_int8_on_a_gpu_device_is_a_clear_error(tmp_path: Path) -> None:
    settings = EmbedderSettings.model_validate({"backend": "onnx-int8", "device": "cuda"})
    with pytest.raises(ConfigError, match="onnx-int8 runs on the CPU"):
        SentenceTransformerEmbedder(settings, tmp_path).embed_documents(["x"])
