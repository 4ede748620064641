"""Aggregates of an eval run (metrics.json: every figure with its bootstrap interval) and its report.md with plots."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval.scoring import FAILURES
from eval.stats import bootstrap_ci, bootstrap_ratio, percentile

__all__ = ["METRIC_ORDER", "aggregate", "format_summary", "metric_names", "write_report"]

# Report order; metrics not listed (retrieval@k names depend on k) follow in the order first seen.
METRIC_ORDER = (
    "exact_match",
    "token_f1",
    "rouge_l",
    "bleu",
    "semantic_similarity",
    "context_precision",
    "context_recall",
    "groundedness_lexical",
    "groundedness_embedding",
    "groundedness_llm",
    "citation_correctness",
    "abstention_correct",
    "reference_groundedness_lexical",
    "reference_groundedness_embedding",
    "answer_nll",
)
# Stages of Answer.timings_ms, in pipeline order, then the whole question as the runner timed it.
STAGES = ("condense", "retrieve", "rerank", "evidence", "prompt", "ttft", "generate", "total")
_JUDGES = ("lexical", "embedding", "llm")


def metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric the rows hold, in report order: answer, retrieval@k, context, judges, the rest."""
    seen = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    ordered = [name for name in METRIC_ORDER if name in seen]
    retrieval = [name for name in seen if "@" in name]
    return ordered[:5] + retrieval + ordered[5:] + [n for n in seen if n not in ordered and n not in retrieval]


def _judge_agreement(rows: Sequence[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per answer sentence: how often two judges give the same supported/unsupported verdict."""
    agreement: dict[str, Any] = {}
    for i, a in enumerate(_JUDGES):
        for b in _JUDGES[i + 1 :]:
            same = total = 0
            for row in rows:
                verdicts_a = _verdicts(row["judges"].get(a), a, thresholds)
                verdicts_b = _verdicts(row["judges"].get(b), b, thresholds)
                if verdicts_a is None or verdicts_b is None:
                    continue
                same += sum(x == y for x, y in zip(verdicts_a, verdicts_b, strict=True))
                total += len(verdicts_a)
            if total:
                agreement[f"{a}_vs_{b}"] = {"agreement": same / total, "sentences": total}
    return agreement


def _verdicts(scores: list[Any] | None, judge: str, thresholds: dict[str, float]) -> list[bool] | None:
    if scores is None:
        return None
    if judge == "llm":
        return [v is True for v in scores]
    return [s >= thresholds[judge] for s in scores]


def aggregate(
    rows: Sequence[dict[str, Any]], *, seed: int, thresholds: dict[str, float] | None = None
) -> dict[str, Any]:
    """metrics.json from per_question rows: means with 95% bootstrap intervals over the questions each applies to.

    `metrics` and `abstention` depend only on the answers, so equal answers give equal figures; `latency_ms`
    measures this machine and varies between runs.
    """
    thresholds = thresholds or {"lexical": 0.5, "embedding": 0.6}
    metrics: dict[str, Any] = {}
    for name in metric_names(rows):
        values = [row["metrics"][name] for row in rows if row["metrics"].get(name) is not None]
        metrics[name] = asdict(bootstrap_ci(values, seed=seed))
    if "answer_nll" in metrics:
        # exp is monotonic, so the interval of exp(mean NLL) is exp of the NLL interval.
        nll = metrics["answer_nll"]
        metrics["perplexity"] = {**nll, **{key: math.exp(nll[key]) for key in ("mean", "low", "high")}}

    refused = [float(row["refused"]) for row in rows]
    unanswerable = [float(row["unanswerable"]) for row in rows]
    tp = [r * u for r, u in zip(refused, unanswerable, strict=True)]
    fp = [r * (1 - u) for r, u in zip(refused, unanswerable, strict=True)]
    fn = [(1 - r) * u for r, u in zip(refused, unanswerable, strict=True)]
    answerable = [1 - u for u in unanswerable]

    def ratio(num: list[float], den: list[float]) -> dict[str, Any] | None:
        ci = bootstrap_ratio(num, den, seed=seed)
        return asdict(ci) if ci is not None else None

    abstention = {
        "precision": ratio(tp, refused),
        "recall": ratio(tp, unanswerable),
        "f1": ratio([2 * x for x in tp], [2 * a + b + c for a, b, c in zip(tp, fp, fn, strict=True)]),
        "wrong_refusal_rate": ratio(fp, answerable),
        "counts": {"tp": int(sum(tp)), "fp": int(sum(fp)), "fn": int(sum(fn)), "tn": int(sum(answerable) - sum(fp))},
    }
    called = [row for row in rows if row["prompt_tokens"] > 0]  # refusals on weak evidence never call the model
    tokens = {
        key: {
            **asdict(bootstrap_ci([float(row[key]) for row in called], seed=seed)),
            "total": int(sum(row[key] for row in called)),
        }
        for key in ("prompt_tokens", "completion_tokens")
        if called
    }
    latency: dict[str, Any] = {}
    for stage in STAGES:
        values = [row["latency_ms"][stage] for row in rows if stage in row["latency_ms"]]
        if values:
            latency[stage] = {
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "mean": sum(values) / len(values),
                "n": len(values),
            }
    failures = Counter(row["failure"] for row in rows)
    return {
        "n": len(rows),
        "seed": seed,
        "metrics": metrics,
        "abstention": abstention,
        "failures": {category: failures.get(category, 0) for category in FAILURES},
        "judge_agreement": _judge_agreement(rows, thresholds),
        "tokens": tokens,
        "latency_ms": latency,
    }


# -- report.md and plots --------------------------------------------------------------------------
def _cell(ci: dict[str, Any] | None, digits: int = 3) -> str:
    if ci is None:
        return "–"
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def _plots(run_dir: Path, rows: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    written: list[str] = []
    bounded = {k: v for k, v in metrics["metrics"].items() if k not in ("answer_nll", "perplexity")}
    if bounded:
        names = list(bounded)
        means = [bounded[n]["mean"] for n in names]
        errors = [
            [m - bounded[n]["low"] for n, m in zip(names, means, strict=True)],
            [bounded[n]["high"] - m for n, m in zip(names, means, strict=True)],
        ]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
        ax.barh(names, means, xerr=errors, capsize=3, color="#4c72b0")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("mean over questions, 95% bootstrap interval")
        fig.tight_layout()
        fig.savefig(run_dir / "metrics.png", dpi=110)
        plt.close(fig)
        written.append("metrics.png")
    stages = [s for s in STAGES if s in metrics["latency_ms"]]
    if stages:
        fig, axes = plt.subplots(len(stages), 1, figsize=(7, 1.6 * len(stages) + 0.6), squeeze=False)
        for ax, stage in zip(axes[:, 0], stages, strict=True):
            values = [row["latency_ms"][stage] for row in rows if stage in row["latency_ms"]]
            ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#55a868")
            ax.axvline(metrics["latency_ms"][stage]["p50"], color="black", linestyle="--", linewidth=1)
            ax.axvline(metrics["latency_ms"][stage]["p95"], color="#c44e52", linestyle=":", linewidth=1)
            ax.set_ylabel(stage, rotation=0, ha="right")
        axes[-1, 0].set_xlabel("milliseconds (dashed: p50, dotted: p95)")
        fig.tight_layout()
        fig.savefig(run_dir / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    fig, ax = plt.subplots(figsize=(7, 2.6))
    counts = metrics["failures"]
    ax.bar(list(counts), list(counts.values()), color=["#55a868"] + ["#c44e52"] * (len(counts) - 1))
    ax.set_ylabel("questions")
    fig.tight_layout()
    fig.savefig(run_dir / "failures.png", dpi=110)
    plt.close(fig)
    written.append("failures.png")
    return written


def _trim(text: str, width: int) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def write_report(run_dir: Path, rows: Sequence[dict[str, Any]], metrics: dict[str, Any], info: dict[str, Any]) -> Path:
    """report.md with metrics.png, latency.png and failures.png beside it."""
    images = _plots(run_dir, rows, metrics)
    lines = [
        f"# Eval run {run_dir.name}",
        "",
        f"- dataset: `{info['dataset']}` ({info['n']} of {info['dataset_questions']} questions, seed {info['seed']}, "
        f"hash {info['dataset_hash'][:12]})",
        f"- collection: `{info['collection']}` (index version {info['index_version']}), "
        f"retrieval k = {info['retrieval_k']}",
        f"- generator: `{info['generator'].get('name')}`; embedder: `{info['embedder'].get('name')}`; "
        f"reranker: `{info['reranker']}`",
        f"- started {info.get('started_at')}, finished {info.get('finished_at')}",
        *(f"- note: {note}" for note in info.get("notes", [])),
        *(f"- warning: {warning}" for warning in info.get("warnings", [])),
        "",
        "## Quality",
        "",
        "Mean over the questions each metric applies to, with its 95% bootstrap interval.",
        "",
        "| metric | mean [95% CI] | questions |",
        "|---|---|---|",
        *(f"| {name} | {_cell(ci)} | {ci['n']} |" for name, ci in metrics["metrics"].items()),
        "",
    ]
    if "metrics.png" in images:
        lines += ["![metrics](metrics.png)", ""]
    ab = metrics["abstention"]
    counts = ab["counts"]
    lines += [
        "## Abstention",
        "",
        f"Refused {counts['tp']} of {counts['tp'] + counts['fn']} unanswerable and {counts['fp']} of "
        f"{counts['fp'] + counts['tn']} answerable questions.",
        "",
        "| rate | value [95% CI] |",
        "|---|---|",
        *(f"| {key} | {_cell(ab[key])} |" for key in ("precision", "recall", "f1", "wrong_refusal_rate")),
        "",
    ]
    if metrics["judge_agreement"]:
        lines += ["## Groundedness judges", "", "| judges | agreement per sentence | sentences |", "|---|---|---|"]
        lines += [
            f"| {pair.replace('_vs_', ' vs ')} | {value['agreement']:.3f} | {value['sentences']} |"
            for pair, value in metrics["judge_agreement"].items()
        ]
        lines.append("")
    lines += ["## Cost", "", "| stage | p50 ms | p95 ms | mean ms | questions |", "|---|---|---|---|---|"]
    lines += [
        f"| {stage} | {v['p50']:.1f} | {v['p95']:.1f} | {v['mean']:.1f} | {v['n']} |"
        for stage, v in metrics["latency_ms"].items()
    ]
    lines.append("")
    for key, value in metrics["tokens"].items():
        lines.append(f"- {key.replace('_', ' ')} per answer: {_cell(value, 1)} (total {value['total']})")
    if "latency.png" in images:
        lines += ["", "![latency](latency.png)"]
    failed = [row for row in rows if row["failure"] != "ok"]
    lines += [
        "",
        "## Failures",
        "",
        "| category | questions |",
        "|---|---|",
        *(f"| {category} | {count} |" for category, count in metrics["failures"].items()),
        "",
        "![failures](failures.png)",
        "",
    ]
    if failed:
        lines += ["| id | failure | question | answer |", "|---|---|---|---|"]
        lines += [
            f"| {_trim(row['id'], 24)} | {row['failure']} | {_trim(row['question'], 80)} "
            f"| {_trim(row['answer'], 100)} |"
            for row in failed[:30]
        ]
        if len(failed) > 30:
            lines.append(f"\n{len(failed) - 30} more in per_question.jsonl.")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def format_summary(summary: dict[str, Any]) -> str:
    """The human summary `rag eval run` prints: quality, abstention, latency, failures, where the run is."""
    lines = [
        f"{summary['n']} questions ({summary['resumed']} from an earlier attempt), collection {summary['collection']}",
        f"{'metric':34} {'mean [95% CI]':>26} {'n':>5}",
    ]
    for name, ci in summary["metrics"].items():
        lines.append(f"{name:34} {_cell(ci):>26} {ci['n']:>5}")
    for key in ("precision", "recall", "f1", "wrong_refusal_rate"):
        ci = summary["abstention"][key]
        lines.append(f"{'abstention ' + key:34} {_cell(ci):>26} {ci['n'] if ci else 0:>5}")
    latency = summary["latency_ms"]
    if latency:
        lines.append(
            "latency p50/p95 ms: " + ", ".join(f"{stage} {v['p50']:.0f}/{v['p95']:.0f}" for stage, v in latency.items())
        )
    lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in summary["failures"].items()))
    lines += [f"warning: {w}" for w in summary["warnings"]]
    lines.append(f"report: {summary['report']}")
    return "\n".join(lines)
