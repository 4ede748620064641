"""Which answer mode runs: quote the sources, or generate; `answer.mode=auto` decides by the generator's size.

"Capable" is measurable, not a name list: a generator of at least `answer.capable_params` parameters, counted from
its weights' headers or config without loading them. The bundled SmolLM2-135M measured token F1 0.17 on ClapNQ
against 0.5+ for quoted answers (README, Answers), so on the embedded defaults `auto` quotes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from rag.config import Settings

AnswerMode = Literal["extract", "generate"]


def _params_from_config(config: dict[str, Any]) -> int | None:
    """A decoder's parameter count from its config.json: embeddings + per layer attention and (gated) MLP."""
    cfg = config.get("text_config", config)
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers")
    vocab = cfg.get("vocab_size")
    if not (hidden and layers and vocab):
        return None
    inter = cfg.get("intermediate_size") or 4 * hidden
    return int(vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter))


# Bits per weight of common GGUF quantisations, read from the file name ("...Q4_1.gguf"). gguf's own reader parses
# every metadata field, the whole vocabulary included: 25 s for SmolLM2's 90 MB file here, against microseconds for
# the size. The estimate only has to tell 135M from 7B.
_GGUF_BITS = (("iq1", 1.8), ("iq2", 2.5), ("q2", 2.6), ("iq3", 3.4), ("q3", 3.5), ("iq4", 4.3), ("q4", 4.6),
              ("q5", 5.6), ("q6", 6.6), ("q8", 8.5), ("bf16", 16.0), ("f16", 16.0), ("f32", 32.0))  # fmt: skip


def _params_from_gguf(path: Path) -> int:
    name = path.name.lower()
    bits = next((b for tag, b in _GGUF_BITS if tag in name), 4.6)
    return int(path.stat().st_size * 8 / bits)


def generator_parameters(generator: Any) -> int | None:
    """Parameters of a local generator without loading its weights; None when they cannot be told."""
    loaded = getattr(generator, "_model", None)
    if loaded is not None and hasattr(loaded, "parameters"):
        return int(sum(p.numel() for p in loaded.parameters()))
    source = getattr(generator, "source", None)
    if source is None:
        return None
    folder = Path(source.folder)
    if source.gguf_file:
        return _params_from_gguf(folder / source.gguf_file)
    config = folder / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source.folder, "config.json")
        except ImportError:
            cached = None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    return _params_from_config(json.loads(config.read_text(encoding="utf-8")))


def generator_capable(generator: Any, settings: Settings) -> bool:
    """generator.capable when set; else a served model counts as capable, a local one by its parameter count."""
    if generator is None:
        return False
    if settings.generator.capable is not None:
        return settings.generator.capable
    if settings.generator.kind == "openai":
        return True
    params = generator_parameters(generator)
    return params is not None and params >= settings.answer.capable_params


def resolve_mode(generator: Any, settings: Settings) -> AnswerMode:
    mode = settings.answer.mode
    if mode == "auto":
        return "generate" if generator_capable(generator, settings) else "extract"
    return mode
