"""`rag ui` (the Streamlit chat app) and `rag serve` (the HTTP API): long-running servers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings

HOST_HELP = "address to listen on (0.0.0.0 to serve others)"


def register(sub: Subcommands, common: Parser) -> None:
    p = sub.add_parser("ui", parents=[common], help="open the chat app in the browser (Streamlit)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP API (OpenAI-compatible chat, retrieve, metrics)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    p.add_argument("--workers", type=int, default=4, help="threads for retrieval and generation (default 4)")
    p.set_defaults(func=cmd_serve)


def cmd_ui(args: argparse.Namespace) -> int:
    """Run `streamlit run ui/app.py`; the app reads the same --config/--set after `--`."""
    from rag.errors import require_extra

    settings = load_settings(args)  # a bad --config or --set fails here, with the usual one-line error
    require_extra("streamlit", "ui", "rag ui")
    app = Path(__file__).resolve().parents[2] / "ui" / "app.py"  # rag/cli/ui.py -> the folder holding rag and ui
    forwarded = [*(["--config", args.config] if args.config else []), *(f"--set={o}" for o in args.overrides)]
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port), "--server.address", args.host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--", *forwarded,
    ]  # fmt: skip
    server = settings.client.resolved_url  # the app then asks that server and opens no store itself (ui/remote.py)
    through = f", through the server at {server}" if server else ""
    print(f"chat app on http://{args.host}:{args.port}{through} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Replace this process: a signal to `rag ui` then reaches Streamlit itself, and no server is left orphaned.
    os.execv(sys.executable, command)
    return EXIT_OK  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API (rag.service) under uvicorn; one process owns the store and the models until Ctrl-C."""
    settings = load_settings(args)
    from rag.errors import require_extra

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require_extra(module, "serve", "rag serve")
    import uvicorn

    from ingest.loaders import SUPPORTED_EXTENSIONS
    from ingest.pipeline import ingest_paths
    from rag.privacy import redact_logs
    from rag.service import create_app
    from rag.service.app import uvicorn_options
    from rag.service.jobs import IngestRunner
    from rag.service.telemetry import configure_logging

    # Uploads are ingested by ingest.pipeline, injected here: rag/ itself imports nothing from ingest.
    app = create_app(settings, workers=args.workers, ingest=IngestRunner(ingest_paths, frozenset(SUPPORTED_EXTENSIONS)))
    configure_logging()  # JSON lines with the request id; the app logs each request once
    redact_logs(settings.privacy, ("rag", "uvicorn", "uvicorn.error"), warm=True)  # no personal data in them
    print(f"API on http://{args.host}:{args.port}/v1 (Ctrl-C stops it)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, **uvicorn_options(settings))
    return EXIT_OK
