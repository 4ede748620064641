"""`rag config show`: the resolved settings with their help text."""

from __future__ import annotations

import argparse

from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings
from rag.cli.output import emit


def register(sub: Subcommands, common: Parser) -> None:
    config = sub.add_parser("config", parents=[common], help="inspect settings")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=Parser)
    p = config_sub.add_parser("show", parents=[common], help="print the resolved settings with their help text")
    p.set_defaults(func=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    from rag.config import describe_settings

    settings = load_settings(args)
    rows = describe_settings(settings)
    result = {key: value for key, value, _ in rows}
    result["store.resolved_kind"] = settings.store.resolved_kind

    def human() -> None:
        for key, value, help_text in rows:
            print(f"{key} = {value!s}")
            if help_text:
                print(f"    # {help_text}")
        print(f"# store in use: {settings.store.resolved_kind}")

    emit(args, result, human)
    return EXIT_OK
