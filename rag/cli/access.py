"""`rag keys create|list|revoke` (API keys and their groups) and `rag access show|set|limit` (who reads what)."""

from __future__ import annotations

import argparse

from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings
from rag.cli.output import emit, printable


def _groups(value: str) -> list[str]:
    return [g.strip() for g in value.split(",") if g.strip()]


def register(sub: Subcommands, common: Parser) -> None:
    keys = sub.add_parser("keys", parents=[common], help="create, list and revoke API keys (stored hashed)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    p = keys_sub.add_parser("create", parents=[common], help="make a key; it is printed once and never again")
    p.add_argument("--name", required=True, help="who the key is for (unique among active keys)")
    p.add_argument("--groups", type=_groups, default=[], help="comma-separated groups, e.g. hr,finance")
    p.add_argument("--admin", action="store_true", help="sees and may change every document and collection")
    p.set_defaults(func=cmd_keys_create)
    p = keys_sub.add_parser("list", parents=[common], help="every key: name, groups, admin, created, revoked")
    p.set_defaults(func=cmd_keys_list)
    p = keys_sub.add_parser("revoke", parents=[common], help="revoke the active key of NAME (its record stays)")
    p.add_argument("name")
    p.set_defaults(func=cmd_keys_revoke)

    access = sub.add_parser("access", parents=[common], help="document and collection access groups")
    access_sub = access.add_subparsers(dest="access_command", required=True, parser_class=Parser)
    p = access_sub.add_parser("show", parents=[common], help="each document of a collection with its groups")
    p.add_argument("--collection", help="collection name (default: store.collection)")
    p.set_defaults(func=cmd_access_show)
    p = access_sub.add_parser(
        "set", parents=[common], help="give a document new groups in place (no re-embedding; none = public)"
    )
    p.add_argument("document_id", help="the document id, as `rag access show` lists it")
    p.add_argument("--access", dest="access", action="append", default=[], metavar="GROUP", help="repeatable")
    p.add_argument("--collection", help="collection name (default: store.collection)")
    p.set_defaults(func=cmd_access_set)
    p = access_sub.add_parser(
        "limit", parents=[common], help="limit a whole collection to keys in one of GROUPS (others get 403)"
    )
    p.add_argument("--groups", type=_groups, required=True, help="comma-separated groups; '' lifts the limit")
    p.add_argument("--collection", help="collection name (default: store.collection)")
    p.set_defaults(func=cmd_access_limit)


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.access.keys import KeyStore

    token, record = KeyStore(settings.keys_path).create(args.name, args.groups, admin=args.admin)

    def human() -> None:
        role = "admin" if record.admin else f"groups: {', '.join(record.groups) or 'public only'}"
        print(f"key for {record.name} ({role}):")
        print(token)
        print("store it now: it is not shown again (only its hash is kept)")

    emit(args, {"key": token, **record.describe()}, human)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.access.keys import KeyStore

    rows = [k.describe() for k in KeyStore(settings.keys_path).list_keys()]

    def human() -> None:
        if not rows:
            print(f"no keys in {settings.keys_path}: `rag keys create --name NAME --groups ...` makes one")
        for r in rows:
            role = "admin" if r["admin"] else ",".join(r["groups"]) or "-"
            state = f"revoked {r['revoked']}" if r["revoked"] else "active"
            print(f"{printable(r['name']):<20} {role:<30} created {r['created']}  {state}")

    emit(args, rows, human)
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.access.keys import KeyStore

    record = KeyStore(settings.keys_path).revoke(args.name)
    emit(args, record.describe(), lambda: print(f"revoked the key of {record.name} ({record.revoked})"))
    return EXIT_OK


def cmd_access_show(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.collections import describe_collection
    from rag.factory import build_store

    name = args.collection or settings.store.collection
    with build_store(settings) as store:
        info = describe_collection(store, name)
    rows = [{k: d[k] for k in ("document_id", "access", "chunks")} for d in info["document_list"]]
    limit = info["metadata"].get("access_groups")

    def human() -> None:
        print(f"collection {name}: " + (f"limited to {', '.join(limit)}" if limit else "open to every key"))
        for r in rows:
            print(f"  {','.join(r['access']) or '(none: admins only)':<24} {printable(r['document_id'])}")

    emit(args, {"collection": name, "access_groups": limit, "documents": rows}, human)
    return EXIT_OK


def cmd_access_set(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.access.rules import document_access
    from rag.collections import set_document_access
    from rag.errors import UsageError
    from rag.factory import build_store

    name = args.collection or settings.store.collection
    groups = document_access(settings, args.access).groups  # checked against the known groups
    with build_store(settings) as store:
        count = set_document_access(store, name, args.document_id, groups, settings.cache_dir)
    if count == 0:
        raise UsageError(f"collection {name!r} has no document {args.document_id!r}: see `rag access show`")
    shown = ", ".join(groups) or "public"
    emit(
        args,
        {"collection": name, "document_id": args.document_id, "access": list(groups) or ["public"], "chunks": count},
        lambda: print(f"{printable(args.document_id)}: {count} chunks now readable by {shown} (no re-embedding)"),
    )
    return EXIT_OK


def cmd_access_limit(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from rag.access.rules import document_access
    from rag.collections import set_collection_access
    from rag.factory import build_store

    name = args.collection or settings.store.collection
    groups = document_access(settings, args.groups).groups
    with build_store(settings) as store:
        set_collection_access(store, name, groups)
    shown = f"keys in {', '.join(groups)} (and admins)" if groups else "every key"
    result = {"collection": name, "access_groups": list(groups)}
    emit(args, result, lambda: print(f"collection {name}: open to {shown}"))
    return EXIT_OK
