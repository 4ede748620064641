"""The `rag` command as a user runs it: JSON output, exit codes, one-line errors, no torch for --help."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, SAMPLES, run_rag

pytestmark = pytest.mark.integration


def rag(*args: str, data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("QDRANT_URL", None)
    return run_rag(args, env, input=stdin)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    shutil.copytree(SAMPLES, docs)
    (docs / "notes.xyz").write_text("not a supported format")
    proc = rag("ingest", str(docs), "--config", "test", "--json", data_dir=root / "data")
    return {"root": root, "data": root / "data", "docs": docs, "proc": proc}


def test_help_does_not_import_torch() -> None:
    code = "import sys, rag.cli; rag.cli.build_parser(); print('torch' in sys.modules, 'unstructured' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_ingest_json_summary_and_exit_code(indexed: dict[str, Any]) -> None:
    proc = indexed["proc"]
    assert proc.returncode == 1, "a failed file makes the exit code 1"
    summary = json.loads(proc.stdout)
    assert summary["files_seen"] == 4 and summary["files_ingested"] == 3 and summary["files_failed"] == 1
    assert summary["failures"][0]["path"].endswith("notes.xyz") and ".xyz" in summary["failures"][0]["reason"]
    assert Path(summary["report_path"]).is_file()


def test_query_collections_and_config(indexed: dict[str, Any]) -> None:
    data = indexed["data"]
    out = rag("query", "How many days of paid leave do employees get?", "--config", "test", "--json", data_dir=data)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    top = result["chunks"][0]
    assert top["source_name"] == "employee-handbook.md" and "28 days" in top["text"]
    assert top["section_path"][0] == "Northwind Tools employee handbook"

    filtered = rag(
        "query", "password length", "--config", "test", "--json", "--filter", "file_type=html", data_dir=data
    )
    assert {c["file_type"] for c in json.loads(filtered.stdout)["chunks"]} == {"html"}

    listing = json.loads(rag("collections", "list", "--json", data_dir=data).stdout)
    assert listing["backend"] == "edge" and listing["collections"][0]["name"] == "documents"
    described = json.loads(rag("collections", "describe", "documents", "--json", data_dir=data).stdout)
    assert described["documents"] == 3 and described["metadata"]["embedder"]["dimension"] == 384

    shown = json.loads(rag("config", "show", "--json", "--set", "retrieval.top_k=3", data_dir=data).stdout)
    assert shown["retrieval.top_k"] == 3 and shown["store.resolved_kind"] == "edge"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["query", "   "], 2, "empty"),
        (["query", "leave", "--filter", "colour=red"], 2, "unknown field 'colour'"),
        (["query", "leave", "--collection", "nope"], 1, "does not exist"),
        (["query", "word " * 400], 2, "over the embedder's window"),
        (["ingest", "/no/such/folder"], 2, "no such file"),
        (["config", "show", "--set", "retrieval.top_k=zero"], 2, "retrieval.top_k"),
        (["collections", "delete", "documents"], 2, "--yes"),
        (["ask", "leave?", "--set", "generator.model=/no/such/model"], 2, "generator.model"),
        (["ask", "leave?", "--collection", "nope"], 1, "does not exist"),
        (["ask", "   "], 2, "empty"),
        (["ask", "leave?", "--set", "generator.kind=openai"], 2, "generator.url"),
    ],
)
def test_bad_input_gets_one_line_and_an_exit_code(
    indexed: dict[str, Any], args: list[str], code: int, message: str
) -> None:
    out = rag(*args, data_dir=indexed["data"])
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_chat_answers_each_question_until_exit(indexed: dict[str, Any]) -> None:
    # Quoting mode: no generator to load. A blank line is skipped, /new forgets, nothing after /exit is asked.
    questions = "How many days of paid leave do employees get?\n\n/new\nWho won the 1998 football world cup?\n"
    out = rag(
        "chat", "--config", "test", "--set", "answer.mode=extract", "--json",
        data_dir=indexed["data"], stdin=questions + "/exit\nHow long must a password be?\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["question"] for a in answers] == [
        "How many days of paid leave do employees get?",
        "Who won the 1998 football world cup?",
    ]
    assert "28 days" in answers[0]["answer"] and answers[1]["refused"]
    assert "(new conversation)" in out.stderr


def test_ask_refuses_on_weak_evidence_without_loading_the_model(indexed: dict[str, Any]) -> None:
    out = rag(
        "ask", "Who won the 1998 football world cup final?", "--config", "test", "--json", data_dir=indexed["data"]
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["refused"] and answer["refusal_reason"] == "evidence"
    assert answer["answer"] == "The documents do not say." and answer["completion_tokens"] == 0
    human = rag("ask", "Who won the 1998 football world cup final?", "--config", "test", data_dir=indexed["data"])
    assert "The documents do not say." in human.stdout and "closest passages found" in human.stdout


def test_finetune_generator_help_lists_its_options(indexed: dict[str, Any]) -> None:
    out = rag("finetune", "generator", "--help", data_dir=indexed["data"])
    assert out.returncode == 0 and "--resume" in out.stdout and "--no-eval" in out.stdout


def test_delete_collection(indexed: dict[str, Any]) -> None:
    data = indexed["data"]
    out = rag("collections", "delete", "documents", "--yes", "--json", data_dir=data)
    assert out.returncode == 0 and json.loads(out.stdout)["deleted"] == "documents"
    assert json.loads(rag("collections", "list", "--json", data_dir=data).stdout)["collections"] == []


def test_options_before_and_after_the_subcommand_both_count(capsys: pytest.CaptureFixture[str]) -> None:
    """`rag --config gpu config show` once silently dropped the profile (the subcommand's default overwrote it)."""
    from rag.cli import main

    assert main(["--config", "gpu", "--set", "answer.mode=extract", "config", "show", "--set", "answer.verify=strict",
                 "--json"]) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    assert (shown["store.kind"], shown["answer.mode"], shown["answer.verify"]) == ("server", "extract", "strict")


def test_ui_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable: find_spec answers None for it.
    monkeypatch.setitem(sys.modules, "streamlit", None)
    from rag.cli import main

    assert main(["--config", "test", "ui"]) == 2  # a missing extra is a configuration problem, as for `rag serve`
    assert "pip install 'rag-framework[ui]'" in capsys.readouterr().err
