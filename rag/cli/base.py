"""What every command module shares: the parser class, the common options, exit codes, argument types and settings.

A command module imports from here and from `rag.cli.output`, never from `rag.cli.main` (which imports them all).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TypeAlias

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

MODES = ["hybrid", "dense", "sparse"]
PROGRESS = ["auto", "bar", "plain", "none"]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we want, with one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# What `add_subparsers` returns; a command module's `register(sub, common)` adds its parsers to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def common_options(sub: bool = False) -> Parser:
    """The options every command takes, before (`rag --config gpu ask`) or after the subcommand.

    A subcommand's copy leaves what it was not given untouched (argparse.SUPPRESS) and collects its --set in
    `sub_overrides`, so `rag --config gpu config show` keeps the profile and both --set lists count (main merges).
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    common = Parser(add_help=False)
    common.add_argument(
        "--config", help="YAML settings file, or a profile name in rag/configs/ (default, test, gpu)", **unset
    )
    common.add_argument(
        "--set",
        dest="sub_overrides" if sub else "overrides",
        action="append",
        default=argparse.SUPPRESS if sub else [],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set retrieval.top_k=5 (repeatable)",
    )
    common.add_argument("--json", action="store_true", help="print one machine-readable JSON result", **unset)
    common.add_argument("--debug", action="store_true", help="print tracebacks on errors", **unset)
    return common


def retrieval_options() -> Parser:
    """--collection, --mode, --filter and --no-rerank: the options of every command that searches a collection."""
    p = Parser(add_help=False)
    p.add_argument("--collection", help="collection name (default: store.collection)")
    p.add_argument("--mode", choices=MODES)
    p.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="payload filter: field=value, field=a,b (any), field^=prefix, !field=value (repeatable)",
    )
    p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder even when one is configured")
    return p


def progress_option() -> Parser:
    """--progress, for commands that show long work on stderr."""
    p = Parser(add_help=False)
    p.add_argument(
        "--progress",
        choices=PROGRESS,
        default="auto",
        help="progress display on stderr (auto: a bar on a terminal, lines otherwise)",
    )
    return p


def top_k(text: str) -> int:
    """--top-k: a count from 1 to 1000 (0 or a negative number is bad usage, not the default or a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 1 to 1000")
    return value


def load_settings(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    """The settings of --config and every --set, then `extra` (a command's own options as settings)."""
    from rag.config import load_settings as load
    from rag.privacy import configure_logging

    settings = load(args.config, [*args.overrides, *extra])
    configure_logging(settings.privacy)  # warnings on stderr, personal data redacted (privacy.redact_logs)
    return settings
