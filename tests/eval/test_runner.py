"""`run_eval` end to end over samples/ with a keyed generator: the run folder, hand-checked figures, resume,
determinism, refusing a changed resume, gold-id checks, and a ClapNQ-shaped dataset that brings its corpus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import DatasetError
from eval.runconfig import RunSpec
from eval.runner import run_eval
from rag.config import load_settings
from rag.errors import ConfigError
from tests.eval.conftest import KeyedGenerator

pytestmark = pytest.mark.integration

QUESTIONS = [
    {"id": "leave", "question": "How many days of paid leave do full-time employees get?", "answer": "28 days",
     "gold_documents": ["employee-handbook.md"]},
    {"id": "password", "question": "How long must passwords be?", "answer": "at least 14 characters",
     "gold_documents": ["security-policy.txt"]},
    {"id": "calibration", "question": "How often must the TW-200 be calibrated?",
     "answer": "every 5,000 cycles or once a year", "gold_documents": ["product-faq.html"]},
    {"id": "warranty", "question": "How long does the TW-200 warranty last?", "answer": "24 months",
     "gold_documents": ["product-faq.html"]},
    {"id": "worldcup", "question": "Who won the 1998 football world cup final?", "unanswerable": True},
]  # fmt: skip
ANSWERS = {
    "paid leave": "Full-time employees get 28 days of paid leave [1].",
    "passwords": "Passwords must be at least 14 characters long [1].",
    "calibrated": "I like turtles.",
    "warranty": "The documents do not say.",
}
# The LLM judge's prompts (llm_judge is on in these runs): every claim is supported, except the turtles.
JUDGE = {"Claim: I like turtles": "UNSUPPORTED", "Is the claim supported": "SUPPORTED"}
REPLIES = {**JUDGE, **ANSWERS}
# What a run must reproduce exactly (latency is this machine's, so it is left out).
STABLE = ("n", "metrics", "abstention", "failures", "judge_agreement", "tokens")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(index: Any, embedder: Any, dataset: Path, output: Path, **spec: Any) -> tuple[Any, KeyedGenerator]:
    settings, store = index
    generator = KeyedGenerator(REPLIES)
    result = run_eval(
        RunSpec(dataset=dataset, **spec), settings, store, output=output, embedder=embedder, generator=generator,
        progress="none",
    )  # fmt: skip
    return result, generator


def stable(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {key: metrics[key] for key in STABLE}


@pytest.fixture(scope="module")
def first_run(samples_index: Any, embedder: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("runs")
    dataset = write_jsonl(root / "qa.jsonl", QUESTIONS)
    result, generator = run(samples_index, embedder, dataset, root / "a", llm_judge=True)
    return result, generator, dataset, root


def test_the_run_folder(first_run: Any) -> None:
    result, generator, _dataset, _root = first_run
    folder = result.run_dir
    for name in ("settings.json", "run.json", "per_question.jsonl", "metrics.json", "report.md"):
        assert (folder / name).is_file(), name
    for name in ("metrics.png", "latency.png", "failures.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG", name
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["answer"]["cache"] is False and settings["generator"]["temperature"] == 0.0
    info = json.loads((folder / "run.json").read_text())
    assert info["complete"] and info["n"] == 5 and info["collection"] == "documents"
    assert info["question_ids"] == [q["id"] for q in QUESTIONS] and info["generator"]["name"] == "scripted"
    assert info["index_version"] == 1 and len(info["dataset_hash"]) == 64
    assert any("perplexity skipped" in note for note in info["notes"])  # a scripted generator has no weights
    # The world cup question is refused on weak evidence, before the model: four answers for five questions,
    # and one judge call per sentence of the three that were not refusals.
    assert len(generator.calls) == 4 + 3
    report = (folder / "report.md").read_text()
    assert "| wrong refusal | 1 |" in report and "![latency](latency.png)" in report


def test_per_question_rows_and_hand_checked_figures(first_run: Any) -> None:
    result, _generator, _dataset, _root = first_run
    rows = [json.loads(line) for line in (result.run_dir / "per_question.jsonl").read_text().splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert [row["id"] for row in rows] == [q["id"] for q in QUESTIONS]
    assert {qid: row["failure"] for qid, row in by_id.items()} == {
        "leave": "ok",
        "password": "ok",
        "calibration": "generation error",  # the product FAQ was in the prompt, the answer was about turtles
        "warranty": "wrong refusal",
        "worldcup": "ok",
    }
    leave = by_id["leave"]
    # "Full-time employees get 28 days of paid leave" (8 normalised tokens) vs "28 days": P = 2/8, R = 1,
    # F1 = 0.4. The cited chunk [1] is the handbook's paid-leave section, which holds all 7 content words of the
    # sentence {fulltime, employees, get, 28, days, paid, leave} ("Part-time employees get a pro-rata share").
    assert leave["metrics"]["token_f1"] == pytest.approx(0.4)
    assert leave["metrics"]["hit@5"] == 1.0 and leave["metrics"]["mrr@5"] == 1.0
    assert leave["citations"][0]["supported"] and leave["citations"][0]["support"] == 1.0
    assert leave["metrics"]["citation_correctness"] == 1.0
    assert leave["retrieved"][0]["gold_key"] == "employee-handbook.md"
    # "Passwords must be at least 14 characters long" (8) vs "at least 14 characters" (4): F1 = 2 * 0.5 / 1.5.
    assert by_id["password"]["metrics"]["token_f1"] == pytest.approx(2 / 3)
    assert by_id["worldcup"]["refused"] and by_id["worldcup"]["refusal_reason"] == "evidence"
    assert leave["judges"]["llm"] == [True] and by_id["calibration"]["judges"]["llm"] == [False]
    assert "groundedness_llm" not in by_id["warranty"]["metrics"]  # a refusal claims nothing
    assert set(by_id["leave"]["latency_ms"]) >= {"retrieve", "evidence", "prompt", "ttft", "generate", "total"}

    metrics = result.metrics
    # Token F1 over the four answerable questions: (0.4 + 2/3 + 0 + 0) / 4.
    assert metrics["metrics"]["token_f1"]["mean"] == pytest.approx((0.4 + 2 / 3) / 4)
    assert metrics["metrics"]["token_f1"]["n"] == 4
    ci = metrics["metrics"]["token_f1"]
    assert ci["low"] <= ci["mean"] <= ci["high"]
    # Refusals: world cup (unanswerable: tp) and warranty (answerable: fp); the other three answered (tn).
    abstention = metrics["abstention"]
    assert abstention["counts"] == {"tp": 1, "fp": 1, "fn": 0, "tn": 3}
    assert abstention["precision"]["mean"] == 0.5 and abstention["recall"]["mean"] == 1.0
    assert abstention["wrong_refusal_rate"]["mean"] == 0.25 and abstention["f1"]["mean"] == pytest.approx(2 / 3)
    assert metrics["failures"] == {"ok": 3, "retrieval miss": 0, "wrong refusal": 1, "generation error": 1,
                                   "missed refusal": 0}  # fmt: skip
    # The judge said SUPPORTED for leave and password, UNSUPPORTED for the turtles: 2 of 3 answers.
    assert metrics["metrics"]["groundedness_llm"]["mean"] == pytest.approx(2 / 3)
    assert metrics["judge_agreement"]["lexical_vs_llm"]["sentences"] == 3
    assert metrics["latency_ms"]["total"]["n"] == 5 and metrics["latency_ms"]["generate"]["n"] == 4
    assert metrics["tokens"]["completion_tokens"]["total"] == sum(len(r.split()) for r in ANSWERS.values())


def test_a_rerun_gives_identical_figures(first_run: Any, samples_index: Any, embedder: Any) -> None:
    result, _generator, dataset, root = first_run
    again, _ = run(samples_index, embedder, dataset, root / "b", llm_judge=True)
    assert stable(again.run_dir) == stable(result.run_dir)


def test_an_interrupted_run_resumes_where_it_stopped(first_run: Any, samples_index: Any, embedder: Any) -> None:
    result, _generator, dataset, root = first_run
    partial = root / "partial"
    shutil.copytree(result.run_dir, partial)
    lines = (partial / "per_question.jsonl").read_text().splitlines()
    # Killed while writing the third line: two complete answers and a torn one.
    (partial / "per_question.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    for name in ("metrics.json", "report.md"):
        (partial / name).unlink()
    resumed, generator = run(samples_index, embedder, dataset, partial, llm_judge=True)
    assert resumed.resumed == 2
    # Calibration (answer + one judged sentence) and warranty (a refusal: not judged); the world cup is refused
    # before the model.
    assert len(generator.calls) == 3
    assert stable(partial) == stable(result.run_dir)
    rows = [json.loads(line) for line in (partial / "per_question.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [q["id"] for q in QUESTIONS]


def test_a_folder_from_other_settings_is_not_resumed(first_run: Any, samples_index: Any, embedder: Any) -> None:
    result, _generator, dataset, _root = first_run
    base, store = samples_index
    overrides = [f"data_dir={base.data_dir}", "answer.mode=generate", "generator.max_new_tokens=17"]
    changed = load_settings("test", overrides)
    with pytest.raises(ConfigError, match=r"other inputs \(generator.max_new_tokens"):
        run_eval(RunSpec(dataset=dataset, llm_judge=True), changed, store, output=result.run_dir, embedder=embedder,
                 generator=KeyedGenerator(REPLIES), progress="none")  # fmt: skip
    with pytest.raises(ConfigError, match=r"other inputs \(seed"):
        run((base, store), embedder, dataset, result.run_dir, seed=1, llm_judge=True)


def test_gold_ids_that_match_nothing(samples_index: Any, embedder: Any, tmp_path: Path) -> None:
    rows = [
        {"id": "1", "question": "How many days of paid leave do full-time employees get?", "gold_documents": "x.pdf"},
        {"id": "2", "question": "How long must passwords be?", "gold_documents": "y.pdf"},
    ]
    with pytest.raises(DatasetError, match=r"none of the 2 gold document ids matches .*'documents'"):
        run(samples_index, embedder, write_jsonl(tmp_path / "bad.jsonl", rows), tmp_path / "bad")
    rows[1]["gold_documents"] = "security-policy.txt"
    result, _ = run(samples_index, embedder, write_jsonl(tmp_path / "some.jsonl", rows), tmp_path / "some")
    expected = "question 1: gold document 'x.pdf' matches no document in collection 'documents'"
    assert result.warnings[0].endswith(expected)


def test_a_clapnq_folder_brings_its_corpus(samples_index: Any, embedder: Any, tmp_path: Path) -> None:
    folder = tmp_path / "clapnq-mini"
    dev = folder / "annotated_data" / "dev"
    dev.mkdir(parents=True)
    tower = {
        "title": "Eiffel Tower",
        "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was "
        "completed in 1889 as the entrance to the World's Fair and is 330 metres tall.",
    }
    canal = {
        "title": "Panama Canal",
        "text": "The Panama Canal is an artificial waterway in Panama that connects "
        "the Atlantic Ocean with the Pacific Ocean. It opened in 1914 after ten years of construction.",
    }
    answerable = [
        {
            "id": "1",
            "input": "when was the eiffel tower completed",
            "passages": [tower],
            "output": [{"answer": "The Eiffel Tower was completed in 1889."}],
        },
        {
            "id": "2",
            "input": "when did the panama canal open",
            "passages": [canal],
            "output": [{"answer": "It opened in 1914."}],
        },
    ]
    unanswerable = [{"id": "3", "input": "who painted the eiffel tower red", "passages": [tower], "output": []}]
    write_jsonl(dev / "clapnq_dev_answerable.jsonl", answerable)
    write_jsonl(dev / "clapnq_dev_unanswerable.jsonl", unanswerable)  # fmt: skip

    settings, _store = samples_index
    result, _ = run(samples_index, embedder, folder, tmp_path / "clap")
    assert result.collection == "eval-clapnq-mini"
    corpus = settings.data_dir / "eval-corpora" / "clapnq-mini" / "corpus.jsonl"
    assert len(corpus.read_text().splitlines()) == 2  # the tower passage serves two questions: indexed once
    rows = {r["id"]: r for r in map(json.loads, (result.run_dir / "per_question.jsonl").read_text().splitlines())}
    # Gold ids are passage ids; chunks carry them as record_id.
    assert rows["1"]["metrics"]["hit@5"] == 1.0 and rows["2"]["metrics"]["mrr@5"] == 1.0
    assert rows["1"]["metrics"]["reference_groundedness_lexical"] == 1.0
    version = json.loads((result.run_dir / "run.json").read_text())["index_version"]
    again, _ = run(samples_index, embedder, folder, tmp_path / "clap-again", limit=1)
    # The corpus is unchanged: nothing re-embedded, the index version stays, so runs remain comparable.
    assert json.loads((again.run_dir / "run.json").read_text())["index_version"] == version
    assert again.n == 1
