"""The terminal conversation of `rag chat`, the same whether answers come from a local pipeline or a server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rag.errors import UsageError

# Earlier (question, answer text) pairs, oldest first.
History = list[tuple[str, str]]


def converse(args: argparse.Namespace, answer: Callable[[str, History], Any]) -> None:
    """Read questions from stdin until /exit, /quit or end of input; /new forgets the history.

    `answer(question, history)` answers one question and prints it (or, with --json, returns it unprinted: it is
    printed here as one JSON line). A bad question (UsageError, e.g. an unknown filter value) prints its error and
    the conversation goes on.
    """
    print("Ask a question. /new starts a new conversation, /exit (or Ctrl-D) quits.", file=sys.stderr)
    history: History = []
    while True:
        try:
            question = input("> " if sys.stdin.isatty() else "").strip()
        except EOFError:
            break
        if not question:
            continue
        if question in ("/exit", "/quit"):
            break
        if question == "/new":
            history.clear()
            print("(new conversation)", file=sys.stderr)
            continue
        try:
            result = answer(question, history)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_dict(), default=str), flush=True)
        history.append((question, result.text))
