"""`rag eval run`: ask each question of an eval set through the answer pipeline, score it, and write a run folder.

The run folder holds settings.json (resolved settings), run.json (dataset hash, index version, model ids, seed),
per_question.jsonl (one line per question, flushed as it completes), metrics.json (aggregates with bootstrap
intervals) and report.md with its plots. A run that stops half-way is resumed by running it again into the same
folder: questions already in per_question.jsonl are skipped, and the final figures are the same as a run that
never stopped, since every aggregate is computed from the file, in dataset order.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval.datasets import DatasetError, QAExample, clapnq_corpus, load_qa_dataset, sample_examples, write_corpus_jsonl
from eval.progress import CountProgress
from eval.runconfig import RunSpec
from eval.scoring import chunk_keys, score_answer
from rag.config import Settings
from rag.errors import ConfigError, RagError, UsageError
from rag.store.base import VectorStore

__all__ = ["RunResult", "dataset_hash", "default_run_dir", "load_resumed", "read_rows", "run_eval"]

RUNS_DIR = "eval-runs"
CORPORA_DIR = "eval-corpora"
PER_QUESTION = "per_question.jsonl"
# run.json fields that must match for a folder's answers to be resumed: they decide every answer and score.
_FINGERPRINT = (
    "dataset_hash",
    "question_ids",
    "collection",
    "index_version",
    "embedder",
    "generator",
    "reranker",
    "retrieval_k",
    "seed",
    "thresholds",
    "llm_judge",
    "perplexity",
)
# Gold ids named one by one in warnings; the rest are counted.
_MAX_LISTED = 10

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder, how many questions it scored (and how many came from an earlier attempt)."""

    run_dir: Path
    n: int
    resumed: int
    collection: str
    metrics: dict[str, Any]
    warnings: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "n": self.n,
            "resumed": self.resumed,
            "collection": self.collection,
            "report": str(self.run_dir / "report.md"),
            "warnings": list(self.warnings),
            **self.metrics,
        }


def dataset_hash(examples: Iterable[QAExample]) -> str:
    """sha256 of the questions' content (not the file's bytes): a reformatted but equal dataset keeps its hash."""
    digest = hashlib.sha256()
    for e in examples:
        record = [
            e.id,
            e.question,
            list(e.answers),
            e.unanswerable,
            list(e.gold_document_ids),
            [[p.id, p.title, p.text] for p in e.gold_passages],
        ]
        digest.update(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def default_run_dir(settings: Settings, spec: RunSpec) -> Path:
    """`<data_dir>/eval-runs/<UTC timestamp>-<run name>`."""
    return settings.data_dir / RUNS_DIR / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{spec.run_name}"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a per_question.jsonl; a torn last line (a run killed mid-write) is dropped, any other is an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # the run was killed while writing it: that question is asked again
            raise ConfigError(f"{path}: line {number}: not valid JSON ({e.msg}): the run folder is damaged") from e
    return rows


def load_resumed(run_dir: Path) -> tuple[RunSpec, dict[str, Any]]:
    """The RunSpec and the resolved settings (as saved) of an earlier run, to continue it as it was started."""
    run_json, settings_json = run_dir / "run.json", run_dir / "settings.json"
    for path in (run_json, settings_json):
        if not path.is_file():
            raise UsageError(f"{path}: not found: --resume takes a run folder written by `rag eval run`")
    info = json.loads(run_json.read_text(encoding="utf-8"))
    settings: dict[str, Any] = json.loads(settings_json.read_text(encoding="utf-8"))
    return RunSpec.from_dict(info["spec"], str(run_json)), settings


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resumable(run_dir: Path, info: dict[str, Any], settings: dict[str, Any]) -> None:
    old_info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    old_settings = _flatten(json.loads((run_dir / "settings.json").read_text(encoding="utf-8")))
    new_settings = _flatten(settings)
    changed = [key for key in _FINGERPRINT if old_info.get(key) != info.get(key)]
    changed += sorted(
        k for k in old_settings.keys() | new_settings.keys() if old_settings.get(k) != new_settings.get(k)
    )
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run with other inputs ({', '.join(changed[:6])}"
            f"{' ...' if len(changed) > 6 else ''} differ): its answers cannot be reused; give another --output, "
            "or --resume it with its own settings"
        )


# -- the collection ---------------------------------------------------------------------------
def stage_gold_corpus(examples: Sequence[QAExample], settings: Settings, dataset_name: str) -> Path:
    """The gold passages of a dataset that brings its corpus (ClapNQ) as `<data_dir>/eval-corpora/<name>/corpus.jsonl`.

    All passages, the unanswerable questions' too: each is a plausible distractor. The file is rewritten only
    when its content changes, and it does not change with --limit, so one ingest serves every run.
    """
    corpus = settings.data_dir / CORPORA_DIR / dataset_name / "corpus.jsonl"
    staged = corpus.with_name(corpus.name + ".tmp")
    write_corpus_jsonl(clapnq_corpus(examples), staged)
    if corpus.is_file() and corpus.read_bytes() == staged.read_bytes():
        staged.unlink()
    else:
        staged.replace(corpus)
    return corpus


def _prepare_collection(
    spec: RunSpec,
    examples: Sequence[QAExample],
    settings: Settings,
    store: VectorStore,
    embedder: Any,
    progress: str,
    log: Log,
) -> str:
    """The collection to ask: a corpus the dataset brings is (incrementally) ingested into `eval-<name>` first."""
    from ingest.pipeline import ingest_paths
    from ingest.progress import make_progress

    corpus: Path | None = spec.corpus
    if corpus is None and spec.collection is None and any(e.gold_passages for e in examples):
        corpus = stage_gold_corpus(examples, settings, spec.dataset_name)
    if corpus is None:
        return spec.collection or settings.store.collection
    if not corpus.exists():
        raise UsageError(f"corpus {corpus}: no such file or folder")
    name = spec.collection or f"eval-{spec.dataset_name}"
    log(f"indexing {corpus} into collection {name} (unchanged documents are skipped)")
    with make_progress(progress) as callback:
        report = ingest_paths([corpus], settings, store, embedder, collection=name, progress=callback)
    if report.files_failed:
        failed = "; ".join(f"{f.path}: {f.reason}" for f in report.failures[:3])
        raise UsageError(f"corpus {corpus}: {report.files_failed} file(s) could not be ingested ({failed})")
    return name


def _check_gold_ids(examples: Sequence[QAExample], store: VectorStore, collection: str, dataset: Path) -> list[str]:
    """Warnings for gold ids that name no indexed document; refuse a dataset where none does."""
    named = [(e.id, g) for e in examples for g in e.gold_document_ids]
    if not named:
        return []
    known: set[str] = set()
    for _id, payload in store.scroll(collection, fields=["document_id", "source", "source_name", "record_id"]):
        known.update(chunk_keys(payload))
    unknown = [(qid, g) for qid, g in named if g not in known]
    if len(unknown) == len(named):
        qid, g = unknown[0]
        raise DatasetError(
            f"{dataset}: none of the {len(named)} gold document ids matches a document in collection "
            f"{collection!r} (question {qid} names {g!r}): gold_documents must be document ids, record ids or "
            "file names of indexed documents; check the dataset and --collection"
        )
    warnings = [
        f"{dataset}: question {qid}: gold document {g!r} matches no document in collection {collection!r}"
        for qid, g in unknown[:_MAX_LISTED]
    ]
    if len(unknown) > _MAX_LISTED:
        warnings.append(f"{dataset}: {len(unknown) - _MAX_LISTED} more gold ids match no document")
    return warnings


# -- the run ------------------------------------------------------------------------------------
def _run_settings(settings: Settings) -> Settings:
    """Greedy decoding (identical reruns) and no answer cache (every answer generated, so latency is real)."""
    return settings.model_copy(
        update={
            "answer": settings.answer.model_copy(update={"cache": False}),
            "generator": settings.generator.model_copy(update={"temperature": 0.0}),
        }
    )


def _perplexity_context(example: QAExample, answer: Any) -> list[Any]:
    """The gold context: the dataset's gold passages, else the retrieved chunks of gold documents."""
    from rag.retrieval import RetrievedChunk

    if example.gold_passages:
        return [
            RetrievedChunk(p.id, 1.0, {"text": p.text, "title": p.title, "record_id": p.id, "document_id": p.id})
            for p in example.gold_passages
        ]
    gold = set(example.gold_document_ids)
    return [c for c in answer.retrieved if any(key in gold for key in chunk_keys(c.payload))]


def run_eval(
    spec: RunSpec,
    settings: Settings,
    store: VectorStore,
    *,
    output: Path | None = None,
    embedder: Any = None,
    generator: Any = None,
    progress: str = "auto",
    log: Log | None = None,
    principal: Any = None,
) -> RunResult:
    """Run `spec` (see eval/runconfig.py); `embedder`/`generator` default to the configured ones (tests pass theirs).

    `principal` (rag/access): the caller the run answers as, seeing only its documents; default
    access.default_principal (local: every document).

    `output` defaults to a new folder under `<data_dir>/eval-runs`; a folder that already holds answers from the
    same inputs is resumed, one from other inputs is refused.
    """
    from eval.llm_judge import groundedness_llm
    from eval.perplexity import answer_loss, perplexity_unsupported
    from eval.report import aggregate, write_report
    from rag.answering import RagPipeline
    from rag.collections import open_collection
    from rag.factory import build_embedder
    from rag.generation import GenerationOptions, build_generator
    from rag.reranking import build_reranker
    from rag.retrieval import QdrantHybridRetriever

    log = log or (lambda _message: None)
    settings = _run_settings(settings)
    examples = load_qa_dataset(spec.dataset)
    selected = sample_examples(examples, spec.limit, spec.seed)
    embedder = embedder or build_embedder(settings)
    generator = generator or build_generator(settings)
    collection = _prepare_collection(spec, examples, settings, store, embedder, progress, log)
    handle = open_collection(store, collection, settings, embedder, principal)
    if handle.store.count(collection) == 0:  # the caller's view: documents it may not read are not there
        raise UsageError(f"collection {collection!r} is empty: ingest documents first, or give --collection")
    warnings = _check_gold_ids(examples, handle.store, collection, spec.dataset)
    for warning in warnings:
        log(f"warning: {warning}")
    reranker = build_reranker(settings.rerank, settings.models_dir)
    pipeline = RagPipeline(QdrantHybridRetriever(handle, embedder, settings.retrieval), generator, settings, reranker)
    options = GenerationOptions.from_settings(settings.generator)
    no_perplexity = "perplexity off (perplexity: false)" if not spec.perplexity else perplexity_unsupported(generator)
    notes = [no_perplexity] if no_perplexity else []

    run_dir = output or default_run_dir(settings, spec)
    settings_data = settings.model_dump(mode="json")
    info: dict[str, Any] = {
        "spec": spec.to_dict(),
        "dataset": str(spec.dataset),
        "dataset_hash": dataset_hash(examples),
        "dataset_questions": len(examples),
        "n": len(selected),
        "question_ids": [e.id for e in selected],
        "seed": spec.seed,
        "collection": collection,
        "index_version": handle.metadata.get("index_version"),
        "embedder": embedder.identity(),
        "generator": generator.identity(),
        "reranker": getattr(reranker, "name", None),
        "retrieval_k": settings.answer.max_chunks,
        "thresholds": asdict(spec.thresholds),
        "llm_judge": spec.llm_judge,
        "perplexity": no_perplexity is None,
        "notes": notes,
        "warnings": warnings,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    info = json.loads(json.dumps(info, default=str))  # as it reads back from disk, for the resume comparison
    rows_path = run_dir / PER_QUESTION
    done = {row["id"]: row for row in read_rows(rows_path)}
    if done:
        _check_resumable(run_dir, info, settings_data)
        log(f"resuming {run_dir}: {len(done)} of {len(selected)} questions already answered")
        info["started_at"] = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("started_at")
    else:
        info["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(settings_data, indent=1), encoding="utf-8")
    _write_json(run_dir / "run.json", {**info, "complete": False})
    # Rewrite what was kept (a torn last line is gone), then append: each line is flushed as its question ends.
    with rows_path.open("w", encoding="utf-8") as handle_out:
        handle_out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in done.values())

    judge = (lambda text, passages: groundedness_llm(text, passages, generator)) if spec.llm_judge else None
    todo = [e for e in selected if e.id not in done]
    bar = CountProgress(progress, len(selected), initial=len(selected) - len(todo))
    with bar, rows_path.open("a", encoding="utf-8") as out:
        for example in todo:
            t0 = time.perf_counter()
            try:
                answer = pipeline.ask(example.question, options=options)
            except RagError:
                log(f"question {example.id} failed ({example.question[:80]!r}); rerun to resume after fixing")
                raise
            total_ms = (time.perf_counter() - t0) * 1000
            row = score_answer(
                example,
                answer,
                k=settings.answer.max_chunks,
                embed=embedder.embed_documents,
                thresholds=spec.thresholds,
                llm_judge=judge,
            )
            row["latency_ms"]["total"] = total_ms
            context = _perplexity_context(example, answer) if example.answers else []
            if no_perplexity is None and context and not example.unanswerable:
                loss = answer_loss(generator, example.question, example.answers[0], context, settings.answer)
                row["metrics"]["answer_nll"] = loss.nll
                row["answer_tokens"] = loss.tokens
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done[example.id] = row
            bar.update(len(done), row["failure"])

    rows = [done[e.id] for e in selected]
    metrics = aggregate(rows, seed=spec.seed, thresholds=asdict(spec.thresholds))
    _write_json(run_dir / "metrics.json", metrics)
    info = {**info, "complete": True, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(run_dir / "run.json", info)
    write_report(run_dir, rows, metrics, info)
    return RunResult(run_dir, len(rows), len(selected) - len(todo), collection, metrics, tuple(warnings + notes))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
