"""`rag models list`: the models trained here, with their validation figures."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings
from rag.cli.output import emit


def register(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser("models", parents=[common], help="models trained here")
    p.add_argument("models_command", choices=["list"])
    p.set_defaults(func=cmd_models_list)


def cmd_models_list(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.registry import list_models

    cards = list_models(settings.models_dir)

    def human() -> None:
        if not cards:
            print(f"no models in {settings.models_dir}")
        for c in cards:
            val = c.metrics.get("val_ndcg10")
            print(
                f"{c.name}\t{c.kind}\tval nDCG@10 {val:.4f}\tfrom {c.base_model}\tdata {c.data_hash}"
                if val is not None
                else f"{c.name}\t{c.kind}"
            )

    emit(args, [asdict(c) for c in cards], human)
    return EXIT_OK
