"""Evaluation runs written by the harness: `<data_dir>/eval-runs/<run>/metrics.json`, plus any plots beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLOT_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")


@dataclass(frozen=True)
class EvalRun:
    name: str
    folder: Path
    metrics: dict[str, Any]
    plots: tuple[Path, ...]


def eval_runs_dir(data_dir: Path) -> Path:
    return data_dir / "eval-runs"


def has_eval_runs(data_dir: Path) -> bool:
    root = eval_runs_dir(data_dir)
    return root.is_dir() and any(root.glob("*/metrics.json"))


def list_eval_runs(data_dir: Path) -> tuple[list[EvalRun], list[str]]:
    """Runs, newest first, and one line per run folder whose metrics.json could not be read."""
    runs, problems = [], []
    for path in sorted(eval_runs_dir(data_dir).glob("*/metrics.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            problems.append(f"{path}: not readable JSON ({e})")
            continue
        if not isinstance(metrics, dict):
            problems.append(f"{path}: expected a JSON object of metrics")
            continue
        plots = tuple(sorted(p for p in path.parent.iterdir() if p.suffix.lower() in PLOT_SUFFIXES))
        runs.append(EvalRun(path.parent.name, path.parent, metrics, plots))
    return runs, problems


def _interval(value: dict[str, Any]) -> str | None:
    """'0.712 [0.681, 0.744]' for a {mean, low, high} object (eval.stats.ConfidenceInterval's fields)."""
    mean = value.get("mean", value.get("value"))
    low, high = value.get("low"), value.get("high")
    if isinstance(mean, int | float) and isinstance(low, int | float) and isinstance(high, int | float):
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    return None


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, shown value) for every number in `metrics`; intervals shown as 'mean [low, high]'."""
    rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool | int) or value is None:
            rows.append((name, str(value)))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, str):
            rows.append((name, value))
        elif isinstance(value, dict):
            shown = _interval(value)
            if shown is not None:
                rows.append((name, shown))
            else:
                rows.extend(metric_rows(value, f"{name}."))
        # lists (per-question values) are too long for a table: left to the run's own report
    return rows
