"""The embedder's int8 CPU path: the configured model exported to ONNX once, its weight matrices quantised to int8.

`embedder.backend=onnx-int8`. The export runs on first use from the local weights (no download) and is cached under
`<cache_dir>/onnx/<model fingerprint>/`, so every later process loads the quantised file directly.

Why these choices (bench/embed_int8.py measures them on SciFact against the fp32 torch model):
- Weights are quantised **per output channel** (one scale per row of each matrix). One scale per tensor, the
  ONNX Runtime default, lost the most: cosine 0.937 to the fp32 vectors on SciFact documents, against 0.995 per
  channel, at the same speed.
- Only the matrix products with a weight are quantised (projections and the feed-forward layers, 36 of MiniLM's
  48 MatMuls); attention's query-key and attention-value products, layer norms, softmax and pooling stay fp32.
- Activations are quantised dynamically (per batch), so no calibration set is needed.
- 8-bit weights are used as they are: the 7-bit `reduce_range` that avoids AVX2's 16-bit saturation measured
  slightly worse (cosine 0.994) on this model.
Pooling and normalisation are done here, as the model's sentence-transformers config says (mean or CLS pooling).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()


def _pooling_mode(model_dir: Path) -> str:
    """'mean' or 'cls', from the model's sentence-transformers Pooling module; mean when it has none."""
    for config_path in sorted(model_dir.glob("*Pooling/config.json")):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("pooling_mode_cls_token"):
            return "cls"
        if config.get("pooling_mode_mean_tokens"):
            return "mean"
        modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v)
        raise ConfigError(
            f"embedder.backend=onnx-int8: {config_path} asks for pooling {modes}; only mean and CLS pooling are "
            "implemented for ONNX: use embedder.backend=torch for this model"
        )
    return "mean"


def _has_extra_modules(model_dir: Path) -> list[str]:
    """sentence-transformers modules after pooling that this path does not run (Dense projections and the like)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return []
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    known = ("Transformer", "Pooling", "Normalize")
    return [m.get("type", "?") for m in modules if not str(m.get("type", "")).endswith(known)]


def int8_unsupported(model_dir: Path) -> str | None:
    """Why this path cannot run the model at `model_dir` (embedder.backend=auto then takes torch); None when it can."""
    extra = _has_extra_modules(model_dir)
    if extra:
        return f"modules {extra} after pooling"
    try:
        _pooling_mode(model_dir)
    except ConfigError as e:
        return str(e)
    return None


def export_int8(model_dir: Path, target: Path, input_names: Sequence[str]) -> Path:
    """Export `model_dir`'s transformer to ONNX and quantise it to `target`; atomic (a crash leaves no half file)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    # Eager attention: transformers' SDPA path exports its mask as Where/IsNaN nodes in every layer, 23% of the int8
    # model's run time on 2 AVX2 cores; the eager additive mask made the whole model 1.3x faster, same vectors.
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    names = list(input_names)

    class _Hidden(torch.nn.Module):  # positional inputs in `names` order -> last hidden state
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state  # type: ignore[no-any-return]

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]}
        with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python code, harmless here
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(), sample, str(fp32), input_names=names, output_names=["hidden"], dynamic_axes=axes,
                opset_version=17, dynamo=False,
            )  # fmt: skip
        int8 = Path(tmp) / target.name
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint at WARNING on every call
        try:
            quantize_dynamic(
                str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                op_types_to_quantize=["MatMul"],
            )  # fmt: skip
        finally:
            root.setLevel(level)
        os.replace(int8, target)
    return target


class OnnxInt8Encoder:
    """Normalised sentence vectors from the int8 ONNX export of a local sentence-transformers model (CPU)."""

    def __init__(
        self,
        model_dir: Path,
        fingerprint: str,
        tokenizer: PreTrainedTokenizerBase,
        max_tokens: int,
        cache_dir: Path,
        threads: int | None = None,
    ) -> None:
        extra = _has_extra_modules(model_dir)
        if extra:
            raise ConfigError(
                f"embedder.backend=onnx-int8: the model at {model_dir} has modules {extra} after pooling that the "
                "ONNX path does not run: use embedder.backend=torch for it"
            )
        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.pooling = _pooling_mode(model_dir)
        self.path = cache_dir / "onnx" / fingerprint / "model-int8-eager.onnx"  # the SDPA export was model-int8.onnx
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.input_names = [
            n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")
        ]

    @cached_property
    def session(self) -> Any:
        import onnxruntime as ort

        with _EXPORT_LOCK:
            if not self.path.is_file():
                log.info("exporting %s to int8 ONNX at %s (once)", self.model_dir, self.path)
                export_int8(self.model_dir, self.path, self.input_names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def encode(self, encoded: Mapping[str, Sequence[Sequence[int]]], batches: Sequence[Sequence[int]]) -> np.ndarray:
        """(texts, dim) float32, L2-normalised, in input order, from the texts' unpadded token ids (`encoded`, the
        tokenizer's output, truncated to the window) in `batches` of indices (`length_batches`)."""
        session = self.session
        out: np.ndarray | None = None
        for idx in batches:
            feeds = self._padded(encoded, idx)
            hidden = session.run(None, feeds)[0]
            if self.pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = feeds["attention_mask"][..., None].astype(np.float32)
                vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.zeros((len(encoded["input_ids"]), vectors.shape[1]), dtype=np.float32)
            out[list(idx)] = vectors
        assert out is not None  # texts is never empty here: the embedder returns early on no texts
        return out

    def _padded(self, encoded: Mapping[str, Sequence[Sequence[int]]], idx: Sequence[int]) -> dict[str, np.ndarray]:
        """One batch's model inputs padded to its longest text, on the tokenizer's padding side (what
        `tokenizer(..., padding=True)` returns, without tokenizing the texts a second time)."""
        width = max(len(encoded["input_ids"][i]) for i in idx)
        left = self.tokenizer.padding_side == "left"
        feeds: dict[str, np.ndarray] = {}
        for name in self.input_names:
            fill = (self.tokenizer.pad_token_id or 0) if name == "input_ids" else 0
            batch = np.full((len(idx), width), fill, dtype=np.int64)
            for row, i in enumerate(idx):
                ids = encoded[name][i]
                if left:
                    batch[row, width - len(ids) :] = ids
                else:
                    batch[row, : len(ids)] = ids
            feeds[name] = batch
        return feeds
