"""Models trained here, registered under `<data_dir>/models/<name>/` with a card of how they were made."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

CARD = "model_card.json"


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is, what it was trained on and how well it did."""

    name: str
    kind: str  # "embedder" or "reranker"
    base_model: str
    data_hash: str
    metrics: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training_data: str = ""
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def register(models_dir: Path, card: ModelCard) -> Path:
    """Write the card beside weights already saved in `models_dir/card.name`."""
    folder = models_dir / card.name
    if not folder.is_dir():
        raise ConfigError(f"cannot register {card.name!r}: {folder} holds no saved model")
    (folder / CARD).write_text(json.dumps(asdict(card), indent=2), encoding="utf-8")
    return folder


def read_card(folder: Path) -> ModelCard | None:
    """The card of a model folder trained here; None for any other folder or name."""
    card = folder / CARD
    if not card.is_file():
        return None
    return ModelCard(**json.loads(card.read_text(encoding="utf-8")))


def list_models(models_dir: Path) -> list[ModelCard]:
    paths = sorted(models_dir.glob(f"*/{CARD}")) if models_dir.is_dir() else []
    return [card for path in paths if (card := read_card(path.parent)) is not None]


def resolve(name_or_path: str, models_dir: Path, kind: str) -> str:
    """A registered model's folder, else the value itself (a path or a hub name)."""
    folder = models_dir / name_or_path
    card = folder / CARD
    if card.is_file():
        registered = json.loads(card.read_text(encoding="utf-8"))
        if registered.get("kind") != kind:
            raise ConfigError(f"model {name_or_path!r} is a {registered.get('kind')}, not a {kind}")
        return str(folder.resolve())
    return name_or_path
