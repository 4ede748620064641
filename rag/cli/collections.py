"""`rag collections list|describe|delete`: what is indexed, and removing it."""

from __future__ import annotations

import argparse
import sys

from rag.cli import remote
from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings
from rag.cli.output import emit, printable
from rag.errors import UsageError


def register(sub: Subcommands, common: Parser) -> None:
    coll = sub.add_parser("collections", parents=[common], help="list, describe or delete collections")
    coll_sub = coll.add_subparsers(dest="collections_command", required=True, parser_class=Parser)
    p = coll_sub.add_parser("list", parents=[common], help="collections with their chunk counts")
    p.set_defaults(func=cmd_collections_list)
    p = coll_sub.add_parser("describe", parents=[common], help="metadata and per-document counts")
    p.add_argument("name")
    p.add_argument("--documents", action="store_true", help="list every document")
    p.set_defaults(func=cmd_collections_describe)
    p = coll_sub.add_parser("delete", parents=[common], help="delete a collection and its chunks")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_collections_delete)


def cmd_collections_list(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if settings.client.resolved_url:
        return remote.collections_list(args, settings)
    from rag.collections import collection_summaries
    from rag.factory import build_store

    with build_store(settings) as store:
        rows = collection_summaries(store)

    def human() -> None:
        if not rows:
            print(f"no collections ({settings.store.resolved_kind} store)")
        for r in rows:
            print(f"{r['name']}\t{r['chunks']} chunks\tembedder {r['embedder']}\tversion {r['index_version']}")

    emit(args, {"backend": settings.store.resolved_kind, "collections": rows}, human)
    return EXIT_OK


def cmd_collections_describe(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.collections import describe_collection
    from rag.factory import build_store

    with build_store(settings) as store:
        info = describe_collection(store, args.name)

    def human() -> None:
        meta = info["metadata"]
        print(f"collection {info['name']} ({info['backend']}): {info['documents']} documents, {info['chunks']} chunks")
        print(f"embedder: {meta.get('embedder')}")
        print(f"sparse:   {meta.get('sparse')}")
        print(f"chunking: {meta.get('chunking')}")
        print(
            f"index version {meta.get('index_version')}, created {meta.get('created_at')}, "
            f"updated {meta.get('updated_at', '-')}"
        )
        print("chunks by file type: " + ", ".join(f"{k} {v}" for k, v in info["chunks_by_file_type"].items()))
        if args.documents:
            for d in info["document_list"]:
                print(f"  {d['chunks']:5d}  {printable(d['source'])}")

    if not args.documents and args.json:
        info = {k: v for k, v in info.items() if k != "document_list"}
    emit(args, info, human)
    return EXIT_OK


def cmd_collections_delete(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.factory import build_store

    with build_store(settings) as store:
        if not store.collection_exists(args.name):
            from rag.errors import CollectionNotFoundError

            raise CollectionNotFoundError(f"collection {args.name!r} does not exist")
        chunks = store.count(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    f"deleting collection {args.name!r} ({chunks} chunks) needs --yes when not interactive"
                )
            answer = input(f"delete collection {args.name!r} with {chunks} chunks? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not deleted")
                return EXIT_OK
        from rag.collections import delete_collection

        delete_collection(store, args.name, settings.cache_dir)
    emit(args, {"deleted": args.name, "chunks": chunks}, lambda: print(f"deleted {args.name} ({chunks} chunks)"))
    return EXIT_OK
