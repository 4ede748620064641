"""BEIR loading: error messages on small hand-made folders, counts on the real SciFact folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.beir import iter_corpus, load_beir, load_qrels, load_queries
from rag.errors import ConfigError

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "beir-scifact"


def _write_dataset(root: Path, splits: dict[str, str]) -> Path:
    root.mkdir()
    docs = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "text": "two, no title"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir()
    for split, body in splits.items():
        (root / "qrels" / f"{split}.tsv").write_text(body, encoding="utf-8")
    return root


HEADER = "query-id\tcorpus-id\tscore\n"


def test_load_beir_keeps_only_judged_queries(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tiny", {"test": HEADER + "q1\td1\t1\nq2\td2\t2\nq2\td1\t0\n"})
    dataset = load_beir(root)
    assert dataset.name == "tiny" and dataset.split == "test"
    assert dataset.corpus_path == root / "corpus.jsonl"
    assert dataset.queries == {"q1": "first", "q2": "second"}
    assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}


def test_iter_corpus_defaults_missing_title(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tiny", {"test": HEADER + "q1\td1\t1\n"})
    assert list(iter_corpus(root / "corpus.jsonl")) == [
        {"_id": "d1", "title": "T1", "text": "one"},
        {"_id": "d2", "title": "", "text": "two, no title"},
    ]


def test_iter_corpus_fails_on_call_for_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="corpus file not found"):
        iter_corpus(tmp_path / "nope.jsonl")  # no next(): the check is eager


def test_missing_split_lists_available(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tiny", {"test": HEADER + "q1\td1\t1\n", "dev": HEADER + "q2\td2\t1\n"})
    with pytest.raises(ConfigError, match=r"no qrels for split 'train'; available splits: dev, test"):
        load_beir(root, split="train")


def test_missing_corpus(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tiny", {"test": HEADER + "q1\td1\t1\n"})
    (root / "corpus.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"no corpus\.jsonl"):
        load_beir(root)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder not found"):
        load_beir(tmp_path / "absent")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HEADER + "q1\td1\t1\nq1 d2 1\n", r"test.tsv:3: expected 3 tab-separated fields"),
        (HEADER + "q1\td1\tyes\n", r"test.tsv:2: score must be an integer, got 'yes'"),
        (HEADER + "q1\td1\t1\nq1\td1\t2\n", r"test.tsv:3: \('q1', 'd1'\) judged twice"),
        ("qid\tdocid\trel\nq1\td1\t1\n", r"test.tsv:1: score must be an integer"),
    ],
)
def test_bad_qrels_line_is_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "test.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_qrels(path)


def test_qrels_without_header_and_with_crlf(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\r\nq1\td2\t0\r\n\n", encoding="utf-8")
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 0}}


def test_bad_queries_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"queries.jsonl: line 2: missing field 'text'"):
        load_queries(path)
    path.write_text('{"_id": "q1", "text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"queries.jsonl: line 2: not valid JSON"):
        load_queries(path)


def test_judged_query_missing_from_queries(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "tiny", {"test": HEADER + "q1\td1\t1\nq9\td1\t1\n"})
    with pytest.raises(ConfigError, match=r"1 judged query ids are not in queries.jsonl, e.g. q9"):
        load_beir(root)


@pytest.fixture(scope="module")
def scifact() -> Path:
    if not SCIFACT.is_dir():
        pytest.skip(f"BEIR SciFact not found at {SCIFACT} (the shared data folder next to the repository)")
    return SCIFACT


def test_scifact_test_split(scifact: Path) -> None:
    dataset = load_beir(scifact)
    assert dataset.name == "beir-scifact"
    assert len(dataset.queries) == 300
    assert sum(len(judged) for judged in dataset.qrels.values()) == 339
    assert set(dataset.queries) == set(dataset.qrels)
    doc_ids = [doc["_id"] for doc in iter_corpus(dataset.corpus_path)]
    assert len(doc_ids) == 5183 and len(set(doc_ids)) == 5183
    # Every judged document exists, so a perfect retriever could reach nDCG 1.
    assert {d for judged in dataset.qrels.values() for d in judged} <= set(doc_ids)


def test_scifact_train_split_and_missing_split(scifact: Path) -> None:
    assert len(load_beir(scifact, split="train").queries) == 809
    with pytest.raises(ConfigError, match=r"no qrels for split 'dev'; available splits: test, train"):
        load_beir(scifact, split="dev")
