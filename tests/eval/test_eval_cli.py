"""`rag eval run` and `rag eval generate-testset` as a user runs them, with the bundled SmolLM2 on samples/.

In-process (`rag.cli.main`) rather than a subprocess: the converted GGUF of the session's generator is shared
through a symlink, so no test converts it twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import load_generic
from eval.testset import check_pair
from rag.cli import main
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTIONS = [
    {"id": "leave", "question": "How many days of paid leave do full-time employees get?", "answer": "28 days",
     "gold_documents": ["employee-handbook.md"]},
    {"id": "worldcup", "question": "Who won the 1998 football world cup final?", "unanswerable": True},
]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, generator: Any) -> Path:
    data = tmp_path_factory.mktemp("eval-cli") / "data"
    (data / "cache").mkdir(parents=True)
    (data / "cache" / "generators").symlink_to(generator.cache_dir / "generators")
    ingest = ["ingest", str(SAMPLES), "--config", "test", "--set", f"data_dir={data}", "--progress", "none", "--json"]
    assert main(ingest) == 0
    return data


def quality(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {key: metrics[key] for key in ("metrics", "abstention", "failures", "tokens")}


def test_eval_run_then_resume(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / "run"
    common = ["--config", "test", "--set", f"data_dir={data_dir}", "--progress", "none", "--json"]
    args = ["eval", "run", str(dataset), *common, "--set", "generator.max_new_tokens=24", "--output", str(out)]
    args += ["--set", "answer.mode=generate"]  # the bundled model writes the answers (auto would quote)
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 2 and summary["resumed"] == 0 and summary["run_dir"] == str(out)
    # The real generator has weights, so perplexity is measured; exp(mean NLL) is its perplexity.
    nll, perplexity = summary["metrics"]["answer_nll"], summary["metrics"]["perplexity"]
    assert nll["mean"] > 0 and perplexity["mean"] == pytest.approx(2.718281828 ** nll["mean"], rel=1e-6)
    rows = [json.loads(line) for line in (out / "per_question.jsonl").read_text().splitlines()]
    leave, worldcup = rows
    assert leave["model"] == "bundled:SmolLM2-135M-Instruct" and 0 < leave["completion_tokens"] <= 24
    assert "groundedness_llm" not in leave["metrics"]  # only with --llm-judge
    assert worldcup["refused"] and worldcup["refusal_reason"] == "evidence"
    assert (out / "report.md").is_file() and (out / "metrics.png").is_file()
    first = quality(out)

    # Interrupted after the first question: --resume RUN_DIR takes dataset and settings from the folder and asks
    # only the world cup question (tests/eval/test_runner.py resumes with a generator that counts its calls).
    (out / "per_question.jsonl").write_text(json.dumps(leave) + "\n")
    (out / "metrics.json").unlink()
    assert main(["eval", "run", "--resume", str(out), "--progress", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == 1
    assert quality(out) == first


def test_eval_run_bad_usage(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = ["--config", "test", "--set", f"data_dir={data_dir}"]
    assert main(["eval", "run", *settings]) == 2
    assert "give a DATASET" in capsys.readouterr().err
    assert main(["eval", "run", "--resume", str(tmp_path), "--set", "retrieval.top_k=3"]) == 2
    assert "drop DATASET, --config and --set" in capsys.readouterr().err
    assert main(["eval", "run", "--resume", str(tmp_path)]) == 2
    assert "run.json: not found" in capsys.readouterr().err
    missing = tmp_path / "missing.jsonl"
    assert main(["eval", "run", str(missing), *settings]) == 2
    assert f"{missing}: not a QA eval set" in capsys.readouterr().err


def test_generate_testset_with_the_bundled_model(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synthetic.jsonl"
    code = main(["eval", "generate-testset", "--config", "test", "--set", f"data_dir={data_dir}", "--n", "3",
                 "--max-attempts", "3", "--max-new-tokens", "40", "--output", str(out), "--progress", "none",
                 "--json"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    # The model's quality is not under test: every attempt is accounted for, and what is kept passes the filters.
    assert summary["attempted"] == 3 and summary["accepted"] + sum(summary["rejected"].values()) == 3
    assert code == (0 if summary["accepted"] else 1)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary["accepted"]
    if lines:
        assert [e.question for e in load_generic(out)] == [line["question"] for line in lines]
    for line in lines:
        assert check_pair(line["question"], line["answer"][0], line["context"], []) is None
        assert Path(line["gold_documents"][0]).parent == SAMPLES.resolve()
