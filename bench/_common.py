"""What every bench script reports alike: the machine it ran on, the command that reproduces the run, and the
`--set section.key=value` settings overrides it accepts.

Scripts import it as `bench._common` after putting the repository root first on sys.path (see bench/ingest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

# The environment the figures were measured in (as in the tests): no model hub, no telemetry, no tokenizer threads
# competing with torch's. The reproduce command carries it, so a copied line runs the same way.
OFFLINE_ENV = "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false"


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`, as `rag --set` takes them."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one setting, e.g. --set {example} (repeatable)",
    )


def reproduce_command(script: str, argv: Sequence[str] | None = None) -> str:
    """The shell line that reruns `script` (`bench/x.py`, from the repository root) with this run's arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"{OFFLINE_ENV} python " + shlex.join([script, *args])


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    """The report as one JSON object (`--json`), else as `human` prints it."""
    if as_json:
        print(json.dumps(result))
    else:
        human(result)


def machine_line() -> str:
    """The machine in one line: architecture, cores, Python."""
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def machine_info(**extra: Any) -> dict[str, Any]:
    """The machine for a JSON report: platform, processor, Python, cores, torch and its threads, load at the end."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m_5m_at_end": [round(x, 2) for x in load[:2]] if load else None,
        **extra,
    }
