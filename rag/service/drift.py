"""Drift signals over a sliding window of answers, compared with everything since the server started.

Refusal rate, mean evidence score, the share of queries far from every chunk (best evidence below
service.far_evidence: questions the collection does not cover), the share of checked sentences found unsupported,
and the thumbs-down rate of the chat app's feedback file (`<data_dir>/feedback.jsonl`, one JSON object a line with
"rating": "up" | "down", written by ui/feedback.py). A window moving away from the since-start figures is the alert.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings

log = logging.getLogger("rag.service.drift")
FEEDBACK_FILE = "feedback.jsonl"  # the name ui/feedback.py writes under the data folder


@dataclass(frozen=True)
class Observation:
    refused: bool
    evidence: float | None
    checked: int  # sentences the checker looked at (generated answers with answer.verify on)
    unsupported: int


def _summary(rows: list[Observation], far_below: float) -> dict[str, Any]:
    scored = [r.evidence for r in rows if r.evidence is not None]
    checked = sum(r.checked for r in rows)
    far = sum(r.evidence is None or r.evidence < far_below for r in rows)
    return {
        "answers": len(rows),
        "refusal_rate": sum(r.refused for r in rows) / len(rows) if rows else None,
        "mean_evidence": sum(scored) / len(scored) if scored else None,
        # A query with no evidence score retrieved nothing at all: as far as it gets.
        "far_query_share": far / len(rows) if rows else None,
        "unsupported_sentence_rate": sum(r.unsupported for r in rows) / checked if checked else None,
    }


class DriftMonitor:
    """Keeps the last `window` answers and running totals; reads the feedback file when asked (cached by size)."""

    def __init__(self, window: int, far_below: float, feedback_file: Path) -> None:
        self.window = window
        self.far_below = far_below
        self.feedback_file = feedback_file
        self._recent: deque[Observation] = deque(maxlen=window)
        self._all: list[int] = [0, 0, 0, 0, 0]  # answers, refused, far, checked, unsupported
        self._evidence_sum = 0.0
        self._evidence_n = 0
        self._lock = threading.Lock()
        self._feedback_key: tuple[int, int] | None = None
        self._feedback: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftMonitor:
        """The monitor `service.*` describes; feedback from service.feedback_file, else `<data_dir>/feedback.jsonl`."""
        service = settings.service
        feedback = service.feedback_file or settings.data_dir / FEEDBACK_FILE
        return cls(service.drift_window, service.far_evidence, feedback)

    def observe(self, answer: Any) -> None:
        support = tuple(answer.support)
        row = Observation(
            refused=bool(answer.refused),
            evidence=answer.evidence,
            checked=len(support),
            unsupported=sum(1 for s in support if not s.supported),
        )
        with self._lock:
            self._recent.append(row)
            self._all[0] += 1
            self._all[1] += row.refused
            self._all[2] += row.evidence is None or row.evidence < self.far_below
            self._all[3] += row.checked
            self._all[4] += row.unsupported
            if row.evidence is not None:
                self._evidence_sum += row.evidence
                self._evidence_n += 1

    def window_summary(self) -> dict[str, Any]:
        with self._lock:
            rows = list(self._recent)
        return _summary(rows, self.far_below)

    def since_start(self) -> dict[str, Any]:
        with self._lock:
            answers, refused, far, checked, unsupported = self._all
            mean = self._evidence_sum / self._evidence_n if self._evidence_n else None
        return {
            "answers": answers,
            "refusal_rate": refused / answers if answers else None,
            "mean_evidence": mean,
            "far_query_share": far / answers if answers else None,
            "unsupported_sentence_rate": unsupported / checked if checked else None,
        }

    def feedback(self) -> dict[str, Any]:
        """Thumbs up/down over the last `window` ratings of the feedback file (re-read only when it changed)."""
        path = self.feedback_file
        try:
            stat = path.stat()
        except FileNotFoundError:
            return {"file": str(path), "ratings": 0, "thumbs_down_rate": None}
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key == self._feedback_key:
                return dict(self._feedback)
        ratings: deque[str] = deque(maxlen=self.window)
        bad_lines = 0
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rating = json.loads(line).get("rating")
                except (ValueError, AttributeError):
                    bad_lines += 1
                    continue
                if rating in ("up", "down"):
                    ratings.append(rating)
        if bad_lines:
            log.warning("%s: %d line(s) are not JSON objects and were skipped", path, bad_lines)
        out = {
            "file": str(path),
            "ratings": len(ratings),
            "thumbs_down_rate": sum(r == "down" for r in ratings) / len(ratings) if ratings else None,
            "unreadable_lines": bad_lines,
        }
        with self._lock:
            self._feedback_key, self._feedback = key, out
        return dict(out)

    def snapshot(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "far_evidence_below": self.far_below,
            "recent": self.window_summary(),
            "since_start": self.since_start(),
            "feedback": self.feedback(),
        }
