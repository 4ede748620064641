"""Files -> documents -> chunks -> vectors -> Qdrant: incremental, parallel, bounded, resumable.

The store is the only source of truth about what is indexed: every chunk
carries its document's content hash and chunk count, so a document is
complete exactly when the store holds `chunk_count` chunks of it, all with
one hash. A run killed at any point therefore redoes just the incomplete
documents, and deterministic chunk ids make the redo an overwrite.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ingest.cards import attach_card, boilerplate_of, record_first_lines
from ingest.chunking import Chunk, StructureChunker
from ingest.cleaning import clean_document, ingest_redactor
from ingest.documents import DocumentCard, ParsedDocument
from ingest.parse_pool import PoolStats, Target, parse_in_workers
from ingest.streaming import should_stream
from rag.access.principal import ACCESS_FIELD, PUBLIC
from rag.access.rules import DocumentAccess
from rag.collections import (
    CollectionHandle,
    begin_write,
    create_or_open_for_ingest,
    ingest_lock,
    record_ingest,
    value_types,
)
from rag.config import Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import DocumentError, UsageError
from rag.store.base import Condition, Filter, PointRecord, VectorStore

# Namespace for chunk ids: uuid5(namespace, "<document id>:<chunk index>").
CHUNK_NAMESPACE = uuid.UUID("5b1f3f0e-7a52-4c1e-9d7a-2f1c3b9e8a10")
_STATE_FIELDS = ["document_id", "content_hash", "chunk_count", "source", ACCESS_FIELD]
_HASH_BLOCK = 1 << 20


def chunk_id(document_id: str, index: int) -> str:
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{document_id}:{index}"))


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileFailure:
    path: str
    reason: str


@dataclass(frozen=True)
class StageUse:
    """How busy one stage of a run was: `lanes` processes could do its work at once (parse workers; the embedder and
    the store writes run in the ingest process, one lane each)."""

    lanes: int
    busy_s: float  # summed over lanes
    share: float  # busy_s / (lanes x the run's wall time): 1.0 = never idle
    idle_s: float  # lanes x wall - busy_s
    pages_per_s: float | None  # pages / busy_s: per lane-second
    chunks_per_s: float | None


@dataclass(frozen=True)
class IngestReport:
    """The summary of one run; `failures` lists every file that could not be ingested, `ingested` every file
    that had new or changed content. A file in none of `ingested`, `failures` and `duplicates` was unchanged."""

    collection: str
    files_seen: int
    files_ingested: int
    files_unchanged: int
    files_failed: int
    files_duplicate: int
    documents_ingested: int
    documents_removed: int
    documents_missing: int
    chunks_written: int
    seconds_total: float
    seconds_parse: float
    seconds_embed: float
    seconds_store: float
    failures: tuple[FileFailure, ...] = ()
    duplicates: tuple[FileFailure, ...] = ()
    ingested: tuple[str, ...] = ()
    report_path: str | None = None
    index_version: int = 0
    documents_relabelled: int = 0  # unchanged documents given new access groups (payload only, no re-embedding)
    pages_parsed: int = 0  # pages of the parsed documents (0 for formats without pages)
    # Per stage ("parse", "embed", "store"): busy seconds, share of capacity, idle seconds, pages/s and chunks/s.
    stages: dict[str, StageUse] = field(default_factory=dict)
    # Where time went waiting: the embedder for parsed files; parse workers starting, held back by a full look-ahead
    # (waiting for the embedder) or without a file left to parse; seconds, summed over workers.
    waits: dict[str, float] = field(default_factory=dict)
    files_killed: int = 0  # files whose parse worker was killed past ingest.file_timeout_s (listed in failures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProgressEvent:
    files_done: int
    files_total: int
    chunks_written: int
    elapsed_s: float
    current: str = ""
    # Inside a big file that is streamed (ingest/streaming.py): bytes of `current` read so far, and its size.
    file_bytes_done: int = 0
    file_bytes_total: int = 0


# -- the worker side: parse, clean, chunk ----------------------------------------------------
@dataclass(frozen=True)
class PreparedDocument:
    doc: ParsedDocument
    chunks: tuple[Chunk, ...]
    # Dense vectors of `chunks`, when an engine embedded them away from the driver (ingest/ray_engine.py);
    # None: the driver embeds them.
    vectors: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class PreparedFile:
    path: str
    documents: tuple[PreparedDocument, ...] = ()
    unchanged_ids: tuple[str, ...] = ()
    failure: str | None = None
    seconds: float = 0.0
    seconds_embed: float = 0.0  # dense embedding done by the engine (ingest/ray_engine.py), not by the driver


@dataclass(frozen=True)
class _WorkerConfig:
    model_path: str
    max_tokens: int
    settings: Settings
    parent_pid: int = 0
    boilerplate: frozenset[str] = frozenset()  # cover-page lines the collection repeats (ingest/cards.py)


_worker_chunker: StructureChunker | None = None
_worker_config: _WorkerConfig | None = None


def _init_worker(config: _WorkerConfig) -> None:
    """Runs once per worker process: the tokenizer is loaded once, not per file."""
    global _worker_chunker, _worker_config
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    _worker_chunker = StructureChunker(tokenizer, config.settings.chunking, config.max_tokens)
    _worker_config = config


# How often a worker's watchdog checks that its parent is alive: a killed ingest's workers are gone within this.
_WATCHDOG_S = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the ingest process that started it dies, even by SIGKILL.

    A worker holds both ends of its task and result pipes, so it never sees EOF: measured, a SIGKILLed
    `rag ingest` left its ~530 MB worker blocked on the result pipe for good. On Linux the kernel sends
    SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere, and as a fallback, a daemon thread
    exits the process once the parent pid is gone (the worker is reparented).
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        pr_set_pdeathsig = 1
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except OSError:
            pass  # no libc to load (a static Python?): the watchdog below still covers it
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_WATCHDOG_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_pool_worker(config: _WorkerConfig) -> None:
    _die_with_parent(config.parent_pid)
    _init_worker(config)


def prepare_file(path: str, known_hashes: dict[str, str], on_parsed: Callable[[], None] | None = None) -> PreparedFile:
    """Parse, clean and chunk one file; documents whose hash is in `known_hashes` are skipped.

    `on_parsed` is called once the parser returned (the parse pool's per-file deadline ends there)."""
    from ingest.loaders import OcrOptions, load_file

    assert _worker_chunker is not None and _worker_config is not None, "worker not initialised"
    started = time.perf_counter()
    ingest = _worker_config.settings.ingest
    try:
        docs = load_file(
            Path(path),
            pdf_parser=ingest.pdf_parser,
            strategy=ingest.strategy,
            max_file_mb=ingest.max_file_mb,
            ocr=OcrOptions.from_settings(ingest.ocr),
            timeout_s=ingest.file_timeout_s,
            pdf_tables=ingest.pdf_tables,
        )
        if on_parsed is not None:
            on_parsed()
        prepared: list[PreparedDocument] = []
        unchanged: list[str] = []
        for doc in docs:
            if known_hashes.get(doc.document_id) == doc.content_hash:
                unchanged.append(doc.document_id)
                continue
            redact = ingest_redactor(_worker_config.settings)
            cleaned = attach_card(clean_document(doc, redact), _worker_config.boilerplate)
            chunks = _worker_chunker.chunk(cleaned)
            if not chunks:
                raise DocumentError(path, "no text left after cleaning (only headers, footers or page numbers?)")
            prepared.append(PreparedDocument(cleaned, tuple(chunks)))
    except DocumentError as e:
        return PreparedFile(path, failure=e.reason, seconds=time.perf_counter() - started)
    except Exception as e:  # a parser bug on one file must not stop the run; it is reported
        detail = traceback.format_exception_only(type(e), e)[-1].strip()
        return PreparedFile(path, failure=f"parser error: {detail}", seconds=time.perf_counter() - started)
    return PreparedFile(path, tuple(prepared), tuple(unchanged), seconds=time.perf_counter() - started)


# -- the main side --------------------------------------------------------------------------
@dataclass
class _DocState:
    hashes: set[str] = field(default_factory=set)
    count: int = 0
    chunk_count: int = -1
    source: str = ""
    access: tuple[str, ...] | None = None  # the stored groups (None: a chunk from before access control)

    @property
    def complete(self) -> bool:
        return len(self.hashes) == 1 and self.count == self.chunk_count

    @property
    def content_hash(self) -> str | None:
        return next(iter(self.hashes)) if len(self.hashes) == 1 else None


def load_state(store: VectorStore, collection: str) -> dict[str, _DocState]:
    """Per document: the hashes and number of its chunks in the store."""
    state: dict[str, _DocState] = defaultdict(_DocState)
    for _, payload in store.scroll(collection, fields=_STATE_FIELDS):
        doc = state[str(payload["document_id"])]
        doc.hashes.add(str(payload["content_hash"]))
        doc.count += 1
        doc.chunk_count = int(payload["chunk_count"])
        doc.source = str(payload["source"])
        if isinstance(payload.get(ACCESS_FIELD), list):
            doc.access = tuple(sorted(str(g) for g in payload[ACCESS_FIELD]))
    return dict(state)


def discover_files(
    paths: Sequence[Path],
    include_hidden: bool,
    exclude: Sequence[Path] = (),
    skipped: list[FileFailure] | None = None,
) -> list[Path]:
    """Every file under `paths`, sorted, hidden ones and `exclude` folders left out.

    A path that cannot be resolved (a symlink loop, a dangling link) is appended to `skipped` with the
    reason, and the rest is still found.
    """
    excluded = {p.resolve() for p in exclude}
    found: set[Path] = set()

    def resolve(path: Path) -> Path | None:
        try:
            return path.resolve(strict=True)
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on Python < 3.13
            reason = "symlink loop" if "loop" in str(e).lower() else f"cannot resolve the path ({e})"
            if isinstance(e, FileNotFoundError):
                reason = "dangling symlink (its target does not exist)"
            if skipped is not None:
                skipped.append(FileFailure(str(path), f"skipped: {reason}"))
            return None

    for root in paths:
        if not root.exists() and not root.is_symlink():
            raise UsageError(f"{root}: no such file or folder")
        if not root.is_dir():
            if (resolved := resolve(root)) is not None:
                found.add(resolved)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            kept = []
            for d in sorted(dirnames):
                if not include_hidden and d.startswith("."):
                    continue
                target = resolve(here / d)
                if target is not None and target not in excluded:
                    kept.append(d)
            dirnames[:] = kept
            for name in filenames:
                if (include_hidden or not name.startswith(".")) and (resolved := resolve(here / name)) is not None:
                    found.add(resolved)
    return sorted(found)


def _under(source: str, roots: Sequence[Path]) -> bool:
    for root in roots:
        r = str(root.resolve())
        if source == r or source.startswith(r.rstrip(os.sep) + os.sep) or source.startswith(r + "#"):
            return True
    return False


def chunk_payload(
    doc: ParsedDocument, chunk: Chunk, chunk_count: int, ingested_at: str, access: Sequence[str] = (PUBLIC,)
) -> dict[str, Any]:
    """Everything a citation, a filter, access control or incremental ingest needs to know about a chunk."""
    source = Path(doc.source)
    payload: dict[str, Any] = {
        "document_id": doc.document_id,
        "source": doc.source,
        "source_name": source.name,
        "source_dirs": [str(p) for p in source.parents],
        "file_type": doc.file_type,
        "content_hash": doc.content_hash,
        "chunk_hash": chunk.chunk_hash,
        "chunk_index": chunk.index,
        "chunk_count": chunk_count,
        "text": chunk.text,
        "section_path": list(chunk.section_path),
        "pages": list(chunk.pages),
        "page": chunk.pages[0] if chunk.pages else None,
        "element_types": list(chunk.element_types),
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "token_count": chunk.token_count,
        "title": doc.title,
        "ingested_at": ingested_at,
        ACCESS_FIELD: sorted(access),  # rag/access: who may read the chunk (keyword list, indexed)
    }
    if doc.record_id is not None:
        payload["record_id"] = doc.record_id
    for key, value in doc.metadata.items():
        payload.setdefault(f"meta_{key}" if key in payload else key, value)
    return payload


class _Run:
    """State of one ingest run on the main side."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: SentenceTransformerEmbedder,
        collection: str,
        progress: Callable[[ProgressEvent], None] | None,
        access: DocumentAccess | None = None,
    ) -> None:
        self.settings = settings
        self.access = access or DocumentAccess(require=settings.access.require_groups)
        self.store = store
        self.embedder = embedder
        self.collection = collection
        self.progress = progress
        self.handle: CollectionHandle | None = None
        self.state: dict[str, _DocState] = {}
        self.hash_owner: dict[str, str] = {}
        self.batch: list[tuple[ParsedDocument, Chunk, int]] = []
        self.remaining: dict[str, int] = {}
        self.docs_pending: dict[str, ParsedDocument] = {}
        self.written: set[str] = set()  # documents whose chunks this run writes
        self.payload_fields: set[str] = set()
        self.payload_types: dict[str, set[str]] = defaultdict(set)
        self.began = False  # whether this run has moved the version (begin_write) yet
        self.ingested_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.chunks_written = 0
        self.documents_ingested = 0
        self.seconds_embed = 0.0
        self.seconds_store = 0.0
        self.started = time.perf_counter()
        self.on_flush: Callable[[], None] | None = None  # progress within a big file (a JSONL corpus)
        self.vectors: dict[tuple[str, int], Any] = {}  # (document id, chunk index) -> dense vector embedded elsewhere

    def open_existing(self) -> None:
        if self.store.collection_exists(self.collection):
            self.handle = create_or_open_for_ingest(self.store, self.collection, self.settings, self.embedder, [])
            self.state = load_state(self.store, self.collection)
            if ACCESS_FIELD not in self.handle.payload_fields:  # built before access control: index the field
                self.store.create_keyword_index(self.collection, ACCESS_FIELD)
            for doc_id, st in self.state.items():
                if st.complete and st.content_hash is not None:
                    self.hash_owner.setdefault(st.content_hash, doc_id)

    def add(self, prepared: PreparedDocument) -> None:
        doc = prepared.doc
        self.written.add(doc.document_id)
        self.docs_pending[doc.document_id] = doc
        self.remaining[doc.document_id] = len(prepared.chunks)
        self.hash_owner.setdefault(doc.content_hash, doc.document_id)
        if prepared.vectors is not None:
            for chunk, vector in zip(prepared.chunks, prepared.vectors, strict=True):
                self.vectors[(doc.document_id, chunk.index)] = vector
        for chunk in prepared.chunks:
            self.batch.append((doc, chunk, len(prepared.chunks)))
        if len(self.batch) >= self.settings.ingest.embed_batch_chunks:
            self.flush_batch()

    def add_part(self, doc: ParsedDocument, chunks: Sequence[Chunk], total: int) -> None:
        """One block of a streamed document whose chunk count is `total` (known from a counting pass)."""
        if doc.document_id not in self.remaining:
            self.written.add(doc.document_id)
            self.docs_pending[doc.document_id] = doc
            self.remaining[doc.document_id] = total
            self.hash_owner.setdefault(doc.content_hash, doc.document_id)
        for chunk in chunks:
            self.batch.append((doc, chunk, total))
            if len(self.batch) >= self.settings.ingest.embed_batch_chunks:
                self.flush_batch()

    def stream_file(self, path: Path, report: Callable[[str, int, int], None]) -> None:
        """Chunk and write one big text file a block at a time (ingest/streaming.py); DocumentError if unreadable.

        Two passes over the file: every chunk carries its document's chunk count (what makes a document
        complete in the store, see the module docstring), known only once the whole file is chunked.
        Tokenizing twice costs far less than embedding once.
        """
        from ingest.streaming import chunk_parts

        ingest = self.settings.ingest
        source = str(path)
        try:
            size = path.stat().st_size
            if size > ingest.max_file_mb * 1024 * 1024:
                raise DocumentError(
                    source,
                    f"file is {size / (1024 * 1024):.0f} MB, over ingest.max_file_mb={ingest.max_file_mb:g}: "
                    "raise the limit or split the file",
                )
            digest = file_hash(path)
            chunker = StructureChunker(self.embedder.tokenizer, self.settings.chunking, self.embedder.max_tokens)
            block = max(1024, int(ingest.stream_text_mb * 1024 * 1024))
            redact = ingest_redactor(self.settings)
            total = sum(len(part.chunks) for part in chunk_parts(path, source, digest, chunker, block, redact))
            if total == 0:
                raise DocumentError(source, "no extractable text")
            for part in chunk_parts(path, source, digest, chunker, block, redact):
                self.on_flush = lambda done=part.bytes_done: report(source, done, size)
                self.add_part(part.doc, part.chunks, total)
                report(source, part.bytes_done, size)
        except OSError as e:
            raise DocumentError(source, f"cannot read the file: {e.strerror or e}") from e
        finally:
            self.on_flush = None

    def groups_of(self, document_id: str, source: str) -> list[str]:
        """A document's groups: this run's (--access, rules) when it names any, else the stored ones, else public."""
        stored = self.state.get(document_id)
        if not self.access.given and stored is not None and stored.access is not None:
            return list(stored.access)
        return self.access.payload_groups(source)

    def refused(self, source: str) -> str | None:
        """Why a file to (re)write is refused under access.require_groups; None when it may be written."""
        reason = self.access.missing(source)
        stored = self.state.get(source)
        if reason and stored is not None and stored.access and stored.access != (PUBLIC,):
            return None  # already labelled in the store: a run without --access keeps its groups
        return reason

    def relabel(self, document_ids: Iterable[str]) -> int:
        """Give unchanged documents this run's groups where they differ: a payload update, no re-embedding.

        Without groups in this run only documents indexed before access control (no `access` field, readable by
        admins alone) are labelled: public, as any unlabelled document, unless access.require_groups is on.
        """
        changed = 0
        for doc_id in document_ids:
            st = self.state.get(doc_id)
            if st is None or (not self.access.given and (st.access is not None or self.access.require)):
                continue
            wanted = tuple(self.access.payload_groups(st.source))
            if st.access == wanted:
                continue
            if self.handle is None:
                self.handle = create_or_open_for_ingest(self.store, self.collection, self.settings, self.embedder, [])
            self.payload_types[ACCESS_FIELD].add("str")
            self.payload_fields.add(ACCESS_FIELD)
            self.begin_write()
            self.store.set_payload(
                self.collection, Filter((Condition("document_id", doc_id),)), {ACCESS_FIELD: list(wanted)}
            )
            st.access = wanted
            changed += 1
        if changed:
            self.store.flush(self.collection)
        return changed

    def flush_batch(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        texts = [chunk.embed_text for _, chunk, _ in batch]
        if self.handle is None:
            self.handle = create_or_open_for_ingest(self.store, self.collection, self.settings, self.embedder, texts)
        t0 = time.perf_counter()
        given = [self.vectors.pop((doc.document_id, chunk.index), None) for doc, chunk, _ in batch]
        missing = [i for i, vector in enumerate(given) if vector is None]
        dense = list(given)
        if missing:
            for i, vector in zip(missing, self.embedder.embed_documents([texts[i] for i in missing]), strict=True):
                dense[i] = vector
        sparse = self.handle.sparse.embed_documents(texts)
        t1 = time.perf_counter()
        points = []
        for (doc, chunk, count), vec, sv in zip(batch, dense, sparse, strict=True):
            payload = chunk_payload(doc, chunk, count, self.ingested_at, self.groups_of(doc.document_id, doc.source))
            self.payload_fields.update(payload)
            for key, names in value_types(payload).items():
                self.payload_types[key].update(names)
            points.append(PointRecord(chunk_id(doc.document_id, chunk.index), vec.tolist(), sv, payload))
        self.begin_write()
        self.store.upsert(self.collection, points)
        finished = []
        for doc, _, _ in batch:
            self.remaining[doc.document_id] -= 1
            if self.remaining[doc.document_id] == 0:
                finished.append(doc)
        for doc in finished:
            # Only now is the new version whole: drop chunks of older versions.
            self.store.delete(
                self.collection,
                Filter(
                    (
                        Condition("document_id", doc.document_id),
                        Condition("content_hash", doc.content_hash, negate=True),
                    )
                ),
            )
            del self.remaining[doc.document_id]
            del self.docs_pending[doc.document_id]
            self.documents_ingested += 1
        self.store.flush(self.collection)
        self.seconds_embed += t1 - t0
        self.seconds_store += time.perf_counter() - t1
        self.chunks_written += len(batch)
        if self.on_flush is not None:
            self.on_flush()

    def begin_write(self) -> None:
        """Move the version and record the payload fields before the store changes (write-ahead, see begin_write)."""
        assert self.handle is not None
        recorded = self.handle.payload_types
        if self.began and all(k in recorded and names <= set(recorded[k]) for k, names in self.payload_types.items()):
            return
        self.handle = begin_write(self.handle, self.payload_types, self.settings.cache_dir, bump=not self.began)
        self.began = True


def ingest_paths(
    paths: Sequence[Path],
    settings: Settings,
    store: VectorStore,
    embedder: SentenceTransformerEmbedder,
    *,
    collection: str | None = None,
    prune: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
    access: DocumentAccess | None = None,
) -> IngestReport:
    """Ingest every file under `paths` into `collection`; see the module docstring for the guarantees.

    `access` gives each document its groups (rag/access/rules.py, checked by `document_access` before the run):
    new and changed documents get them with their chunks, unchanged ones by a payload update (no re-embedding).
    A run that names no groups leaves stored documents' groups as they are; new ones are public, or refused
    under access.require_groups. One ingest at a time per data folder: a second one raises StoreError.
    """
    with ingest_lock(settings.data_dir), _writes(settings, store) as writing:
        return _ingest_locked(paths, settings, writing, embedder, collection, prune, progress, access)


def _writes(settings: Settings, store: VectorStore) -> AbstractContextManager[VectorStore]:
    """The store the run writes through: with ingest.engine=ray and a Qdrant server, upserts go through a pool of
    Ray writer actors (ingest/ray_engine.py `pooled_writes`); otherwise this process writes `store` itself."""
    if settings.ingest.engine == "ray":
        from ingest.ray_engine import pooled_writes

        return pooled_writes(settings, store)
    return nullcontext(store)


@dataclass
class _Tally:
    """What became of each file and document, gathered by the plan and the run, read by the prune and the report."""

    failures: list[FileFailure] = field(default_factory=list)
    failed_sources: set[str] = field(default_factory=set)
    duplicates: list[FileFailure] = field(default_factory=list)
    seen_docs: set[str] = field(default_factory=set)  # documents on disk now: written, unchanged or duplicate
    unchanged_files: int = 0
    ingested_files: list[str] = field(default_factory=list)
    new_cards: list[DocumentCard | None] = field(default_factory=list)
    seconds_parse: float = 0.0
    seconds_parse_wait: float = 0.0  # the ingest process waited for a parsed file (nothing to embed)
    pages_parsed: int = 0
    chunks_parsed: int = 0
    pool: PoolStats = field(default_factory=PoolStats)

    def fail(self, source: str, reason: str) -> None:
        self.failures.append(FileFailure(source, reason))
        self.failed_sources.add(source)


@dataclass(frozen=True)
class _Plan:
    """The files a run has to read: (source, hashes of its stored documents) to parse, and big text to stream."""

    to_parse: list[tuple[str, dict[str, str]]]
    streamed: list[str]


class _FileProgress:
    """Files done out of the total, reported with the run's chunk count and the file being read."""

    def __init__(self, run: _Run, total: int, done: int, progress: Callable[[ProgressEvent], None] | None) -> None:
        self.run, self.total, self.done, self.progress = run, total, done, progress

    def __call__(self, current: str, bytes_done: int = 0, bytes_total: int = 0) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.run.started
            event = ProgressEvent(
                self.done, self.total, self.run.chunks_written, elapsed, current, bytes_done, bytes_total
            )
            self.progress(event)


def _ingest_locked(
    paths: Sequence[Path],
    settings: Settings,
    store: VectorStore,
    embedder: SentenceTransformerEmbedder,
    collection: str | None,
    prune: bool,
    progress: Callable[[ProgressEvent], None] | None,
    access: DocumentAccess | None = None,
) -> IngestReport:
    """Plan (what needs work, from hashes), run (parse, chunk, embed, store), prune (documents gone), report."""
    name = collection or settings.store.collection
    paths = [Path(p) for p in paths]
    tally = _Tally()
    files = discover_files(paths, settings.ingest.include_hidden, exclude=[settings.data_dir], skipped=tally.failures)
    run = _Run(settings, store, embedder, name, progress, access)
    run.open_existing()
    plan = _plan(files, run, settings, tally)
    _run_plan(
        plan, run, settings, embedder, tally, _FileProgress(run, len(files), _settled(files, plan), progress),
        _engine(settings, tally.pool),
    )  # fmt: skip
    relabelled = run.relabel(sorted(tally.seen_docs - run.written))
    gone = _gone(run, paths, tally)
    if prune and gone:
        _prune(run, gone)
    if run.handle is not None:
        record_first_lines(store, name, tally.new_cards)
        metadata = record_ingest(run.handle, run.payload_fields)
        index_version = int(metadata.get("index_version", 0))
    else:
        index_version = 0

    seconds_total = time.perf_counter() - run.started
    report = IngestReport(
        collection=name,
        files_seen=len(files),
        files_ingested=len(tally.ingested_files),
        files_unchanged=tally.unchanged_files,
        files_failed=len(tally.failures),
        files_duplicate=len(tally.duplicates),
        documents_ingested=run.documents_ingested,
        documents_removed=len(gone) if prune else 0,
        documents_missing=0 if prune else len(gone),
        chunks_written=run.chunks_written,
        seconds_total=round(seconds_total, 3),
        seconds_parse=round(tally.seconds_parse, 3),
        seconds_embed=round(run.seconds_embed, 3),
        seconds_store=round(run.seconds_store, 3),
        failures=tuple(sorted(tally.failures, key=lambda f: f.path)),
        duplicates=tuple(tally.duplicates),
        ingested=tuple(sorted(tally.ingested_files)),
        index_version=index_version,
        documents_relabelled=relabelled,
        pages_parsed=tally.pages_parsed,
        stages=_stage_use(settings, run, tally, seconds_total),
        waits=_waits(tally),
        files_killed=tally.pool.killed,
    )
    return _write_report(report, settings)


def _stage_use(settings: Settings, run: _Run, tally: _Tally, wall: float) -> dict[str, StageUse]:
    """Busy share, idle time and rates of parsing (summed over workers), embedding and store writes."""
    parse_lanes = tally.pool.workers or (_resolve_workers(settings.ingest.workers) if settings.ingest.engine == "ray"
                                         else 1)  # fmt: skip

    def use(lanes: int, busy: float, pages: int, chunks: int) -> StageUse:
        capacity = lanes * wall
        busy = round(busy, 3)  # the rates are of the busy seconds the report shows, so they agree to the last digit
        return StageUse(
            lanes=lanes,
            busy_s=busy,
            share=round(busy / capacity, 3) if capacity > 0 else 0.0,
            idle_s=round(max(0.0, capacity - busy), 3),
            pages_per_s=round(pages / busy, 1) if busy > 0 and pages else None,
            chunks_per_s=round(chunks / busy, 1) if busy > 0 and chunks else None,
        )

    return {
        "parse": use(parse_lanes, tally.seconds_parse, tally.pages_parsed, tally.chunks_parsed),
        "embed": use(1, run.seconds_embed, tally.pages_parsed, run.chunks_written),
        "store": use(1, run.seconds_store, tally.pages_parsed, run.chunks_written),
    }


def _waits(tally: _Tally) -> dict[str, float]:
    pool = tally.pool
    return {
        "embedder_waiting_for_parse": round(tally.seconds_parse_wait, 3),
        "workers_starting": round(pool.seconds_starting, 3),
        "workers_waiting_for_embedder": round(pool.seconds_queue_full, 3),
        "workers_without_work": round(pool.seconds_no_work, 3),
    }


def _plan(files: Sequence[Path], run: _Run, settings: Settings, tally: _Tally) -> _Plan:
    """Settle from file hashes and the store, before any parsing, every file that needs no work.

    Unchanged files, copies of an indexed file and files refused under access.require_groups go into `tally`;
    a JSONL corpus is always parsed (its records are compared one by one, against the hashes passed with it).
    """
    by_source: dict[str, dict[str, str]] = defaultdict(dict)
    for doc_id, st in run.state.items():
        if st.complete and st.content_hash is not None:
            by_source[st.source][doc_id] = st.content_hash
    to_parse: list[tuple[str, dict[str, str]]] = []
    # Copies within this run are settled here, the first by path indexed: files are parsed in parallel and come
    # back in the order they finish, so the first to finish must not decide which copy counts.
    first_of: dict[str, str] = {}
    for path in files:
        source = str(path)
        if path.suffix.lower() == ".jsonl":
            if (refusal := run.refused(source)) is not None:
                tally.fail(source, refusal)
                continue
            to_parse.append((source, by_source.get(source, {})))
            continue
        try:
            digest = file_hash(path)
        except OSError as e:
            tally.fail(source, f"cannot read the file: {e.strerror or e}")
            continue
        known = run.state.get(source)
        if known is not None and known.complete and known.content_hash == digest:
            tally.unchanged_files += 1
            tally.seen_docs.add(source)
            continue
        owner = run.hash_owner.get(digest)
        if owner is not None and owner != source and Path(run.state[owner].source).exists():
            tally.duplicates.append(
                FileFailure(source, f"same content as {run.state[owner].source}: not indexed twice")
            )
            tally.seen_docs.add(source)
            continue
        if (refusal := run.refused(source)) is not None:  # checked before parsing: no work for a refused file
            tally.fail(source, refusal)
            continue
        if (first := first_of.setdefault(digest, source)) != source:
            tally.duplicates.append(FileFailure(source, f"same content as {first}: not indexed twice"))
            tally.seen_docs.add(source)
            continue
        to_parse.append((source, {}))
    # Big plain-text files are streamed in the main process after the others, a block at a time.
    streamed = [source for source, _ in to_parse if should_stream(Path(source), settings.ingest.stream_text_mb)]
    return _Plan([job for job in to_parse if job[0] not in set(streamed)], streamed)


# Parse and chunk the planned files: (jobs, settings, embedder, boilerplate) -> prepared files as they finish.
PrepareFiles = Callable[
    [Sequence[tuple[str, dict[str, str]]], Settings, SentenceTransformerEmbedder, frozenset[str]],
    Iterator[PreparedFile],
]


def _engine(settings: Settings, stats: PoolStats) -> PrepareFiles:
    """ingest.engine: 'local' = worker processes on this machine (their time accounted in `stats`); 'ray' = Ray
    tasks and embedding actors."""
    if settings.ingest.engine == "ray":
        from ingest.ray_engine import prepare_with_ray  # Ray is imported only here: the local engine never loads it

        return prepare_with_ray
    return partial(_prepare_all, stats=stats)


def _settled(files: Sequence[Path], plan: _Plan) -> int:
    """Files the plan already settled (unchanged, duplicate, failed): they count as done from the start."""
    return len(files) - len(plan.to_parse) - len(plan.streamed)


def _run_plan(
    plan: _Plan,
    run: _Run,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    tally: _Tally,
    report_progress: _FileProgress,
    prepare: PrepareFiles | None = None,
) -> None:
    """Parse and chunk the planned files (with `prepare`, by default worker processes), stream the big ones,
    embed (unless `prepare` did) and store all chunks."""
    report_progress("")
    boilerplate = boilerplate_of(run.handle.metadata) if run.handle is not None else frozenset()
    for prepared in _timed(iter((prepare or _prepare_all)(plan.to_parse, settings, embedder, boilerplate)), tally):
        tally.seconds_parse += prepared.seconds
        tally.pages_parsed += sum(_pages(pd.doc) for pd in prepared.documents)
        tally.chunks_parsed += sum(len(pd.chunks) for pd in prepared.documents)
        run.seconds_embed += prepared.seconds_embed
        if prepared.failure is not None:
            tally.fail(prepared.path, prepared.failure)
        else:
            tally.seen_docs.update(prepared.unchanged_ids)
            run.on_flush = lambda current=prepared.path: report_progress(current)
            new_docs = 0
            for pd in prepared.documents:
                tally.seen_docs.add(pd.doc.document_id)
                owner = run.hash_owner.get(pd.doc.content_hash)
                if owner is not None and owner != pd.doc.document_id:
                    tally.duplicates.append(
                        FileFailure(pd.doc.document_id, f"same content as {owner}: not indexed twice")
                    )
                    continue
                run.add(pd)
                tally.new_cards.append(pd.doc.card)
                new_docs += 1
            if new_docs:
                tally.ingested_files.append(prepared.path)
            else:
                tally.unchanged_files += 1
        report_progress.done += 1
        report_progress(prepared.path)
    for source in plan.streamed:
        try:
            run.stream_file(Path(source), report_progress)
        except DocumentError as e:
            tally.fail(source, e.reason)
        else:
            tally.seen_docs.add(source)
            tally.ingested_files.append(source)
        report_progress.done += 1
        report_progress(source)
    run.on_flush = None
    run.flush_batch()
    report_progress("")  # the last batch is written only now


def _timed(prepared: Iterator[PreparedFile], tally: _Tally) -> Iterator[PreparedFile]:
    """`prepared`, adding the time spent waiting for each file to `tally.seconds_parse_wait`."""
    while True:
        t0 = time.perf_counter()
        item = next(prepared, None)
        tally.seconds_parse_wait += time.perf_counter() - t0
        if item is None:
            return
        yield item


def _pages(doc: ParsedDocument) -> int:
    return max((el.page_number or 0 for el in doc.elements), default=0)


def _gone(run: _Run, paths: Sequence[Path], tally: _Tally) -> list[str]:
    """Stored documents under `paths` that are gone from disk (or from their JSONL file); a failed file's stay."""
    return [
        doc_id
        for doc_id, st in run.state.items()
        if doc_id not in tally.seen_docs and st.source not in tally.failed_sources and _under(st.source, paths)
    ]


def _prune(run: _Run, gone: Sequence[str]) -> None:
    """Delete every chunk of the `gone` documents (the version moves first, as for every write)."""
    run.begin_write()
    for doc_id in gone:
        run.store.delete(run.collection, Filter((Condition("document_id", doc_id),)))
    run.store.flush(run.collection)


def _write_report(report: IngestReport, settings: Settings) -> IngestReport:
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = settings.reports_dir / f"ingest-{report.collection}-{stamp}-{os.getpid()}.json"
    final = replace(report, report_path=str(path))
    path.write_text(json.dumps(final.to_dict(), indent=2), encoding="utf-8")
    return final


def _resolve_workers(setting: int) -> int:
    if setting >= 0:
        return setting
    return max(1, (os.cpu_count() or 2) - 1)


def parse_in_worker(path: str, known: dict[str, str], on_parsed: Callable[[], None]) -> PreparedFile:
    """What a parse worker runs per file (ingest/parse_pool.py's `target`)."""
    return prepare_file(path, known, on_parsed)


def parse_deadline_s(timeout_s: float, path: str) -> float | None:
    """When a worker still parsing `path` is killed: after `ingest.file_timeout_s` plus a grace period in which
    the SIGALRM timer inside the worker stops a parser looping in Python (reported with its own reason, and the
    worker lives on). A JSONL corpus has no limit: its records are many documents, read and chunked as one job."""
    if path.lower().endswith(".jsonl"):
        return None
    return timeout_s + min(30.0, max(2.0, 0.1 * timeout_s))


def _prepare_all(
    jobs: Sequence[tuple[str, dict[str, str]]],
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    boilerplate: frozenset[str] = frozenset(),
    *,
    stats: PoolStats | None = None,
    target: Target = parse_in_worker,
) -> Iterator[PreparedFile]:
    """Prepared files as they finish, parsed in worker processes while the caller embeds and writes.

    At most `workers * queue_files` files are handed out or parsed and waiting (flat memory). A file still parsing
    past `parse_deadline_s` has its worker killed and replaced, and is reported; the run goes on. `workers=0`
    parses in this process, where only a parser looping in Python can be stopped (SIGALRM, main thread only).
    """
    config = _WorkerConfig(
        embedder.model_path, embedder.max_tokens, settings, parent_pid=os.getpid(), boilerplate=boilerplate
    )
    workers = min(_resolve_workers(settings.ingest.workers), len(jobs))
    deadline_s = partial(parse_deadline_s, settings.ingest.file_timeout_s)
    if workers == 1 and len(jobs) == 1 and deadline_s(jobs[0][0]) is None:
        workers = 0  # one JSONL corpus: a worker would neither overlap with the embedder nor enforce a deadline
    if workers == 0:
        _init_worker(config)
        for path, known in jobs:
            yield prepare_file(path, known)
        return
    # Even one file goes to a worker: only a separate process can be killed when a parser hangs inside C code.
    yield from parse_in_workers(
        jobs,
        workers,
        _init_pool_worker,
        (config,),
        target,
        lookahead=workers * settings.ingest.queue_files,
        deadline_s=deadline_s,
        lost=lambda path, reason: PreparedFile(path, failure=reason),
        stats=stats if stats is not None else PoolStats(),
    )
