"""Progress display for long ingests: a tqdm bar on a terminal, plain lines in logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ingest.pipeline import ProgressEvent

ProgressCallback = Callable[[ProgressEvent], None]
# Plain lines at most this often, so a 100k-file log stays readable.
PLAIN_INTERVAL_S = 2.0


def _inside(event: ProgressEvent) -> str:
    """' file=42%' while a big file is streamed, else nothing."""
    if event.file_bytes_total <= 0:
        return ""
    return f" file={100 * event.file_bytes_done // event.file_bytes_total}%"


def _eta(event: ProgressEvent) -> str:
    if event.files_done == 0 or event.files_done >= event.files_total:
        return "-"
    left = event.elapsed_s / event.files_done * (event.files_total - event.files_done)
    return time.strftime("%H:%M:%S", time.gmtime(left))


@contextmanager
def make_progress(mode: str) -> Iterator[ProgressCallback | None]:
    """`auto`: a bar on a terminal, lines otherwise; `bar`, `plain` or `none`."""
    if mode == "none":
        yield None
        return
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"
    if mode == "plain":
        last = [0.0]

        def plain(event: ProgressEvent) -> None:
            now = time.monotonic()
            final = event.files_done >= event.files_total
            if not final and (event.files_done > 0 or event.file_bytes_total) and now - last[0] < PLAIN_INTERVAL_S:
                return
            last[0] = now
            rate = event.chunks_written / event.elapsed_s if event.elapsed_s > 0 else 0.0
            print(
                f"progress files={event.files_done}/{event.files_total}{_inside(event)} "
                f"chunks={event.chunks_written} rate={rate:.1f}chunks/s eta={_eta(event)}",
                file=sys.stderr,
                flush=True,
            )

        yield plain
        return
    from tqdm import tqdm

    bar: Any = None

    def update(event: ProgressEvent) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.files_total, unit="file", file=sys.stderr, dynamic_ncols=True)
        bar.n = event.files_done
        rate = event.chunks_written / event.elapsed_s if event.elapsed_s > 0 else 0.0
        bar.set_postfix_str(f"{event.chunks_written} chunks, {rate:.0f} chunks/s{_inside(event)}", refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
