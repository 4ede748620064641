"""The commands as clients of a running `rag serve` (client.server_url or RAG_SERVER_URL set).

Each function takes the parsed arguments and settings of the local command it stands in for and prints the same
kind of output from the server's answers; `--json` prints the server's JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rag.cli.base import EXIT_FAILURE, EXIT_OK
from rag.cli.conversation import converse
from rag.cli.output import emit, printable, trim
from rag.client import RagClient, RemoteAnswer
from rag.config import Settings
from rag.errors import UsageError

UPLOAD_BATCH_BYTES = 20 * 2**20  # under the server's default service.max_upload_mb (50)
UPLOAD_BATCH_FILES = 50


def _client(settings: Settings) -> RagClient:
    return RagClient(settings.client)


def _collection(args: argparse.Namespace, settings: Settings) -> str:
    return getattr(args, "collection", None) or settings.store.collection


def query(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        payload = client.retrieve(
            args.text, _collection(args, settings), args.top_k, args.mode, args.filters, not args.no_rerank
        )

    def human() -> None:
        chunks = payload.get("chunks") or []
        if not chunks:
            print("no chunk matched")
        for c in chunks:  # each chunk's payload fields are flattened into it (rag query --json)
            where = c.get("source_name") or c.get("source")
            page = f" p.{','.join(map(str, c['pages']))}" if c.get("pages") else ""
            stages = " ".join(f"{k}={v:.4f}" for k, v in (c.get("stage_scores") or {}).items())
            print(f"[{c.get('rank')}] {stages}  {printable(str(where))}{page}")
            print(f"    {trim(c.get('text', ''))}")
        print(f"({payload.get('mode')}; via {settings.client.resolved_url})")

    emit(args, payload, human)
    return EXIT_OK


def print_remote_sources(answer: RemoteAnswer) -> None:
    """The sources of a server's answer, with the quoted spans that back it."""
    fields = answer.fields
    if answer.refused:
        reason = fields.get("refusal_reason")
        print(f"(refused: {reason}; best evidence {fields.get('evidence')})" if reason else "(refused)")
        return
    for sentence in fields.get("unsupported") or []:
        print(f"  ⚠ unsupported: {trim(sentence, 160)}")
    if answer.citations:
        print("sources:")
    for c in answer.citations:
        pages = f" p.{','.join(map(str, c['pages']))}" if c.get("pages") else ""
        print(f" *[{c['number']}] {printable(c.get('label') or c.get('source', ''))}{pages}")
        for q in c.get("quotes") or []:
            print(f"      “{trim(q['text'], 160)}”")


def _answer(args: argparse.Namespace, client: RagClient, collection: str, question: str, history: list[Any]) -> Any:
    extra = {"max_tokens": args.max_new_tokens, "temperature": args.temperature, "rerank": not args.no_rerank}
    extra["filters"] = list(args.filters) or None
    extra["retrieval_mode"] = args.mode
    if args.json:
        return client.ask(question, collection, history, **extra)
    answer: RemoteAnswer | None = None
    for item in client.stream(question, collection, history, **extra):
        if isinstance(item, RemoteAnswer):
            answer = item
        else:
            print(item, end="", flush=True)
    print()
    assert answer is not None  # the stream's last item
    print_remote_sources(answer)
    return answer


def ask(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        answer = _answer(args, client, _collection(args, settings), args.question, [])
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
    return EXIT_OK


def chat(args: argparse.Namespace, settings: Settings) -> int:
    collection = _collection(args, settings)
    where = f"{settings.client.resolved_url} (collection {collection})"
    print(f"Answers come from {where}; check the sources.", file=sys.stderr)
    with _client(settings) as client:
        converse(args, lambda question, history: _answer(args, client, collection, question, history))
    return EXIT_OK


def _batches(files: list[Path]) -> list[list[Path]]:
    batches: list[list[Path]] = [[]]
    size = 0
    for f in files:
        bytes_ = f.stat().st_size
        if batches[-1] and (size + bytes_ > UPLOAD_BATCH_BYTES or len(batches[-1]) >= UPLOAD_BATCH_FILES):
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += bytes_
    return [b for b in batches if b]


def ingest(
    args: argparse.Namespace,
    settings: Settings,
    found: list[Path],
    extensions: frozenset[str],
    unreadable: list[str],
) -> int:
    """Upload `found` (the files under `args.paths`, as ingest.pipeline.discover_files lists them) and wait for the
    server's ingest jobs; files of other types are skipped and, with `unreadable` paths, reported."""
    if args.prune:
        raise UsageError(
            "--prune / rag sync work on the server's own files: delete documents through the API "
            "(DELETE /v1/collections/NAME/documents/DOC) or run without client.server_url"
        )
    files = [p for p in found if p.suffix.lower() in extensions]
    skipped = [f"{p}: not a supported file type" for p in found if p.suffix.lower() not in extensions] + unreadable
    if not files:
        raise UsageError(f"no file of a supported type under {', '.join(map(str, args.paths))}")
    collection = _collection(args, settings)
    jobs: list[dict[str, Any]] = []
    with _client(settings) as client:
        if collection not in {c.get("name") for c in client.collections()}:
            client.create_collection(collection)
        for batch in _batches(files):
            queued = client.upload(collection, batch, args.access)

            def progress(job: dict[str, Any]) -> None:
                p = job.get("progress", {})
                if not args.json:
                    print(
                        f"\rjob {job['id']}: {job['state']} {p.get('files_done', 0)}/{p.get('files_total', 0)} "
                        f"files, {p.get('chunks', 0)} chunks",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )

            jobs.append(client.wait(queued["id"], progress))
            if not args.json:
                print(file=sys.stderr)
    failed = {f: r for job in jobs for f, r in (job.get("errors") or {}).items()}
    broken = [job for job in jobs if job.get("state") == "failed"]
    result = {"collection": collection, "files": len(files), "skipped": skipped, "jobs": jobs}

    def human() -> None:
        chunks = sum(job.get("progress", {}).get("chunks", 0) for job in jobs)
        where = f"collection {collection} on {settings.client.resolved_url}"
        print(f"{where}: {len(files)} files uploaded, {chunks} chunks")
        for line in skipped:
            print(f"skipped {line}")
        for f, reason in failed.items():
            print(f"FAILED {f}: {reason}")
        for job in broken:
            print(f"job {job['id']} FAILED: {job.get('error')}")

    emit(args, result, human)
    return EXIT_FAILURE if failed or broken else EXIT_OK


def collections_list(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        rows = client.collections()

    def human() -> None:
        if not rows:
            print(f"no collections on {settings.client.resolved_url}")
        for r in rows:
            embedder = (r.get("embedder") or {}).get("name")
            print(f"{r.get('name')}\t{r.get('chunks')} chunks\tembedder {embedder}\tversion {r.get('index_version')}")

    emit(args, {"server": settings.client.resolved_url, "collections": rows}, human)
    return EXIT_OK
