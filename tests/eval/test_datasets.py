"""QA eval sets: the simple CSV/JSONL format on hand-made files (good and bad rows), ClapNQ on its real dev split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.answer_metrics import groundedness_lexical
from eval.datasets import (
    DatasetError,
    GoldPassage,
    QAExample,
    clapnq_corpus,
    load_clapnq,
    load_generic,
    load_qa_dataset,
    sample_examples,
    write_corpus_jsonl,
)
from rag.errors import ConfigError
from tests.conftest import SHARED_DATA, require

CLAPNQ = SHARED_DATA / "clapnq-dev"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the simple format: CSV


def test_csv_with_all_columns(tmp_path: Path) -> None:
    # A byte-order mark (Excel's "CSV UTF-8"), capitalised headers, a quoted cell with a comma, an extra column,
    # a trailing empty row.
    path = tmp_path / "qa.csv"
    path.write_text(
        "\ufeffID,Question,Answer,gold_documents,unanswerable,notes\n"
        'q1,"How many days, in total?",25 days || Twenty-five days ||  || 25 days,handbook.pdf||hr.docx,,check\n'
        ",Who founded it in 1802?,,,yes,\n"
        ",,,,,\n",
        encoding="utf-8",
    )
    assert load_generic(path) == [
        QAExample(
            id="q1",
            question="How many days, in total?",
            answers=("25 days", "Twenty-five days"),  # blanks and repeats dropped, order kept
            unanswerable=False,
            gold_document_ids=("handbook.pdf", "hr.docx"),
        ),
        # No id: the row number as the spreadsheet shows it (header = row 1).
        QAExample(id="3", question="Who founded it in 1802?", answers=(), unanswerable=True),
    ]


def test_csv_question_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.csv", "question\nWhat is RAG?\n")
    assert load_generic(path) == [QAExample(id="2", question="What is RAG?", answers=(), unanswerable=False)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("question,answer\nWhat?,yes\n,no\n", r"qa\.csv: row 3: missing 'question'"),
        ("question,unanswerable\nWhat?,maybe\n", r"row 2: 'unanswerable' is 'maybe': write true/false"),
        ("question,answer,unanswerable\nWhat?,42,true\n", r"row 2: marked 'unanswerable' but has 'answer'"),
        ("question,gold_documents,unanswerable\nWhat?,a.pdf,1\n", r"row 2: .*has 'gold_documents'"),
        ("question\nWhat?,extra\n", r"row 2: 2 cells but 1 columns .*quote cells that contain commas"),
        ("id,question\nx,One?\nx,Two?\n", r"row 3: id 'x' repeats .*row 2: ids must be unique"),
        # A default id (row number) may collide with an explicit one.
        ("id,question\n,One?\n2,Two?\n", r"row 3: id '2' repeats .*row 2"),
        ("query,answer\nWhat?,yes\n", r"row 1: no 'question' column \(found: query, answer\)"),
        ("question;answer\nWhat?;yes\n", r"no 'question' column .*comma-separated"),
        ("question,answers\nWhat?,yes\n", r"column 'answers' is not a known field: did you mean 'answer'\?"),
        ("question\n", r"no questions found"),
        ("", r"empty file"),
    ],
)
def test_csv_bad_input_names_file_row_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path / "qa.csv", body)
    with pytest.raises(ValueError, match=message):
        load_generic(path)


def test_dataset_error_is_a_config_error(tmp_path: Path) -> None:
    # The CLI reports ConfigError as one line with exit code 2; library callers can catch ValueError.
    with pytest.raises(DatasetError) as info:
        load_generic(_write(tmp_path / "qa.csv", "question\n\n"))
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_non_utf8_csv_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_bytes("question\nCaf\u00e9?\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_generic(path)


# --------------------------------------------------------------------------- the simple format: JSONL


def test_jsonl_lists_strings_and_numbers(tmp_path: Path) -> None:
    lines = [
        {"question": "Capital of France?", "answer": ["Paris", "paris "], "gold_documents": ["geo.md"], "id": 7},
        {},  # placeholder for a blank line, replaced below
        {"question": " Two answers? ", "answer": "a || b", "unanswerable": False},
        {"question": "Unknown?", "unanswerable": "No", "extra": 1},
        {"question": "Refuse?", "unanswerable": 1},
    ]
    text = "\n".join("" if not line else json.dumps(line) for line in lines) + "\n"
    examples = load_generic(_write(tmp_path / "qa.jsonl", text))
    # Answers are not normalised here ("Paris" and "paris" both kept): metrics normalise when they compare.
    assert examples[0] == QAExample(
        id="7",
        question="Capital of France?",
        answers=("Paris", "paris"),
        unanswerable=False,
        gold_document_ids=("geo.md",),
    )
    assert [e.id for e in examples] == ["7", "3", "4", "5"]  # default id: the line number; blank lines skipped
    assert examples[1].answers == ("a", "b") and examples[1].question == "Two answers?"
    assert [e.unanswerable for e in examples] == [False, False, False, True]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"qa\.jsonl: line 2: not valid JSON"),
        ('["a list"]', r"line 2: expected a JSON object, got list"),
        ('{"answer": "x"}', r"line 2: missing 'question'"),
        ('{"question": 5}', r"line 2: 'question' must be text, got int"),
        ('{"question": "Q?", "answer": {"text": "x"}}', r"line 2: 'answer' must be text or a list of texts, got dict"),
        ('{"question": "Q?", "answer": [1, 2]}', r"line 2: 'answer' must hold only texts"),
        ('{"question": "Q?", "id": [1]}', r"line 2: 'id' must be text or a number"),
        ('{"question": "Q?", "gold_document": ["a"]}', r"did you mean 'gold_documents'"),
    ],
)
def test_jsonl_bad_line_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "qa.jsonl", '{"question": "fine?"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_generic(path)


# --------------------------------------------------------------------------- dispatch


def test_load_qa_dataset_dispatch(tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "qa.CSV", "question\nWhy?\n")
    assert load_qa_dataset(csv_path)[0].question == "Why?"
    for bad in (tmp_path / "qa.txt", tmp_path / "missing.csv", tmp_path):
        if bad.suffix == ".txt":
            _write(bad, "question\nWhy?\n")
        with pytest.raises(ValueError, match=r"not a QA eval set: give a ClapNQ folder .* or a \.csv/\.jsonl"):
            load_qa_dataset(bad)
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        load_generic(tmp_path / "qa.txt")


def _clapnq_folder(root: Path, answerable: list[dict[str, object]], unanswerable: list[dict[str, object]]) -> Path:
    dev = root / "annotated_data" / "dev"
    dev.mkdir(parents=True)
    for name, records in (("answerable", answerable), ("unanswerable", unanswerable)):
        body = "".join(json.dumps(r) + "\n" for r in records)
        (dev / f"clapnq_dev_{name}.jsonl").write_text(body, encoding="utf-8")
    return root


def _record(qid: str, title: str, outputs: list[tuple[str, bool]]) -> dict[str, object]:
    return {
        "id": qid,
        "input": f"question {qid}",
        "passages": [{"title": title, "text": f"text of {title}", "sentences": []}],
        "output": [{"answer": a, "selected_sentences": [], "meta": {"skip": skip}} for a, skip in outputs],
    }


def test_clapnq_on_a_tiny_folder(tmp_path: Path) -> None:
    folder = _clapnq_folder(
        tmp_path / "clap",
        # q1 and q2 share a passage; q1's second answer was skipped by the annotator and its third is empty.
        [_record("1", "T", [("A one.", False), ("", True), ("", False)]), _record("-2", "T", [("A two.", False)])],
        [_record("3", "U", [("", False)])],
    )
    examples = load_qa_dataset(folder)
    assert [(e.id, e.answers, e.unanswerable) for e in examples] == [
        ("1", ("A one.",), False),
        ("-2", ("A two.",), False),
        ("3", (), True),
    ]
    shared = examples[0].gold_passages[0]
    assert shared.id.startswith("clapnq-") and len(shared.id) == len("clapnq-") + 16
    assert examples[1].gold_passages == (shared,) and examples[0].gold_document_ids == (shared.id,)
    assert examples[2].gold_document_ids == () and examples[2].gold_passages[0].title == "U"
    assert clapnq_corpus(examples[:2]) == [shared]
    assert [p.title for p in clapnq_corpus(examples)] == ["T", "U"]


def test_clapnq_rejects_answerable_question_without_answer(tmp_path: Path) -> None:
    folder = _clapnq_folder(tmp_path / "clap", [_record("9", "T", [("", True)])], [])
    with pytest.raises(ValueError, match=r"clapnq_dev_answerable\.jsonl: line 1: answerable question 9 has no"):
        load_clapnq(folder)


def test_clapnq_missing_file(tmp_path: Path) -> None:
    (tmp_path / "annotated_data" / "dev").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"clapnq_dev_answerable\.jsonl: ClapNQ file not found"):
        load_clapnq(tmp_path)


def test_write_corpus_jsonl_round_trip(tmp_path: Path) -> None:
    passages = [GoldPassage("p1", "Zürich", 'Text with "quotes" and é.'), GoldPassage("p2", "", "No title.")]
    path = write_corpus_jsonl(passages, tmp_path / "sub" / "corpus.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"_id": "p1", "title": "Zürich", "text": 'Text with "quotes" and é.'},
        {"_id": "p2", "title": "", "text": "No title."},
    ]
    assert "Zürich" in lines[0]  # written as UTF-8, not \u escapes


# --------------------------------------------------------------------------- ClapNQ: the real dev split


@pytest.fixture(scope="module")
def clapnq() -> list[QAExample]:
    return load_clapnq(require(CLAPNQ))


def test_clapnq_dev_counts(clapnq: list[QAExample]) -> None:
    answerable = [e for e in clapnq if not e.unanswerable]
    unanswerable = [e for e in clapnq if e.unanswerable]
    assert (len(answerable), len(unanswerable)) == (300, 300)
    assert clapnq[:300] == answerable  # answerable first, in file order
    assert all(e.answers and all(a.strip() for a in e.answers) for e in answerable)
    assert all(len(e.gold_document_ids) == 1 and e.gold_document_ids[0] == e.gold_passages[0].id for e in answerable)
    # SOURCE.md: 485 non-empty, non-skipped reference answers; 7 repeat another answer of the same question.
    assert sum(len(e.answers) for e in answerable) == 478
    assert all(e.answers == () and e.gold_document_ids == () and len(e.gold_passages) == 1 for e in unanswerable)
    assert len(clapnq_corpus(answerable)) == 297  # three passages serve two questions each
    assert len(clapnq_corpus(clapnq)) == 597  # the unanswerable questions' 300 passages are all distinct
    assert clapnq[0].id == "6401197308716204890"
    assert clapnq[0].question == "which method of forecasting uses averages to predict future weather"


def test_clapnq_corpus_file_ingests_as_beir(clapnq: list[QAExample], tmp_path: Path) -> None:
    from ingest.loaders import load_file

    path = write_corpus_jsonl(clapnq_corpus(e for e in clapnq if not e.unanswerable), tmp_path / "corpus.jsonl")
    documents = load_file(path)
    assert len(documents) == 297
    assert {d.document_id.rsplit("#", 1)[1] for d in documents} == {
        e.gold_document_ids[0] for e in clapnq if not e.unanswerable
    }


def test_clapnq_reference_answers_are_grounded_in_their_passage(clapnq: list[QAExample]) -> None:
    # ClapNQ answers are written from the gold passage, so lexical groundedness should be near 1 against it and
    # near 0 against another question's passage: a check that the metric and the loader agree with the data.
    answerable = [e for e in clapnq if not e.unanswerable]
    own = [groundedness_lexical(e.answers[0], [e.gold_passages[0].text])[0] for e in answerable]
    other = [
        groundedness_lexical(e.answers[0], [answerable[i - 1].gold_passages[0].text])[0]
        for i, e in enumerate(answerable)
    ]
    assert sum(own) / len(own) > 0.95
    assert sum(other) / len(other) < 0.1


# --------------------------------------------------------------------------- sampling


def _examples(answerable: int, unanswerable: int) -> list[QAExample]:
    return [QAExample(f"a{i}", f"question a{i}", ("x",), False) for i in range(answerable)] + [
        QAExample(f"u{i}", f"question u{i}", (), True) for i in range(unanswerable)
    ]


def test_sample_keeps_the_answerable_share_and_the_dataset_order() -> None:
    examples = _examples(300, 300)
    sample = sample_examples(examples, 4, seed=0)
    assert sum(e.unanswerable for e in sample) == 2  # ClapNQ's half-and-half survives --limit 4
    order = [examples.index(e) for e in sample]
    assert order == sorted(order)
    # 30 answerable + 10 unanswerable, limit 5: quotas 3.75 and 1.25 -> 3 + 1, the spare one to the larger
    # remainder (0.75, answerable) -> 4 + 1.
    skewed = sample_examples(_examples(30, 10), 5, seed=3)
    assert [e.unanswerable for e in skewed].count(True) == 1 and len(skewed) == 5


def test_sample_is_deterministic_per_seed() -> None:
    examples = _examples(50, 50)
    assert sample_examples(examples, 10, seed=1) == sample_examples(examples, 10, seed=1)
    assert sample_examples(examples, 10, seed=1) != sample_examples(examples, 10, seed=2)
    # No limit, or one at least the size: everything, in order.
    assert sample_examples(examples, None, seed=1) == examples
    assert sample_examples(examples, 500, seed=1) == examples
    with pytest.raises(ValueError, match="limit must be >= 1"):
        sample_examples(examples, 0, seed=1)
