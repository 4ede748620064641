"""`rag eval compare`: two runs on the questions they share, per metric, with paired bootstrap intervals.

Pairing by question id cancels per-question difficulty, so a change far smaller than either run's own interval
can still be detected. One chosen metric gates CI: a detectable regression larger than the tolerance fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.report import metric_names
from eval.runner import PER_QUESTION, read_rows
from eval.stats import paired_bootstrap
from rag.errors import UsageError

__all__ = [
    "LOWER_IS_BETTER",
    "MetricComparison",
    "RunComparison",
    "compare_runs",
    "format_comparison",
    "is_regression",
    "verdict",
]

# Metrics where a smaller value is the better one; every other per-question metric is better higher.
LOWER_IS_BETTER = frozenset({"answer_nll"})


@dataclass(frozen=True)
class MetricComparison:
    """Run B against run A on one metric: diff = mean(B) - mean(A) over the questions both scored."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float
    verdict: str


@dataclass(frozen=True)
class RunComparison:
    run_a: str
    run_b: str
    shared: int
    only_a: int
    only_b: int
    metrics: tuple[MetricComparison, ...]
    gate_metric: str
    tolerance: float
    regressed: bool
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "shared": self.shared,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "gate": {"metric": self.gate_metric, "tolerance": self.tolerance, "regressed": self.regressed},
            "metrics": {m.metric: {k: v for k, v in vars(m).items() if k != "metric"} for m in self.metrics},
            "warnings": list(self.warnings),
        }


def verdict(low: float, high: float, lower_is_better: bool = False) -> str:
    """better / worse when the interval of B - A excludes 0, else no detectable difference."""
    if low > 0:
        return "worse" if lower_is_better else "better"
    if high < 0:
        return "better" if lower_is_better else "worse"
    return "no detectable difference"


def is_regression(comparison: MetricComparison, tolerance: float) -> bool:
    """The gate: B is detectably worse (interval excludes 0) and its mean lost more than `tolerance`.

    Both conditions, so that neither noise on a small set nor a real but negligible loss fails a build.
    """
    if comparison.verdict != "worse":
        return False
    loss = comparison.diff if comparison.metric in LOWER_IS_BETTER else -comparison.diff
    return loss > tolerance


def _load(run_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    rows_path = run_dir / PER_QUESTION
    if not rows_path.is_file():
        raise UsageError(f"{run_dir}: no {PER_QUESTION}: give a run folder written by `rag eval run`")
    run_json = run_dir / "run.json"
    info = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    return {str(row["id"]): row for row in read_rows(rows_path)}, info


def compare_runs(
    run_a: Path,
    run_b: Path,
    *,
    metric: str = "token_f1",
    tolerance: float = 0.01,
    seed: int = 0,
    n_resamples: int = 1000,
) -> RunComparison:
    """Compare every per-question metric of run B with run A (the baseline); `metric` is the one that gates."""
    if tolerance < 0:
        raise UsageError(f"--tolerance must be >= 0, got {tolerance}")
    rows_a, info_a = _load(run_a)
    rows_b, info_b = _load(run_b)
    shared = [qid for qid in rows_a if qid in rows_b]
    if not shared:
        raise UsageError(f"{run_a} and {run_b} share no question id: compare runs of the same dataset")
    warnings = []
    for run, info in ((run_a, info_a), (run_b, info_b)):
        if info and not info.get("complete", False):
            warnings.append(f"{run} is not complete: only its answered questions are compared")
    if info_a.get("dataset_hash") and info_a.get("dataset_hash") != info_b.get("dataset_hash"):
        warnings.append("the runs used different versions of the dataset: shared ids may not be the same questions")

    comparisons = []
    for name in metric_names([rows_a[qid] for qid in shared] + [rows_b[qid] for qid in shared]):
        pairs = [
            (rows_a[qid]["metrics"][name], rows_b[qid]["metrics"][name])
            for qid in shared
            if rows_a[qid]["metrics"].get(name) is not None and rows_b[qid]["metrics"].get(name) is not None
        ]
        if not pairs:
            continue  # e.g. groundedness on questions one run refused and the other answered
        paired = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], n_resamples=n_resamples, seed=seed)
        comparisons.append(
            MetricComparison(
                metric=name,
                n=paired.n,
                mean_a=paired.mean_a,
                mean_b=paired.mean_b,
                diff=paired.diff,
                low=paired.low,
                high=paired.high,
                p_value=paired.p_value,
                verdict=verdict(paired.low, paired.high, name in LOWER_IS_BETTER),
            )
        )
    by_name = {c.metric: c for c in comparisons}
    if metric not in by_name:
        raise UsageError(
            f"--metric {metric!r} is not scored on questions both runs share; available: {', '.join(by_name)}"
        )
    return RunComparison(
        run_a=str(run_a),
        run_b=str(run_b),
        shared=len(shared),
        only_a=len(rows_a) - len(shared),
        only_b=sum(qid not in rows_a for qid in rows_b),
        metrics=tuple(comparisons),
        gate_metric=metric,
        tolerance=tolerance,
        regressed=is_regression(by_name[metric], tolerance),
        warnings=tuple(warnings),
    )


def format_comparison(comparison: RunComparison) -> str:
    c = comparison
    lines = [
        f"A = {c.run_a}",
        f"B = {c.run_b}",
        f"{c.shared} shared questions ({c.only_a} only in A, {c.only_b} only in B)",
        f"{'metric':34} {'n':>5} {'A':>8} {'B':>8} {'B - A [95% CI]':>28}  verdict",
    ]
    for m in c.metrics:
        interval = f"{m.diff:+.4f} [{m.low:+.4f}, {m.high:+.4f}]"
        mark = " *" if m.metric == c.gate_metric else ""
        lines.append(f"{m.metric + mark:34} {m.n:>5} {m.mean_a:8.4f} {m.mean_b:8.4f} {interval:>28}  {m.verdict}")
    lines += [f"warning: {w}" for w in c.warnings]
    gate = "FAIL: regressed" if c.regressed else "pass"
    lines.append(f"gate (* {c.gate_metric}, tolerance {c.tolerance}): {gate}")
    return "\n".join(lines)
