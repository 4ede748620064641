"""What `rag eval run` runs: a dataset, the collection it is asked against and the settings, as a RunSpec.

DATASET on the command line is a ClapNQ folder, a simple-format .csv/.jsonl (eval/datasets.py), or a YAML run
config that names one and says how to run it:

    dataset: ../shared/data/clapnq-dev   # required; relative paths are relative to this file
    name: clapnq-dense                   # names the run folder (default: the dataset's folder or file name)
    corpus: ../docs                      # files, a folder, or a BEIR corpus.jsonl to ingest (incrementally) into
                                         # `collection`, default eval-<dataset name>; ClapNQ brings its own corpus
    collection: documents                # without a corpus: the existing collection to ask (default for a
                                         # simple-format dataset: store.collection; a ClapNQ folder given one is
                                         # asked against it instead of indexing its passages)
    limit: 100                           # a seeded sample of this many questions, stratified on unanswerable
    seed: 0                              # the sampling and bootstrap seed
    llm_judge: false                     # also judge groundedness with the generator (slow)
    perplexity: true                     # the generator's perplexity on the reference answers (transformers only)
    thresholds: {lexical: 0.5, embedding: 0.6, citation: 0.5, min_f1: 0.3}   # see eval/scoring.Thresholds
    settings:                            # setting overrides, shaped like a settings profile
      retrieval: {mode: dense}
      generator: {max_new_tokens: 64}

Flags win over the file (--limit, --seed, --collection, --llm-judge), and `--set` wins over `settings:`, which wins
over the environment and --config. Every key but `dataset` is optional.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from eval.scoring import Thresholds
from rag.config import parse_overrides
from rag.errors import ConfigError

__all__ = ["RunSpec", "load_run_spec", "merge_overrides"]

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RunSpec:
    """One eval run's inputs besides the settings; stored in run.json so that a run can be resumed as it was."""

    dataset: Path
    name: str | None = None
    corpus: Path | None = None
    collection: str | None = None
    limit: int | None = None
    seed: int = 0
    llm_judge: bool = False
    perplexity: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_name(self) -> str:
        """The dataset's folder or file name, safe for a folder and a collection name: names its corpus's collection."""
        return _safe(self.dataset.name if self.dataset.is_dir() else self.dataset.stem)

    @property
    def run_name(self) -> str:
        """`name`, or the dataset's name: names the run folder."""
        return _safe(self.name) if self.name else self.dataset_name

    def updated(self, **changes: Any) -> RunSpec:
        """A copy with the changes that are not None (command-line flags left unset keep the file's values)."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dataset"] = str(self.dataset)
        data["corpus"] = str(self.corpus) if self.corpus else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run spec") -> RunSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "dataset" not in data or not data["dataset"]:
            raise ConfigError(f"{where}: 'dataset' is required (a ClapNQ folder or a .csv/.jsonl question file)")
        values = dict(data)
        values["dataset"] = Path(str(values["dataset"]))
        if values.get("corpus"):
            values["corpus"] = Path(str(values["corpus"]))
        thresholds = values.get("thresholds") or {}
        if not isinstance(thresholds, dict):
            raise ConfigError(f"{where}: 'thresholds' must be a mapping, e.g. {{lexical: 0.5}}")
        try:
            values["thresholds"] = Thresholds(**thresholds)
        except TypeError as e:
            names = ", ".join(f.name for f in fields(Thresholds))
            raise ConfigError(f"{where}: 'thresholds' accepts {names}: {e}") from e
        if not isinstance(values.get("settings", {}), dict):
            raise ConfigError(f"{where}: 'settings' must be a mapping of sections, as in a settings profile")
        for key, kind in (("limit", int), ("seed", int), ("llm_judge", bool), ("perplexity", bool)):
            value = values.get(key)
            if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
        if values.get("limit") is not None and values["limit"] < 1:
            raise ConfigError(f"{where}: 'limit' must be at least 1, got {values['limit']}")
        return cls(**values)


def _safe(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.") or "dataset"


def load_run_spec(path: str | Path) -> RunSpec:
    """A RunSpec from a YAML run config (relative paths resolved against its folder), or for a bare dataset."""
    path = Path(path)
    if path.suffix.lower() not in _YAML_SUFFIXES:
        return RunSpec(dataset=path)
    if not path.is_file():
        raise ConfigError(f"{path}: run config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with at least 'dataset: PATH'")
    spec = RunSpec.from_dict(data, str(path))
    base = path.resolve().parent
    return replace(
        spec,
        dataset=base / spec.dataset,
        corpus=base / spec.corpus if spec.corpus is not None else None,
    )


def _deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_overrides(spec: RunSpec, cli_overrides: list[str]) -> dict[str, Any]:
    """The settings overrides of a run: the run config's `settings:` under the command line's `--set`."""
    return _deep_merge(spec.settings, parse_overrides(cli_overrides))
