"""BEIR-style JSONL corpora: one ParsedDocument per record, straight from JSON (never through unstructured)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ingest.documents import TITLE, Element, ParsedDocument
from ingest.loaders.errors import os_error_reason
from rag.errors import DocumentError


def load_jsonl(path: Path, resolved: Path) -> list[ParsedDocument]:
    """One ParsedDocument per line of a BEIR-style corpus: {"_id"|"id", "title"?, "text", "metadata"?}.

    Records never go through unstructured: SciFact's 5,183 records load in about 0.2 s.
    """
    display = str(path)
    documents: list[ParsedDocument] = []
    first_line_of: dict[str, int] = {}
    try:
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                record = _parse_record(display, line_number, raw)
                record_id = _record_id(display, line_number, record)
                if record_id in first_line_of:
                    raise DocumentError(
                        display,
                        f"line {line_number}: record id {record_id!r} repeats line "
                        f"{first_line_of[record_id]}: ids must be unique",
                    )
                first_line_of[record_id] = line_number
                documents.append(_record_document(display, resolved, line_number, record_id, record))
    except OSError as e:
        raise DocumentError(display, os_error_reason(e)) from e
    if not documents:
        raise DocumentError(display, "no records (the JSONL file has only blank lines)")
    return documents


def _parse_record(display: str, line_number: int, raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except UnicodeDecodeError as e:
        raise DocumentError(display, f"line {line_number}: not UTF-8 text: convert the file to UTF-8") from e
    except json.JSONDecodeError as e:
        raise DocumentError(
            display, f"line {line_number}: malformed JSON ({e.msg} at column {e.colno}): fix or remove the line"
        ) from e
    if not isinstance(record, dict):
        raise DocumentError(
            display, f"line {line_number}: expected a JSON object per line, got {type(record).__name__}"
        )
    return record


def _record_id(display: str, line_number: int, record: dict[str, Any]) -> str:
    raw_id = record.get("_id", record.get("id"))
    if raw_id is None or isinstance(raw_id, (dict, list)) or str(raw_id) == "":
        raise DocumentError(
            display,
            f"line {line_number}: record has no '_id' or 'id' field (BEIR corpus lines look like "
            '{"_id": ..., "title": ..., "text": ...})',
        )
    return str(raw_id)


def _record_document(
    display: str, resolved: Path, line_number: int, record_id: str, record: dict[str, Any]
) -> ParsedDocument:
    if "text" not in record:
        found = ", ".join(sorted(record)) or "none"
        raise DocumentError(
            display,
            f"line {line_number}: record has no 'text' field (expected BEIR corpus lines "
            f'{{"_id", "title", "text"}}; fields found: {found})',
        )
    text, title = record["text"], record.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise DocumentError(display, f"line {line_number}: 'text' and 'title' must be strings")
    elements: list[Element] = []
    if title.strip():
        elements.append(Element(text=title.strip(), category=TITLE, depth=0))
    elements.extend(Element(text=paragraph, category="NarrativeText") for paragraph in _paragraphs(text))
    if not elements:
        raise DocumentError(display, f"line {line_number}: record {record_id!r} has no text and no title: remove it")
    metadata = record.get("metadata")
    extra = {key: value for key, value in record.items() if key not in {"_id", "id", "title", "text", "metadata"}}
    merged: dict[str, Any] = {**extra, **(metadata if isinstance(metadata, dict) else {})}
    canonical = json.dumps(record, sort_keys=True)
    return ParsedDocument(
        document_id=f"{resolved}#{record_id}",
        source=str(resolved),
        file_type="jsonl",
        content_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        elements=tuple(elements),
        title=title.strip() or None,
        record_id=record_id,
        metadata=merged,
    )


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]
