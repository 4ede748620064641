"""Thumbs up or down on an answer, appended as one JSON line to `<data_dir>/feedback.jsonl`.

Each line holds the question, the answer and its sources, so the file can later be turned into an eval set. The
user's text in it (question, rewritten query, answer, comment) goes through `redact` first: the app passes the
privacy redactor unless privacy.redact_feedback is off, so personal data does not pile up in the file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.types import Answer, source_label

FEEDBACK_FILE = "feedback.jsonl"
# Sessions are threads of one server process: a lock keeps two appends from interleaving.
_write_lock = threading.Lock()


def feedback_record(
    answer: Answer, rating: str, collection: str, comment: str = "", *, redact: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """The line stored for one rating ("up" or "down"); `redact` (rag.privacy) is applied to the free text."""
    if rating not in ("up", "down"):
        raise ValueError(f"rating must be 'up' or 'down', got {rating!r}")
    cited = {c.number for c in answer.citations}
    sources = [
        {
            "number": c.number,
            "chunk_id": c.chunk.id,
            "document_id": c.chunk.document_id,
            "label": source_label(c.chunk),
            "cited": c.number in cited,
        }
        for c in answer.chunks
    ]
    if not answer.chunks:  # refused before a prompt was built: keep the closest chunks the user saw instead
        sources = [
            {"number": None, "chunk_id": c.id, "document_id": c.document_id, "label": source_label(c), "cited": False}
            for c in answer.retrieved
        ]
    clean = redact or (lambda text: text)
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rating": rating,
        "question": clean(answer.question),
        "query": clean(answer.query),
        "answer": clean(answer.text),
        "refused": answer.refused,
        "refusal_reason": answer.refusal_reason,
        "evidence": answer.evidence,
        "sources": sources,
        "collection": collection,
        "model": answer.model,
        "comment": clean(comment) if comment else comment,
    }


def append_feedback(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, default=str)
    with _write_lock, path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
