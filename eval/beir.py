"""Read BEIR-format retrieval datasets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as BEIR's loader does.

Every malformed or missing file raises ConfigError naming the file, the line and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError
from rag.retrieval_training import LabelledQuery

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport
    from rag.config import Settings
    from rag.embedding import SentenceTransformerEmbedder
    from rag.store.base import VectorStore

__all__ = ["BeirDataset", "ingest_corpus", "iter_corpus", "load_beir", "load_qrels", "load_queries", "training_queries"]

_QRELS_HEADER = ["query-id", "corpus-id", "score"]


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR dataset. The corpus stays on disk (stream it with `iter_corpus`): it can be millions."""

    name: str
    split: str
    corpus_path: Path
    queries: dict[str, str]  # only queries that have judgments in this split, as BEIR evaluates
    qrels: dict[str, dict[str, int]]  # query id -> document id -> grade


def read_jsonl(path: Path, error: type[ConfigError] = ConfigError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line raises `error` naming the file and line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{path}: line {line_number}: not valid JSON ({e.msg}): fix or remove it") from e
                if not isinstance(record, dict):
                    raise error(f"{path}: line {line_number}: expected a JSON object, got {type(record).__name__}")
                yield line_number, record
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text: save it as UTF-8") from e


def _field(record: dict[str, Any], key: str, path: Path, line_number: int, *, default: str | None = None) -> str:
    value = record.get(key, default)
    if value is None:
        raise ConfigError(f"{path}: line {line_number}: missing field {key!r}")
    # Ids are strings in BEIR, but some exports write numeric ids; str() keeps them matching the qrels.
    return value if isinstance(value, str) else str(value)


def load_queries(path: str | Path) -> dict[str, str]:
    """Read queries.jsonl (`_id`, `text` per line) into query id -> text."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: queries file not found")
    queries: dict[str, str] = {}
    for line_number, record in read_jsonl(path):
        query_id = _field(record, "_id", path, line_number)
        text = _field(record, "text", path, line_number)
        if queries.get(query_id, text) != text:
            raise ConfigError(f"{path}: line {line_number}: query id {query_id!r} appears twice with different text")
        queries[query_id] = text
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a qrels TSV (header `query-id corpus-id score`, tab-separated, integer grades): query -> doc -> grade."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: qrels file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            # Tabs only: BEIR ids may contain spaces, so whitespace splitting would misread them.
            fields = line.rstrip("\r\n").split("\t")
            if line_number == 1 and [field.strip().lower() for field in fields] == _QRELS_HEADER:
                continue
            if not line.strip():
                continue
            if len(fields) != 3:
                raise ConfigError(
                    f"{path}:{line_number}: expected 3 tab-separated fields "
                    f"'query-id<TAB>corpus-id<TAB>score', got {len(fields)}: {line.rstrip()!r}"
                )
            query_id, doc_id, score = (field.strip() for field in fields)
            try:
                grade = int(score)
            except ValueError as e:
                raise ConfigError(f"{path}:{line_number}: score must be an integer, got {score!r}") from e
            judged = qrels.setdefault(query_id, {})
            if judged.get(doc_id, grade) != grade:
                raise ConfigError(
                    f"{path}:{line_number}: ({query_id!r}, {doc_id!r}) judged twice with different scores"
                )
            judged[doc_id] = grade
    return qrels


def iter_corpus(corpus_path: str | Path) -> Iterator[dict[str, str]]:
    """Stream corpus.jsonl as dicts with `_id`, `title` ("" when absent) and `text`.

    The file is checked now, not on the first `next()`, so a wrong path fails where it is passed.
    """
    path = Path(corpus_path)
    if not path.is_file():
        raise ConfigError(f"{path}: corpus file not found")
    return _read_corpus(path)


def _read_corpus(path: Path) -> Iterator[dict[str, str]]:
    for line_number, record in read_jsonl(path):
        yield {
            "_id": _field(record, "_id", path, line_number),
            "title": _field(record, "title", path, line_number, default=""),
            "text": _field(record, "text", path, line_number),
        }


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """Load one split of a BEIR dataset folder; queries are limited to those judged in that split."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: BEIR dataset folder not found")
    corpus_path = directory / "corpus.jsonl"
    if not corpus_path.is_file():
        raise ConfigError(f"{directory}: no corpus.jsonl; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/")
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
        raise ConfigError(
            f"{qrels_path}: no qrels for split {split!r}; available splits: {', '.join(available) or 'none'}"
        )
    qrels = load_qrels(qrels_path)
    if not qrels:
        raise ConfigError(f"{qrels_path}: no judgments; the split has nothing to evaluate")
    all_queries = load_queries(directory / "queries.jsonl")
    missing = sorted(query_id for query_id in qrels if query_id not in all_queries)
    if missing:
        raise ConfigError(
            f"{qrels_path}: {len(missing)} judged query ids are not in queries.jsonl, e.g. {', '.join(missing[:5])}"
        )
    return BeirDataset(
        name=directory.name,
        split=split,
        corpus_path=corpus_path,
        queries={query_id: all_queries[query_id] for query_id in qrels},
        qrels=qrels,
    )


def default_collection(dataset_name: str) -> str:
    """The collection a BEIR corpus is indexed into: `beir-<folder>` (not doubled for `beir-*` folders)."""
    return dataset_name if dataset_name.startswith("beir-") else f"beir-{dataset_name}"


def training_queries(dataset: BeirDataset) -> tuple[list[LabelledQuery], dict[str, str]]:
    """Labelled queries of a BEIR split for `rag finetune retrieval`, and the corpus texts by id (title and text,
    as ingested)."""
    corpus = {
        r["_id"]: f"{r['title']}\n\n{r['text']}" if r["title"] else r["text"] for r in iter_corpus(dataset.corpus_path)
    }
    labelled = []
    for qid in sorted(dataset.queries):
        ids = tuple(d for d, g in sorted(dataset.qrels[qid].items()) if g > 0 and d in corpus)
        if ids:
            labelled.append(LabelledQuery(qid, dataset.queries[qid], tuple(corpus[d] for d in ids), ids))
    return labelled, corpus


def ingest_corpus(
    dataset: BeirDataset,
    settings: Settings,
    store: VectorStore,
    embedder: SentenceTransformerEmbedder,
    *,
    collection: str | None = None,
    progress: Any = None,
) -> IngestReport:
    """Index the dataset's corpus through the normal (incremental) ingest path, into `collection` or `beir-<folder>`."""
    from ingest.pipeline import ingest_paths

    name = collection or default_collection(dataset.name)
    return ingest_paths([dataset.corpus_path], settings, store, embedder, collection=name, progress=progress)
