"""`rag ingest` and `rag sync`: parse, chunk, embed and index files, incrementally."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.cli import remote
from rag.cli.base import EXIT_FAILURE, EXIT_OK, Parser, Subcommands, load_settings, progress_option
from rag.cli.output import emit


def register(sub: Subcommands, common: Parser) -> None:
    progress = progress_option()
    for name, help_text in (
        ("ingest", "parse, chunk, embed and index files (incremental)"),
        ("sync", "ingest and remove documents whose files are gone (ingest --prune)"),
    ):
        p = sub.add_parser(name, parents=[common, progress], help=help_text, description=help_text)
        p.add_argument(
            "paths", nargs="+", type=Path, help="files or folders (a .jsonl corpus is one document per line)"
        )
        p.add_argument("--collection", help="collection name (default: store.collection)")
        if name == "ingest":
            p.add_argument("--prune", action="store_true", help="remove documents whose files are gone")
        p.add_argument("--workers", type=int, help="parse worker processes (0 = in-process)")
        p.add_argument(
            "--engine", choices=["local", "ray"],
            help="'ray': parse as Ray tasks, embed in Ray actors (RAY_ADDRESS or a local Ray); default ingest.engine",
        )  # fmt: skip
        p.add_argument(
            "--access", action="append", default=[], metavar="GROUP",
            help="access group of every document (repeatable); unchanged documents are relabelled without re-embedding",
        )  # fmt: skip
        p.add_argument("--access-rules", type=Path, metavar="YAML", help="path patterns -> groups (see the README)")
        p.set_defaults(func=cmd_ingest, prune=name == "sync" or None)


def cmd_ingest(args: argparse.Namespace) -> int:
    extra = [f"ingest.workers={args.workers}"] if args.workers is not None else []
    if args.engine:
        extra.append(f"ingest.engine={args.engine}")
    settings = load_settings(args, extra)
    if settings.client.resolved_url and args.access_rules:
        from rag.errors import UsageError

        raise UsageError(
            "--access-rules labels documents in a local ingest; through a server, give the groups with --access "
            "(the upload's groups: yours by default)"
        )
    if settings.client.resolved_url:
        from ingest.loaders.formats import SUPPORTED_EXTENSIONS
        from ingest.pipeline import discover_files

        unreadable: list[Any] = []  # the same files a local ingest would read: hidden ones, loops and data_dir out
        found = discover_files(
            args.paths, settings.ingest.include_hidden, exclude=[settings.data_dir], skipped=unreadable
        )
        reasons = [f"{f.path}: {f.reason.removeprefix('skipped: ')}" for f in unreadable]
        return remote.ingest(args, settings, found, SUPPORTED_EXTENSIONS, reasons)
    from ingest.pipeline import ingest_paths
    from ingest.progress import make_progress
    from rag.access.rules import document_access
    from rag.factory import build_embedder, build_store

    access = document_access(settings, args.access, args.access_rules)  # unknown groups fail before any work
    embedder = build_embedder(settings)
    with build_store(settings) as store, make_progress(args.progress) as progress:
        report = ingest_paths(
            args.paths,
            settings,
            store,
            embedder,
            collection=args.collection,
            prune=bool(args.prune),
            progress=progress,
            access=access,
        )

    def human() -> None:
        r = report
        print(
            f"collection {r.collection}: {r.files_seen} files — {r.files_ingested} ingested, "
            f"{r.files_unchanged} unchanged, {r.files_duplicate} duplicate, {r.files_failed} failed"
        )
        if r.chunks_written == 0 and r.documents_removed == 0:
            print("nothing changed: no chunk embedded")
        else:
            print(
                f"{r.documents_ingested} documents, {r.chunks_written} chunks written, "
                f"{r.documents_removed} documents removed (index version {r.index_version})"
            )
        print(
            f"time {r.seconds_total:.1f}s (parse {r.seconds_parse:.1f}s in workers, "
            f"embed {r.seconds_embed:.1f}s, store {r.seconds_store:.1f}s)"
        )
        if r.stages and r.chunks_written:  # how busy each stage was (ingest.pipeline.StageUse)
            p, e, s = r.stages["parse"], r.stages["embed"], r.stages["store"]
            rate = f", {p.pages_per_s} pages/s per worker" if p.pages_per_s else ""
            print(
                f"busy: parse {p.share:.0%} of {p.lanes} workers{rate}, embed {e.share:.0%} ({e.chunks_per_s} "
                f"chunks/s), store {s.share:.0%}; embedder waited {r.waits['embedder_waiting_for_parse']:.1f}s "
                f"for parsing, workers {r.waits['workers_waiting_for_embedder']:.1f}s for the embedder"
            )
        if r.documents_relabelled:
            print(f"{r.documents_relabelled} unchanged documents given new access groups (no re-embedding)")
        if r.documents_missing:
            print(f"{r.documents_missing} documents under these paths no longer exist: run with --prune to remove them")
        for f in r.failures:
            print(f"FAILED {f.path}: {f.reason}")
        for d in r.duplicates:
            print(f"duplicate {d.path}: {d.reason}")
        print(f"report: {r.report_path}")

    emit(args, report.to_dict(), human)
    return EXIT_FAILURE if report.files_failed else EXIT_OK
