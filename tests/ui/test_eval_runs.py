"""Finding evaluation runs and flattening their metrics for the page (ui/eval_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ui.eval_runs import has_eval_runs, list_eval_runs, metric_rows


def test_runs_are_found_only_with_a_metrics_file(tmp_path: Path) -> None:
    assert not has_eval_runs(tmp_path)
    (tmp_path / "eval-runs" / "empty").mkdir(parents=True)
    assert not has_eval_runs(tmp_path)
    run = tmp_path / "eval-runs" / "r1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"recall@10": 0.8}))
    (run / "ndcg.png").write_bytes(b"\x89PNG")
    (tmp_path / "eval-runs" / "broken").mkdir()
    (tmp_path / "eval-runs" / "broken" / "metrics.json").write_text("{not json")
    assert has_eval_runs(tmp_path)
    runs, problems = list_eval_runs(tmp_path)
    assert [(r.name, r.metrics, [p.name for p in r.plots]) for r in runs] == [("r1", {"recall@10": 0.8}, ["ndcg.png"])]
    assert len(problems) == 1 and "broken" in problems[0]


def test_metric_rows_flatten_and_show_intervals() -> None:
    metrics = {
        "retrieval": {"ndcg@10": {"mean": 0.7123, "low": 0.68, "high": 0.744, "n": 300}, "mode": "hybrid"},
        "faithfulness": 0.91234,
        "questions": 300,
        "per_question": [0.1, 0.2],
        "ok": True,
    }
    assert metric_rows(metrics) == [
        ("retrieval.ndcg@10", "0.712 [0.680, 0.744]"),
        ("retrieval.mode", "hybrid"),
        ("faithfulness", "0.9123"),
        ("questions", "300"),
        ("ok", "True"),
    ]
