"""Question-answering eval sets as QAExample lists: the ClapNQ dev split, and a simple format anyone can write.

The simple format is a CSV file (e.g. saved from a spreadsheet as "CSV UTF-8") or a JSONL file, one question per
row or line. Column names are case-insensitive; unknown columns (notes, categories) are ignored.

    question        required  the question, as a user would ask it
    answer          optional  reference answer(s): in CSV separate several with `||`; in JSONL a list of strings
                              (a string is split on `||` as in CSV)
    id              optional  a unique question id; default: the row number (see below)
    gold_documents  optional  ids or source file names of the documents that answer it, `||`-separated in CSV,
                              a list in JSONL; used for retrieval metrics
    unanswerable    optional  true/false, 1/0, yes/no (empty = false): the documents do not answer it, so the
                              right response is to decline; such a row has no answer and no gold_documents

    question,answer,gold_documents,unanswerable
    How many vacation days do I get?,25 days||Twenty-five days,handbook.pdf,
    Who founded the company in 1802?,,,yes

Rows are numbered as an editor shows them: in CSV the header is row 1 and the first question row 2; in JSONL
the line number. Every error names the file, the row and the field, and says what to fix.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.beir import read_jsonl
from rag.errors import ConfigError

__all__ = [
    "DatasetError",
    "GoldPassage",
    "QAExample",
    "clapnq_corpus",
    "load_clapnq",
    "load_generic",
    "load_qa_dataset",
    "sample_examples",
    "write_corpus_jsonl",
]

_CLAPNQ_DEV = Path("annotated_data") / "dev"
_CLAPNQ_FILES = (("clapnq_dev_answerable.jsonl", False), ("clapnq_dev_unanswerable.jsonl", True))
_FIELDS = ("question", "answer", "id", "gold_documents", "unanswerable")
_SEPARATOR = "||"
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n", ""})


class DatasetError(ConfigError, ValueError):
    """An eval set is missing or malformed. A ConfigError for the CLI (exit code 2), a ValueError for callers."""


@dataclass(frozen=True)
class GoldPassage:
    """A passage shipped with a question. `id` is deterministic, so the same text always gets the same id."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class QAExample:
    """One eval question with its reference answers and the documents that answer it.

    `gold_document_ids` are ids to score retrieval against (for ClapNQ, GoldPassage ids, which are the `_id`s
    written by write_corpus_jsonl). An unanswerable question has no answers and no gold documents; its
    `gold_passages` may still hold the related passage that does not answer it, so a corpus can include it.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    unanswerable: bool
    gold_document_ids: tuple[str, ...] = ()
    gold_passages: tuple[GoldPassage, ...] = ()


# --------------------------------------------------------------------------- ClapNQ


def _passage_id(title: str, text: str) -> str:
    # Content-addressed: 3 passages each serve two answerable questions, and must be one corpus document, not two.
    # The newline keeps ("ab", "c") and ("a", "bc") apart; 16 hex digits (64 bits) cannot collide on 600 passages.
    return "clapnq-" + hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:16]


def _clapnq_example(path: Path, line_number: int, record: dict[str, Any], unanswerable: bool) -> QAExample:
    where = f"{path}: line {line_number}"
    try:
        question = str(record["input"]).strip()
        passages = tuple(
            GoldPassage(_passage_id(p["title"], p["text"]), p["title"], p["text"]) for p in record["passages"]
        )
        outputs = record.get("output") or []
        # 10 round-2 entries are `skip: true` with an empty answer (annotators passed): not references.
        answers = tuple(
            dict.fromkeys(
                o["answer"].strip()
                for o in outputs
                if o.get("answer", "").strip() and not o.get("meta", {}).get("skip")
            )
        )
        example_id = str(record["id"])
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"{where}: not a ClapNQ record ({type(e).__name__}: {e}); expected id, input, passages, output"
        ) from e
    if not unanswerable and not answers:
        raise DatasetError(f"{where}: answerable question {example_id} has no non-empty, non-skipped answer")
    return QAExample(
        id=example_id,
        question=question,
        answers=() if unanswerable else answers,
        unanswerable=unanswerable,
        gold_document_ids=() if unanswerable else tuple(p.id for p in passages),
        gold_passages=passages,
    )


def load_clapnq(folder: str | Path) -> list[QAExample]:
    """The ClapNQ dev split: 300 answerable questions, then 300 unanswerable ones, in file order."""
    folder = Path(folder)
    labelled: list[tuple[str, QAExample]] = []
    for name, unanswerable in _CLAPNQ_FILES:
        path = folder / _CLAPNQ_DEV / name
        if not path.is_file():
            raise DatasetError(f"{path}: ClapNQ file not found (expected the primeqa/clapnq layout under {folder})")
        records = read_jsonl(path, DatasetError)
        labelled.extend((f"{path}: line {n}", _clapnq_example(path, n, record, unanswerable)) for n, record in records)
    _check_unique_ids(labelled)
    return [example for _label, example in labelled]


def clapnq_corpus(examples: Iterable[QAExample]) -> list[GoldPassage]:
    """The distinct gold passages of `examples`, first seen first (297 for ClapNQ's answerable dev questions).

    Pass all examples to include the unanswerable questions' non-answering passages too (597 passages): a harder
    corpus, since each of those is a plausible distractor.
    """
    unique: dict[str, GoldPassage] = {}
    for example in examples:
        for passage in example.gold_passages:
            unique.setdefault(passage.id, passage)
    return list(unique.values())


def write_corpus_jsonl(passages: Iterable[GoldPassage], path: str | Path) -> Path:
    """Write passages as a BEIR corpus.jsonl (`_id`, `title`, `text` per line) that `rag ingest` can index.

    Ingest names each record's document `<resolved path>#<_id>`, so map retrieved document ids back to
    gold_document_ids by the part after the last `#`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for passage in passages:
            record = {"_id": passage.id, "title": passage.title, "text": passage.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------- the simple format


def _split_list(value: Any, where: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts: list[Any] = value.split(_SEPARATOR)
    elif isinstance(value, list):
        parts = value
    else:
        raise DatasetError(f"{where}: {field!r} must be text or a list of texts, got {type(value).__name__}")
    if not all(isinstance(part, str) for part in parts):
        raise DatasetError(f"{where}: {field!r} must hold only texts (put numbers in quotes)")
    # Order kept, blanks and repeats dropped: "a || || a" is one answer, as a spreadsheet user meant.
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


def _parse_bool(value: Any, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DatasetError(f"{where}: 'unanswerable' is {value!r}: write true/false, 1/0 or yes/no (or leave it empty)")


def _generic_example(row: dict[str, Any], row_number: int, where: str) -> QAExample:
    question = row.get("question")
    if question is None or (isinstance(question, str) and not question.strip()):
        raise DatasetError(f"{where}: missing 'question': write the question or delete the row")
    if not isinstance(question, str):
        raise DatasetError(f"{where}: 'question' must be text, got {type(question).__name__}")
    raw_id = row.get("id")
    if isinstance(raw_id, (dict, list, bool)):
        raise DatasetError(f"{where}: 'id' must be text or a number, got {type(raw_id).__name__}")
    example_id = str(raw_id).strip() if raw_id is not None and str(raw_id).strip() else str(row_number)
    answers = _split_list(row.get("answer"), where, "answer")
    gold_documents = _split_list(row.get("gold_documents"), where, "gold_documents")
    unanswerable = _parse_bool(row.get("unanswerable"), where)
    for field, value in (("answer", answers), ("gold_documents", gold_documents)):
        if unanswerable and value:
            raise DatasetError(
                f"{where}: marked 'unanswerable' but has {field!r}: clear one of the two "
                "(an unanswerable question has no answer and no document that answers it)"
            )
    return QAExample(
        id=example_id,
        question=question.strip(),
        answers=answers,
        unanswerable=unanswerable,
        gold_document_ids=gold_documents,
    )


def _check_columns(columns: Iterable[str], path: Path) -> None:
    """Unknown columns are allowed, but one that looks like a misspelt field would silently drop data: refuse it."""
    present = set(columns)
    for column in sorted(present - set(_FIELDS)):
        guess = difflib.get_close_matches(column, [f for f in _FIELDS if f not in present], n=1, cutoff=0.75)
        if guess:
            raise DatasetError(f"{path}: column {column!r} is not a known field: did you mean {guess[0]!r}?")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would otherwise glue onto the first header.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: empty file: the first row must name the columns (at least 'question')")
        columns = [name.strip().lower() for name in header]
        if "question" not in columns:
            raise DatasetError(
                f"{path}: row 1: no 'question' column (found: {', '.join(columns) or 'none'}); the first row must name "
                "the columns, and the file must be comma-separated"
            )
        _check_columns(columns, path)
        for row_number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # spreadsheets often export trailing empty rows
            if len(cells) > len(columns):
                raise DatasetError(
                    f"{path}: row {row_number}: {len(cells)} cells but {len(columns)} columns in the header: "
                    "quote cells that contain commas"
                )
            yield row_number, dict(zip(columns, cells, strict=False))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_number, record in read_jsonl(path, DatasetError):
        row = {str(key).strip().lower(): value for key, value in record.items()}
        _check_columns(row, path)
        yield line_number, row


def load_generic(path: str | Path) -> list[QAExample]:
    """Read the simple CSV/JSONL format described in this module's docstring."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".jsonl"}:
        raise DatasetError(f"{path}: unsupported file type {suffix or '(none)'!r}: use .csv or .jsonl")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    label = "row" if suffix == ".csv" else "line"
    try:
        rows = _csv_rows(path) if suffix == ".csv" else _jsonl_rows(path)
        labelled = [(f"{path}: {label} {n}", _generic_example(row, n, f"{path}: {label} {n}")) for n, row in rows]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text: save it as UTF-8 (in Excel: CSV UTF-8)") from e
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e}): check for an unclosed quote") from e
    if not labelled:
        raise DatasetError(f"{path}: no questions found: add at least one row with a 'question'")
    _check_unique_ids(labelled)
    return [example for _label, example in labelled]


def _check_unique_ids(labelled: Sequence[tuple[str, QAExample]]) -> None:
    """Ids key per-question results and paired comparisons between runs, so a repeat would merge two questions."""
    first: dict[str, str] = {}
    for label, example in labelled:
        if example.id in first:
            raise DatasetError(f"{label}: id {example.id!r} repeats {first[example.id]}: ids must be unique")
        first[example.id] = label


# --------------------------------------------------------------------------- dispatch


def load_qa_dataset(path: str | Path) -> list[QAExample]:
    """A ClapNQ folder (holding annotated_data/dev/clapnq_dev_answerable.jsonl) or a simple-format .csv/.jsonl."""
    path = Path(path)
    if path.is_dir() and (path / _CLAPNQ_DEV / _CLAPNQ_FILES[0][0]).is_file():
        return load_clapnq(path)
    if path.is_file() and path.suffix.lower() in {".csv", ".jsonl"}:
        return load_generic(path)
    raise DatasetError(
        f"{path}: not a QA eval set: give a ClapNQ folder (with {_CLAPNQ_DEV / _CLAPNQ_FILES[0][0]}) or a .csv/.jsonl "
        "file in the simple format (see eval/datasets.py)"
    )


# --------------------------------------------------------------------------- sampling


def sample_examples(examples: Sequence[QAExample], limit: int | None, seed: int) -> list[QAExample]:
    """A seeded random subset of `limit` questions, stratified on `unanswerable`, in the dataset's order.

    Stratified so that `--limit 50` of ClapNQ (half unanswerable) keeps half unanswerable: a plain random draw
    would shift the answerable share, and with it every aggregate, from one seed to the next. Each stratum gets
    its share of `limit` by largest remainder (ties go to answerable), then its questions are drawn without
    replacement. No limit, or one at least the dataset's size: every question, in order.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    strata = [
        [i for i, e in enumerate(examples) if not e.unanswerable],
        [i for i, e in enumerate(examples) if e.unanswerable],
    ]
    quotas = [limit * len(stratum) / len(examples) for stratum in strata]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(strata)), key=lambda s: (-(quotas[s] - counts[s]), s))
    for s in by_remainder[: limit - sum(counts)]:
        counts[s] += 1
    rng = random.Random(seed)
    chosen = sorted(i for stratum, count in zip(strata, counts, strict=True) for i in rng.sample(stratum, count))
    return [examples[i] for i in chosen]
