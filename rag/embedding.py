"""Dense embeddings with sentence-transformers: bundled all-MiniLM-L6-v2 by default, any model by path or name.

Weights load on first use, so building the embedder (and `rag --help`) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.config import EmbedderSettings
from rag.errors import ConfigError, MissingDependencyError, UsageError
from rag.models import resolve_device as resolve_device
from rag.models import resolve_model_path as resolve_model_path

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

    from rag.onnx_int8 import OnnxInt8Encoder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fingerprint(model_dir: Path) -> str:
    """A short hash of the model's config and weight sizes: changes when the weights change.

    Hashing the weights themselves would cost a second per ingest; names and
    sizes of the weight files plus the configs catch every retrained model.
    """
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(model_dir).as_posix()
        digest.update(rel.encode())
        if path.suffix in {".json", ".txt"} and path.stat().st_size < 2_000_000:
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of texts in batches of `batch_size`, longest first, so each batch pads to similar lengths.

    Sorted by token count, not by characters as sentence-transformers' encode() does: on SciFact chunks character
    order padded 1.33 tokens per real token in batches of 64, token order 1.12 (1.03 in batches of 16).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SentenceTransformerEmbedder:
    """Normalised dense vectors for chunks and queries.

    Texts go to the model in batches sorted by token count (`length_batches`). Inputs longer than the model window
    are an error, not a silent truncation: the chunker guarantees they fit.
    """

    def __init__(self, settings: EmbedderSettings, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.model_path = resolve_model_path(settings.model)
        self.cache_dir = cache_dir  # where backend=onnx-int8 keeps its export
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    # -- cheap metadata, no weights loaded --------------------------------------------------
    @property
    def name(self) -> str:
        return self.settings.model

    @cached_property
    def _local_dir(self) -> Path | None:
        path = Path(self.model_path)
        return path if path.is_dir() else None

    @cached_property
    def max_tokens(self) -> int:
        """The model window in tokens, special tokens included."""
        if self._local_dir is not None:
            st_config = _read_json(self._local_dir / "sentence_bert_config.json")
            if "max_seq_length" in st_config:
                return int(st_config["max_seq_length"])
            hf_config = _read_json(self._local_dir / "config.json")
            if "max_position_embeddings" in hf_config:
                return int(hf_config["max_position_embeddings"])
        return int(self.model.max_seq_length or 512)

    @cached_property
    def dimension(self) -> int:
        if self._local_dir is not None:
            for pooling in self._local_dir.glob("*_Pooling/config.json"):
                dim = _read_json(pooling).get("word_embedding_dimension")
                if dim and not list(self._local_dir.glob("*_Dense")):
                    return int(dim)
        # sentence-transformers 6 renamed the method; older releases only have the old name.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"embedder.model={self.name!r}: the model does not report its dimension")
        return int(dim)

    @cached_property
    def fingerprint(self) -> str:
        return _fingerprint(self._local_dir) if self._local_dir is not None else self.model_path

    def identity(self) -> dict[str, Any]:
        """What a collection records about the embedder that built it."""
        # The backend is recorded for the reader, not matched: int8 vectors are within cosine 0.995 of fp32 ones, so
        # a collection built with either answers queries embedded with the other (bench/embed_int8.py).
        return {
            "name": self.name,
            "dimension": self.dimension,
            "fingerprint": self.fingerprint,
            "max_tokens": self.max_tokens,
            "backend": self.backend,
        }

    @cached_property
    def batch_size(self) -> int:
        """`embedder.batch_size`, or 16 on a CPU and 64 on an accelerator: on 2 AVX2 cores batches of 16 ran
        1.2-1.4x faster than 64 (activations stay in cache), where a GPU wants big batches."""
        if self.settings.batch_size is not None:
            return self.settings.batch_size
        return 16 if self._device() == "cpu" else 64

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's own tokenizer, loaded without the weights (chunk workers use it)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_path)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` including the model's special tokens."""
        # verbose=False: transformers otherwise warns "(2860 > 512)" before our own clear over-length error.
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    # -- weights --------------------------------------------------------------------------
    @property
    def model(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _device(self) -> str:
        return resolve_device(self.settings.device)

    @cached_property
    def backend(self) -> str:
        """`embedder.backend`, with 'auto' resolved: onnx-int8 on a CPU (2.3x the documents/s of fp32 torch, SciFact
        nDCG@10 -0.0004 [-0.0095, +0.0090], bench/embed_int8.py), torch where int8 does not apply: an accelerator, an
        explicit precision, a hub name (int8 exports a local folder), a model with modules the ONNX path lacks."""
        if self.settings.backend != "auto":
            return self.settings.backend
        if self._device() != "cpu" or self.settings.precision != "auto" or self._local_dir is None:
            return "torch"
        from rag.onnx_int8 import int8_unsupported

        reason = int8_unsupported(self._local_dir)
        if reason is not None:
            log.info("embedder.backend=auto: torch for %s (int8 ONNX does not run it: %s)", self.name, reason)
            return "torch"
        return "onnx-int8"

    def _load(self) -> SentenceTransformer:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter CLI output
        device = self._device()
        if device == "cpu":
            torch.set_num_threads(self.settings.threads or max(1, os.cpu_count() or 1))
        kwargs: dict[str, Any] = {"device": device}
        if self.backend != "torch":
            kwargs["backend"] = self.backend
        try:
            model = SentenceTransformer(self.model_path, **kwargs)
        except ImportError as e:
            raise MissingDependencyError(
                f"embedder.backend={self.backend}: pip install 'sentence-transformers[{self.backend}]'"
            ) from e
        except OSError as e:
            raise ConfigError(
                f"embedder.model={self.name!r} could not be loaded ({e}); give a local folder or a "
                "hub name that is in the local cache (no model is downloaded offline)"
            ) from e
        precision = self.settings.precision
        if device.startswith("cuda") and self.backend == "torch":
            if precision in ("auto", "fp16"):
                model.half()
            elif precision == "bf16":
                model.to(torch.bfloat16)
        elif precision == "bf16" and self.backend == "torch":
            model.to(torch.bfloat16)
        model.eval()
        return model

    @cached_property
    def int8(self) -> OnnxInt8Encoder:
        """backend=onnx-int8: the quantised ONNX export (made once, cached under `cache_dir`)."""
        from rag.onnx_int8 import OnnxInt8Encoder

        if self._local_dir is None:
            raise ConfigError(
                f"embedder.backend=onnx-int8 needs a local model folder; embedder.model={self.name!r} is not one"
            )
        if self._device() != "cpu":
            raise ConfigError(
                f"embedder.backend=onnx-int8 runs on the CPU but embedder.device resolves to {self._device()!r}: "
                "on a GPU use embedder.backend=torch (fp16), or set embedder.device=cpu"
            )
        cache = self.cache_dir or Path(tempfile.gettempdir()) / "rag-cache"
        return OnnxInt8Encoder(
            self._local_dir, self.fingerprint, self.tokenizer, self.max_tokens, cache, self.settings.threads
        )

    def warm_up(self) -> None:
        """Load the weights now, so that the first query's latency is the query's own."""
        _ = self.int8.session if self.backend == "onnx-int8" else self.model

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, L2-normalised, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._encode(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        """One normalised query vector; an empty or over-long query is a UsageError."""
        if not text or not text.strip():
            raise UsageError("the query is empty: ask something")
        tokens = self.count_tokens(text)
        if tokens > self.max_tokens:
            raise UsageError(
                f"the query is {tokens} tokens, over the embedder's window of {self.max_tokens}: shorten it"
            )
        return self._encode([text])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, verbose=False)
        batches = length_batches([len(ids) for ids in encoded["input_ids"]], self.batch_size)
        if self.backend == "onnx-int8":
            return self.int8.encode(encoded, batches)  # the ids counted here are the ones it runs
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for batch in batches:
                vectors = self.model.encode(
                    [texts[i] for i in batch],
                    batch_size=len(batch),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                out[batch] = np.asarray(vectors, dtype=np.float32)
        return out
