"""The `rag` command: each subcommand loads settings, builds components, calls one library function, prints.

`main.py` assembles the parser and dispatches; `base.py` and `output.py` hold what commands share; every other
module is one command group owning its parser (`register`) and its bodies (`cmd_*`).
"""

from rag.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
