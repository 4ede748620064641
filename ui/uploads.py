"""Uploaded files: where they are kept (`<data_dir>/uploads/<collection>/`) and what became of each at ingest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.pipeline import IngestReport, ProgressEvent
from rag.errors import DocumentError

_UNSAFE = re.compile(r"[^\w.\- ]+")
# Common file systems allow 255 bytes per name; leave room for the ".<name>.part" of a write in progress.
_MAX_NAME_BYTES = 200


def uploads_dir(data_dir: Path, collection: str) -> Path:
    return data_dir / "uploads" / collection


def safe_filename(name: str) -> str:
    """A browser-supplied name reduced to one harmless path component ('../../x.md' -> 'x.md').

    A name that had to change (unsafe characters, too long) gets a digest of the original, so two different
    names never become one file ('report?.txt' and 'report*.txt' would both be 'report_.txt').
    """
    base = Path(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip(" .") or "upload"
    if cleaned == base and len(base.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES:
        return cleaned
    digest = hashlib.sha256(base.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    suffix = Path(cleaned).suffix if len(Path(cleaned).suffix) <= 16 else ""
    stem = cleaned[: len(cleaned) - len(suffix)] if suffix else cleaned
    room = _MAX_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .") or "upload"
    return f"{stem}-{digest}{suffix}"


def save_upload(folder: Path, name: str, data: bytes) -> Path:
    """Write one uploaded file; a later upload of the same name replaces it (and so re-indexes the document)."""
    path = folder / safe_filename(name)
    tmp = path.with_name(f".{path.name}.part")  # hidden: ingest skips it if a crash leaves it behind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        raise DocumentError(name, f"cannot save the upload as {path}: {e.strerror or e}") from e
    return path.resolve()


def is_upload(source: str, data_dir: Path, collection: str) -> bool:
    """Whether a document's source is a file this app saved (so deleting the document may delete the file)."""
    folder = uploads_dir(data_dir, collection).resolve()
    return Path(source).resolve().parent == folder


@dataclass(frozen=True)
class FileResult:
    name: str
    status: str  # "ingested", "unchanged", "duplicate" or "failed"
    detail: str = ""


def file_results(paths: Sequence[Path], report: IngestReport) -> list[FileResult]:
    """What happened to each file of one `ingest_paths` run, from its report."""
    failed = {f.path: f.reason for f in report.failures}
    duplicate = {f.path: f.reason for f in report.duplicates}
    ingested = set(report.ingested)
    results = []
    for path in paths:
        key = str(path.resolve())
        if key in failed:
            results.append(FileResult(path.name, "failed", failed[key]))
        elif key in duplicate:
            results.append(FileResult(path.name, "duplicate", duplicate[key]))
        elif key in ingested:
            results.append(FileResult(path.name, "ingested"))
        else:
            results.append(FileResult(path.name, "unchanged", "same content as the indexed version"))
    return results


def progress_text(event: ProgressEvent) -> str:
    """'2 of 5 files · 34 chunks · 3.1 chunks/s · about 12 s left · notes.md'."""
    parts = [f"{event.files_done} of {event.files_total} files", f"{event.chunks_written} chunks"]
    if event.elapsed_s > 0 and event.chunks_written:
        parts.append(f"{event.chunks_written / event.elapsed_s:.1f} chunks/s")
    if 0 < event.files_done < event.files_total:
        left = event.elapsed_s / event.files_done * (event.files_total - event.files_done)
        parts.append(f"about {left:.0f} s left")
    if event.current:
        inside = f" ({100 * event.file_bytes_done // event.file_bytes_total}%)" if event.file_bytes_total else ""
        parts.append(Path(event.current).name + inside)
    return " · ".join(parts)
