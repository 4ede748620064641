"""`rag query`, `rag ask` and `rag chat`: retrieve chunks, answer one question, or hold a conversation."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rag.cli import remote
from rag.cli.base import EXIT_OK, Parser, Subcommands, load_settings, retrieval_options, top_k
from rag.cli.conversation import converse
from rag.cli.output import emit, print_sources, trim


def register(sub: Subcommands, common: Parser) -> None:
    retrieval = retrieval_options()
    p = sub.add_parser("query", parents=[common, retrieval], help="retrieve chunks for a question")
    p.add_argument("text", help="the query")
    p.add_argument("--top-k", type=top_k, help="chunks returned (1 to 1000; default retrieval.top_k)")
    p.set_defaults(func=cmd_query)

    for name, help_text in (
        ("ask", "answer a question from the documents, with citations"),
        ("chat", "a conversation in the terminal; follow-ups use the history"),
    ):
        p = sub.add_parser(name, parents=[common, retrieval], help=help_text, description=help_text)
        if name == "ask":
            p.add_argument("question", help="the question")
        p.add_argument("--max-new-tokens", type=int, help="longest answer in tokens")
        p.add_argument("--temperature", type=float, help="0 = greedy (default)")
        p.add_argument("--no-cache", action="store_true", help="generate even when a cached answer exists")
        p.set_defaults(func=cmd_ask if name == "ask" else cmd_chat)


def cmd_query(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if settings.client.resolved_url:
        return remote.query(args, settings)
    from rag.collections import open_collection
    from rag.factory import build_embedder, build_store
    from rag.reranking import build_reranker
    from rag.retrieval import QdrantHybridRetriever, parse_filters, retrieval_to_dict, search

    embedder = build_embedder(settings)
    reranker = None if args.no_rerank else build_reranker(settings.rerank, settings.models_dir)
    name = args.collection or settings.store.collection
    with build_store(settings) as store:
        handle = open_collection(store, name, settings, embedder)
        filters = parse_filters(args.filters, handle.payload_fields, handle.payload_types)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        result = search(retriever, reranker, args.text, top_k=args.top_k, mode=args.mode, filters=filters)

    payload = retrieval_to_dict(result, reranker, retriever.last_constraint)

    def human() -> None:
        if retriever.last_constraint is not None:  # off with --set retrieval.infer_filters=off
            infer = settings.retrieval.infer_filters
            print(f"{retriever.last_constraint.describe()} [retrieval.infer_filters={infer}]")
        if retriever.last_expansion is not None and retriever.last_expansion.matches:
            print(f"{retriever.last_expansion.describe()} [retrieval.glossaries={settings.retrieval.glossaries}]")
        if not result.chunks:
            print("no chunk matched")
        for i, c in enumerate(result.chunks, 1):
            p = c.payload
            where = p.get("source_name") or p.get("source")
            page = f" p.{','.join(map(str, p['pages']))}" if p.get("pages") else ""
            section = " > ".join(p.get("section_path") or [])
            stages = " ".join(f"{k}={v:.4f}" for k, v in c.stage_scores.items())
            print(f"[{i}] {stages}  {where}{page}" + (f"  § {section}" if section else ""))
            print(f"    {trim(c.text)}")
        t = result.timings_ms
        rerank = f", rerank {t['rerank']:.1f} ms" if "rerank" in t else ""
        print(f"({result.mode}; embed {t['embed_dense']:.1f} ms, search {t['search']:.1f} ms{rerank})")

    emit(args, payload, human)
    return EXIT_OK


def _pipeline_settings(args: argparse.Namespace) -> Any:
    extra = []
    if args.max_new_tokens is not None:
        extra.append(f"generator.max_new_tokens={args.max_new_tokens}")
    if args.temperature is not None:
        extra.append(f"generator.temperature={args.temperature}")
    if args.no_cache:
        extra.append("answer.cache=false")
    return load_settings(args, extra)


def _answer_once(args: argparse.Namespace, pipeline: Any, question: str, history: Sequence[Any]) -> Any:
    from rag.retrieval import parse_filters

    handle = pipeline.retriever.handle
    filters = parse_filters(args.filters, handle.payload_fields, handle.payload_types)
    stream = pipeline.stream(question, history=history, filters=filters, mode=args.mode)
    if args.json:
        return stream.read()
    if stream.query != question:
        print(f"(searching for: {stream.query})", file=sys.stderr)
    for delta in stream:
        print(delta, end="", flush=True)
    print()
    assert stream.answer is not None
    print_sources(stream.answer)
    return stream.answer


@contextmanager
def _local_pipeline(args: argparse.Namespace, settings: Any) -> Iterator[Any]:
    """The answering pipeline over this machine's store, open for the `with` body (ask and chat)."""
    from rag.factory import build_pipeline, build_store

    with build_store(settings) as store:
        yield build_pipeline(settings, store, args.collection, rerank=not args.no_rerank)


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _pipeline_settings(args)
    if settings.client.resolved_url:
        return remote.ask(args, settings)
    with _local_pipeline(args, settings) as pipeline:
        answer = _answer_once(args, pipeline, args.question, ())
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _pipeline_settings(args)
    if settings.client.resolved_url:
        return remote.chat(args, settings)
    from rag.types import Turn

    with _local_pipeline(args, settings) as pipeline:
        how = (
            "quoted from the indexed documents"
            if pipeline.mode == "extract"
            else "generated by an AI model from the indexed documents, each sentence checked against its sources"
        )
        print(f"Answers are {how}; check the sources.", file=sys.stderr)
        converse(args, lambda question, history: _answer_once(args, pipeline, question, [Turn(*t) for t in history]))
    return EXIT_OK
