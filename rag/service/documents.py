"""Uploaded files and declared collections of `rag serve`, kept under the data folder.

Uploads are stored at `<data_dir>/uploads/<collection>/<file name>` (the chunks' `source`), so a collection can be
re-indexed from them (an embedder upgrade) and a document deleted by its file name. A collection created over
HTTP before any upload is recorded in `<data_dir>/service/collections.json`; the store collection itself is
created by its first ingest, which measures BM25's mean chunk length on real chunks.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.store.base import VectorStore, validate_collection_name

UPLOADS = "uploads"


class UploadError(Exception):
    """An upload the API refuses: HTTP status and the reason (413 too large, 415 unknown type, 400 bad name)."""

    def __init__(self, status: int, message: str, param: str = "files") -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def check_file_name(name: str | None, extensions: frozenset[str]) -> str:
    """The plain file name of an upload; 400 for a path or hidden name, 415 for a type ingest cannot read."""
    raw = (name or "").replace("\\", "/")
    base = raw.rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or base.startswith(".") or base != raw.strip():
        raise UploadError(
            400, f"files: {name!r} is not a plain file name (no folders, not hidden): rename the file and upload it"
        )
    ext = Path(base).suffix.lower()
    if ext not in extensions:
        shown = ext or "(no extension)"
        raise UploadError(
            415, f"files: {base}: unsupported file type {shown} (supported: {' '.join(sorted(extensions))})"
        )
    return base


ACCESS_FILE = ".access.json"  # hidden: files() lists only uploads


class Library:
    """Declared collections and uploaded files; safe across threads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / UPLOADS
        self.registry = data_dir.resolve() / "service" / "collections.json"
        self._lock = threading.Lock()

    # -- collections ------------------------------------------------------------------
    def _declared(self) -> dict[str, dict[str, Any]]:
        if not self.registry.exists():
            return {}
        data = json.loads(self.registry.read_text(encoding="utf-8"))
        return dict(data) if isinstance(data, dict) else {}

    def _write(self, declared: dict[str, dict[str, Any]]) -> None:
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(declared, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.registry)

    def declare(self, name: str) -> dict[str, Any]:
        validate_collection_name(name)
        with self._lock:
            declared = self._declared()
            entry = declared.setdefault(name, {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self._write(declared)
        self.folder(name).mkdir(parents=True, exist_ok=True)
        return entry

    def declared(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._declared()

    def forget(self, name: str) -> None:
        """Drop the declaration and every uploaded file of the collection."""
        with self._lock:
            declared = self._declared()
            if declared.pop(name, None) is not None:
                self._write(declared)
        folder = self.folder(name)
        if folder.is_dir():
            shutil.rmtree(folder)

    def exists(self, store: VectorStore, name: str) -> bool:
        return store.collection_exists(name) or name in self.declared()

    def names(self, store: VectorStore) -> list[str]:
        return sorted(set(store.list_collections()) | set(self.declared()))

    # -- files ------------------------------------------------------------------------
    def folder(self, collection: str) -> Path:
        return self.root / validate_collection_name(collection)

    def files(self, collection: str) -> list[Path]:
        folder = self.folder(collection)
        return (
            sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
        )

    def save(self, collection: str, name: str, data_path: Path) -> Path:
        """Move a received temporary file into place under its name (replacing an earlier upload of that name)."""
        folder = self.folder(collection)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        os.replace(data_path, target)
        return target

    def set_groups(self, collection: str, names: Sequence[str], groups: Sequence[str]) -> None:
        """Record the access groups uploads were given (`.access.json` beside them): every later job on the
        collection (re-index, rebuild, retry) labels them the same, never public by default."""
        path = self.folder(collection) / ACCESS_FILE
        with self._lock:
            recorded = self._groups(path)
            for name in names:
                recorded[name] = sorted(groups)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)

    def groups(self, collection: str) -> dict[str, list[str]]:
        """Uploaded file name -> its access groups (files uploaded without groups are not listed)."""
        with self._lock:
            return self._groups(self.folder(collection) / ACCESS_FILE)

    @staticmethod
    def _groups(path: Path) -> dict[str, list[str]]:
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): [str(g) for g in v] for k, v in data.items()} if isinstance(data, dict) else {}

    def staging(self) -> Path:
        """Where uploads are written while they arrive (same file system, so moving them in place is a rename)."""
        path = self.root / ".incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def name_of(self, document_id: str) -> str:
        """A document as the API shows it: the file name for uploads (plus '#record' of a JSONL line), else its id."""
        path, sep, record = document_id.partition("#")
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return document_id
        return str(Path(*rel.parts[1:])) + sep + record if len(rel.parts) > 1 else document_id


def list_documents(store: VectorStore, library: Library, collection: str) -> list[dict[str, Any]]:
    """The collection's documents (chunk counts from the store) and uploaded files not (yet) indexed."""
    documents: dict[str, dict[str, Any]] = {}
    if store.collection_exists(collection):
        fields = ["document_id", "source", "file_type", "content_hash", "ingested_at", "chunk_count"]
        for _, payload in store.scroll(collection, fields=fields):
            doc_id = str(payload.get("document_id"))
            row = documents.get(doc_id)
            if row is None:
                source = str(payload.get("source"))
                row = documents[doc_id] = {
                    "document_id": doc_id,
                    "name": library.name_of(doc_id),
                    "source": source,
                    "file_type": payload.get("file_type"),
                    "content_hash": payload.get("content_hash"),
                    "ingested_at": payload.get("ingested_at"),
                    "chunks": 0,
                    "chunk_count": payload.get("chunk_count"),
                    "indexed": True,
                }
            row["chunks"] += 1
    for row in documents.values():  # a document is whole when the store holds all its chunks (ingest/pipeline.py)
        row["complete"] = row["chunks"] == row.pop("chunk_count")
    indexed_sources = {row["source"] for row in documents.values()}
    for path in library.files(collection):
        if str(path) not in indexed_sources:
            documents[str(path)] = {
                "document_id": None, "name": path.name, "source": str(path), "file_type": path.suffix.lstrip("."),
                "chunks": 0, "indexed": False, "complete": False,
            }  # fmt: skip
    return sorted(documents.values(), key=lambda r: str(r["name"]))


def find_document(store: VectorStore, library: Library, collection: str, doc: str) -> tuple[list[str], Path | None]:
    """The document ids a `{doc}` path segment names (an uploaded file's name, or a document id) and its upload."""
    upload = library.folder(collection) / doc if "/" not in doc and doc not in (".", "..") else None
    if upload is not None and not upload.is_file():
        upload = None
    ids: list[str] = []
    if store.collection_exists(collection):
        source = str(upload) if upload is not None else None
        for _, payload in store.scroll(collection, fields=["document_id", "source"]):
            doc_id = str(payload.get("document_id"))
            if (doc_id == doc or (source is not None and payload.get("source") == source)) and doc_id not in ids:
                ids.append(doc_id)
    return ids, upload
