"""`rag eval compare` on hand-written run folders: verdicts, the regression gate and its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.compare import MetricComparison, compare_runs, format_comparison, is_regression, verdict
from rag.cli import main
from rag.errors import UsageError


def write_run(folder: Path, metrics_by_id: dict[str, dict[str, float]], complete: bool = True) -> Path:
    """A run folder as `rag eval run` leaves it, reduced to what compare reads."""
    folder.mkdir(parents=True)
    rows = [{"id": qid, "metrics": metrics} for qid, metrics in metrics_by_id.items()]
    (folder / "per_question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"complete": complete, "dataset_hash": "h"}), encoding="utf-8")
    return folder


def test_verdict_reads_the_interval() -> None:
    assert verdict(0.01, 0.05) == "better"
    assert verdict(-0.05, -0.01) == "worse"
    assert verdict(-0.01, 0.02) == "no detectable difference"
    assert verdict(0.01, 0.05, lower_is_better=True) == "worse"  # a higher loss is worse


def _comparison(metric: str, diff: float, low: float, high: float) -> MetricComparison:
    judged = verdict(low, high, lower_is_better=metric == "answer_nll")
    return MetricComparison(metric, 10, 0.5, 0.5 + diff, diff, low, high, 0.5, judged)


def test_the_gate_needs_a_detectable_loss_beyond_the_tolerance() -> None:
    assert is_regression(_comparison("token_f1", -0.05, -0.08, -0.02), tolerance=0.01)
    assert not is_regression(_comparison("token_f1", -0.005, -0.008, -0.002), tolerance=0.01)  # real but tiny
    assert not is_regression(_comparison("token_f1", -0.05, -0.12, 0.02), tolerance=0.01)  # could be noise
    assert not is_regression(_comparison("token_f1", 0.05, 0.02, 0.08), tolerance=0.01)
    assert is_regression(_comparison("answer_nll", 0.3, 0.1, 0.5), tolerance=0.01)  # loss went up


def test_compare_pairs_questions_by_id(tmp_path: Path) -> None:
    # 20 shared questions; B gains exactly 0.1 token F1 on each, loses 0.2 EM on each, and ties on hit@5.
    # B has one extra question (ignored); A scored groundedness only where B did not (no pairs: not compared).
    a = {f"q{i}": {"token_f1": 0.5, "exact_match": 0.4, "hit@5": float(i % 2)} for i in range(20)}
    b = {f"q{i}": {"token_f1": 0.6, "exact_match": 0.2, "hit@5": float(i % 2)} for i in range(20)}
    a["q0"]["groundedness_lexical"] = 1.0
    b["extra"] = {"token_f1": 0.0}
    result = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b), metric="exact_match")
    assert (result.shared, result.only_a, result.only_b) == (20, 0, 1)
    by_metric = {m.metric: m for m in result.metrics}
    assert set(by_metric) == {"exact_match", "token_f1", "hit@5"}
    f1 = by_metric["token_f1"]
    assert f1.diff == pytest.approx(0.1) and f1.low == pytest.approx(0.1) and f1.verdict == "better"
    assert by_metric["exact_match"].verdict == "worse" and result.regressed
    assert by_metric["hit@5"].verdict == "no detectable difference"
    assert "FAIL" in format_comparison(result)
    assert not compare_runs(tmp_path / "a", tmp_path / "b", metric="token_f1").regressed


def test_compare_refuses_what_it_cannot_compare(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {"q1": {"token_f1": 0.5}})
    b = write_run(tmp_path / "b", {"q2": {"token_f1": 0.5}})
    with pytest.raises(UsageError, match="share no question"):
        compare_runs(a, b)
    c = write_run(tmp_path / "c", {"q1": {"token_f1": 0.4}}, complete=False)
    with pytest.raises(UsageError, match=r"'bleu' is not scored.*available: token_f1"):
        compare_runs(a, c, metric="bleu")
    assert "not complete" in compare_runs(a, c).warnings[0]
    with pytest.raises(UsageError, match=r"no per_question\.jsonl"):
        compare_runs(a, tmp_path)


def test_cli_exit_codes_gate_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", {f"q{i}": {"token_f1": 0.5} for i in range(10)})
    worse = write_run(tmp_path / "worse", {f"q{i}": {"token_f1": 0.3} for i in range(10)})
    same = write_run(tmp_path / "same", {f"q{i}": {"token_f1": 0.5 + (0.01 if i % 2 else -0.01)} for i in range(10)})
    assert main(["eval", "compare", str(a), str(worse)]) == 1
    assert "worse" in capsys.readouterr().out
    assert main(["eval", "compare", str(a), str(same), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gate"] == {"metric": "token_f1", "tolerance": 0.01, "regressed": False}
    assert report["metrics"]["token_f1"]["verdict"] == "no detectable difference"
    # A loss of 0.2 passes a tolerance of 0.25; a metric neither run has is bad usage (exit 2).
    assert main(["eval", "compare", str(a), str(worse), "--tolerance", "0.25"]) == 0
    assert main(["eval", "compare", str(a), str(worse), "--metric", "rouge"]) == 2
    assert "available: token_f1" in capsys.readouterr().err
