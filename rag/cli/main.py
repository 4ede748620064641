"""The `rag` parser, assembled from one module per command group, and the dispatch that maps errors to exit codes.

Heavy libraries (torch, transformers, unstructured) are imported inside the command bodies so that `rag --help`
answers instantly.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from rag.cli import access, collections, config, finetune, ingest, models, query, ui
from rag.cli import eval as eval_commands
from rag.cli.base import EXIT_FAILURE, Parser, common_options
from rag.errors import RagError

# In `rag --help` order. A new command group is one module with `register(sub, common)`, plus one entry here.
COMMAND_GROUPS = (ingest, query, ui, config, collections, access, finetune, models, eval_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rag", description="Private RAG over your documents.", parents=[common_options()])
    common = common_options(sub=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "sub_overrides", [])]
    try:
        code: int = args.func(args)
        return code
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is reported, with the traceback on --debug
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_FAILURE
