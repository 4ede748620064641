"""Progress of long eval loops on stderr: a tqdm bar with rate and ETA on a terminal, a line every few seconds in logs.

The same modes as ingest's display (ingest/progress.py): auto, bar, plain, none.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["CountProgress"]

# Plain lines at most this often, so a long run's log stays readable (as ingest's).
PLAIN_INTERVAL_S = 2.0


class CountProgress:
    """`update(done)` as work completes; `close()` (or a `with` block) when it ends."""

    def __init__(self, mode: str, total: int, *, initial: int = 0, unit: str = "q", desc: str = "eval") -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        if mode not in ("bar", "plain", "none"):
            raise ValueError(f"progress mode must be auto, bar, plain or none, got {mode!r}")
        self.mode, self.total, self.unit, self.desc = mode, total, unit, desc
        self.done = self.initial = initial
        self.started = self.last = time.monotonic()
        self.bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True, desc=desc)

    def update(self, done: int, note: str = "") -> None:
        previous, self.done = self.done, done
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(done - previous)
            return
        now = time.monotonic()
        if self.mode != "plain" or (now - self.last < PLAIN_INTERVAL_S and done < self.total):
            return
        self.last = now
        rate = (done - self.initial) / (now - self.started) if now > self.started else 0.0
        eta = time.strftime("%H:%M:%S", time.gmtime((self.total - done) / rate)) if rate > 0 else "-"
        extra = f" {note}" if note else ""
        print(
            f"progress {self.desc} {self.unit}={done}/{self.total} rate={rate:.2f}{self.unit}/s eta={eta}{extra}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
