"""How commands print: one JSON result with --json, human lines otherwise; text trimmed and escaped for a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def emit(args: argparse.Namespace, result: Any, human: Callable[[], None]) -> None:
    """Print `result` as JSON with --json, else call `human` to print it for people."""
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        human()


def trim(text: str, width: int = 300) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def printable(text: str) -> str:
    """`text` with control characters escaped (a newline in a file name prints as \\n, on one line)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def print_sources(answer: Any) -> None:
    """After a streamed answer: its sources (cited ones starred), the sentences checked out, and timings on stderr."""
    from rag.types import source_label

    if answer.refused:
        if answer.refusal_reason == "evidence":
            print(f"(refused: best evidence {answer.evidence:.3f} is under answer.min_evidence)")
        elif answer.refusal_reason == "answerability":
            print(f"(refused: no sentence of the sources answers it well enough, best {answer.answerability:.3f})")
        if answer.removed:
            print("(every generated sentence failed the check against the sources:)")
            for s in answer.removed:
                print(f"  ✗ {trim(s.text, 160)} — {s.reason}")
        if answer.retrieved:
            print("closest passages found:")
            for c in answer.retrieved[:3]:
                print(f"  - {source_label(c)}: {trim(c.text, 160)}")
        return
    for s in answer.unsupported:
        print(f"  ⚠ unsupported: {trim(s.text, 160)} — {s.reason}")
    for s in answer.removed:
        print(f"  ✗ removed: {trim(s.text, 160)} — {s.reason}")
    cited = {c.number for c in answer.citations}
    if answer.chunks:
        print("sources:")
    for c in answer.chunks:
        mark = "*" if c.number in cited else " "
        print(f" {mark}[{c.number}] {source_label(c.chunk)}" + (" (truncated)" if c.truncated else ""))
    t = answer.timings_ms
    note = " (cached)" if answer.cached else ""
    if answer.dropped_citations:
        note += f"; {answer.dropped_citations} citation(s) to unknown sources dropped"
    if answer.mode == "extract":
        print(
            f"(quoted from the sources, no generator; retrieve {t.get('retrieve', 0):.0f} ms, "
            f"quote {t.get('extract', 0):.0f} ms)",
            file=sys.stderr,
        )
        return
    checked = (
        f", {len(answer.support)} sentence(s) checked, {len(answer.unsupported)} unsupported" if answer.support else ""
    )
    print(
        f"({answer.model}: {answer.prompt_tokens} prompt + {answer.completion_tokens} answer tokens; "
        f"retrieve {t.get('retrieve', 0):.0f} ms, first token {t.get('ttft', 0):.0f} ms, "
        f"generate {t.get('generate', 0):.0f} ms{checked}{note})",
        file=sys.stderr,
    )
