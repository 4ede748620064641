"""The `rag` command: each subcommand loads settings, builds components, calls one library function, prints.

Heavy libraries (torch, transformers, unstructured) are imported inside the
command bodies so that `rag --help` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rag.errors import RagError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we want, with one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(sub: bool = False) -> _Parser:
    """The options every command takes, before (`rag --config gpu ask`) or after the subcommand.

    A subcommand's copy leaves what it was not given untouched (argparse.SUPPRESS) and collects its --set in
    `sub_overrides`, so `rag --config gpu config show` keeps the profile and both --set lists count (main merges).
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    common = _Parser(add_help=False)
    common.add_argument(
        "--config", help="YAML settings file, or a profile name in rag/configs/ (default, test, gpu)", **unset
    )
    common.add_argument(
        "--set",
        dest="sub_overrides" if sub else "overrides",
        action="append",
        default=argparse.SUPPRESS if sub else [],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set retrieval.top_k=5 (repeatable)",
    )
    common.add_argument("--json", action="store_true", help="print one machine-readable JSON result", **unset)
    common.add_argument("--debug", action="store_true", help="print tracebacks on errors", **unset)
    return common


def _top_k(text: str) -> int:
    """--top-k: a count from 1 to 1000 (0 or a negative number is bad usage, not the default or a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 1 to 1000")
    return value


def _printable(text: str) -> str:
    """`text` with control characters escaped (a newline in a file name prints as \\n, on one line)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rag", description="Private RAG over your documents.", parents=[_common()])
    common = _common(sub=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, help_text in (
        ("ingest", "parse, chunk, embed and index files (incremental)"),
        ("sync", "ingest and remove documents whose files are gone (ingest --prune)"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.add_argument(
            "paths", nargs="+", type=Path, help="files or folders (a .jsonl corpus is one document per line)"
        )
        p.add_argument("--collection", help="collection name (default: store.collection)")
        if name == "ingest":
            p.add_argument("--prune", action="store_true", help="remove documents whose files are gone")
        p.add_argument("--workers", type=int, help="parse worker processes (0 = in-process)")
        p.add_argument(
            "--progress",
            choices=["auto", "bar", "plain", "none"],
            default="auto",
            help="progress display on stderr (auto: a bar on a terminal, lines otherwise)",
        )
        p.set_defaults(func=cmd_ingest, prune=name == "sync" or None)

    p = sub.add_parser("query", parents=[common], help="retrieve chunks for a question")
    p.add_argument("text", help="the query")
    p.add_argument("--collection")
    p.add_argument("--top-k", type=_top_k, help="chunks returned (1 to 1000; default retrieval.top_k)")
    p.add_argument("--mode", choices=["hybrid", "dense", "sparse"])
    p.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="payload filter: field=value, field=a,b (any), field^=prefix, !field=value (repeatable)",
    )
    p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder even when one is configured")
    p.set_defaults(func=cmd_query)

    for name, help_text in (
        ("ask", "answer a question from the documents, with citations"),
        ("chat", "a conversation in the terminal; follow-ups use the history"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "ask":
            p.add_argument("question", help="the question")
        p.add_argument("--collection")
        p.add_argument("--mode", choices=["hybrid", "dense", "sparse"])
        p.add_argument("--filter", dest="filters", action="append", default=[], metavar="FIELD=VALUE")
        p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder")
        p.add_argument("--max-new-tokens", type=int, help="longest answer in tokens")
        p.add_argument("--temperature", type=float, help="0 = greedy (default)")
        p.add_argument("--no-cache", action="store_true", help="generate even when a cached answer exists")
        p.set_defaults(func=cmd_ask if name == "ask" else cmd_chat)

    p = sub.add_parser("ui", parents=[common], help="open the chat app in the browser (Streamlit)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve others)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP API (OpenAI-compatible chat, retrieve, metrics)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve others)")
    p.add_argument("--workers", type=int, default=4, help="threads for retrieval and generation (default 4)")
    p.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", parents=[common], help="inspect settings")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    p = config_sub.add_parser("show", parents=[common], help="print the resolved settings with their help text")
    p.set_defaults(func=cmd_config_show)

    coll = sub.add_parser("collections", parents=[common], help="list, describe or delete collections")
    coll_sub = coll.add_subparsers(dest="collections_command", required=True, parser_class=_Parser)
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

    ft = sub.add_parser("finetune", parents=[common], help="adapt models to your documents")
    ft_sub = ft.add_subparsers(dest="finetune_command", required=True, parser_class=_Parser)
    p = ft_sub.add_parser(
        "retrieval", parents=[common], help="train a cross-encoder reranker or fine-tune the embedder on labelled pairs"
    )
    p.add_argument("--kind", choices=["reranker", "embedder"], required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="a BEIR folder; its corpus is indexed and its --split used")
    source.add_argument("--pairs", type=Path, help="CSV with columns query,positive (an indexed --collection)")
    p.add_argument("--split", default="train", help="BEIR split to train on (never the test split you report)")
    p.add_argument("--collection", help="collection to mine hard negatives from")
    p.add_argument("--name", help="registered model name (default: <kind>-<dataset>)")
    p.add_argument(
        "--base-model",
        help="model to start from (default: the configured embedder; a reranker trained before is trained further)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=1, help="epochs without validation gain before stopping")
    p.add_argument("--learning-rate", type=float, help="default: 1e-4 reranker (its new head 10x), 2e-5 embedder")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step (a reranker: whole query groups)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--negatives", type=int, help="hard negatives per positive (default: 7 reranker, 4 embedder)")
    p.add_argument("--max-queries", type=int, help="use only the first N labelled queries")
    p.add_argument(
        "--register-if-better",
        action="store_true",
        help="register when the validation mean beats the baseline, even within bootstrap noise",
    )
    p.set_defaults(func=cmd_finetune_retrieval)

    p = ft_sub.add_parser(
        "generator",
        parents=[common],
        help="LoRA-tune the generator on questions written from a collection (RAFT-style), and measure it",
    )
    p.add_argument("--collection", help="the documents to learn (default: store.collection)")
    p.add_argument("--name", help="registered adapter name (default: generator-<collection>)")
    p.add_argument("--resume", action="store_true", help="reuse written questions and continue from the last epoch")
    p.add_argument("--no-eval", action="store_true", help="skip base-vs-adapter evaluation on the test documents")
    p.add_argument("--questions", type=int, help="synthetic training questions (generator_training.questions)")
    p.add_argument("--epochs", type=int, help="most epochs (generator_training.epochs)")
    p.set_defaults(func=cmd_finetune_generator)

    p = sub.add_parser("models", parents=[common], help="models trained here")
    p.add_argument("models_command", choices=["list"])
    p.set_defaults(func=cmd_models_list)

    ev = sub.add_parser("eval", parents=[common], help="offline quality benchmarks")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, parser_class=_Parser)
    p = ev_sub.add_parser("retrieval", parents=[common], help="nDCG@10, Recall@100, MRR@10 on a BEIR folder")
    p.add_argument("--beir", type=Path, required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--mode",
        action="append",
        choices=["hybrid", "dense", "sparse"],
        help="modes to evaluate (repeatable; default: all three)",
    )
    p.add_argument("--collection", help="collection for the corpus (default: beir-<folder name>)")
    p.add_argument("--max-queries", type=int, help="evaluate only the first N queries")
    p.add_argument("--output", type=Path, help="per-query results JSON (default: under data_dir/reports)")
    p.set_defaults(func=cmd_eval_retrieval)
    p = ev_sub.add_parser(
        "run",
        parents=[common],
        help="answer an eval set through the whole pipeline and score it (run folder with metrics and a report)",
        description="Answer every question of DATASET with the RAG pipeline (greedy decoding) and score answers, "
        "retrieval, groundedness, citations, abstention, latency and perplexity, each with a bootstrap 95% "
        "interval. DATASET: a ClapNQ folder (its passages are indexed into collection eval-<name>), a .csv/.jsonl "
        "question file (asked against --collection), or a YAML run config (format in eval/runconfig.py).",
    )
    p.add_argument("dataset", nargs="?", type=Path, help="ClapNQ folder, .csv/.jsonl questions, or YAML run config")
    p.add_argument("--collection", help="collection to ask (simple-format datasets; default: store.collection)")
    p.add_argument("--limit", type=int, help="a seeded sample of N questions (stratified on unanswerable)")
    p.add_argument("--seed", type=int, help="sampling and bootstrap seed (default 0)")
    p.add_argument(
        "--output",
        type=Path,
        help="run folder (default: data_dir/eval-runs/<time>-<name>); an existing one with the same inputs is resumed",
    )
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run with its own settings")
    p.add_argument("--llm-judge", action="store_true", default=None, help="also judge groundedness with the generator")
    p.add_argument(
        "--no-perplexity",
        dest="perplexity",
        action="store_false",
        default=None,
        help="skip the generator's perplexity on the reference answers",
    )
    p.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto")
    p.set_defaults(func=cmd_eval_run)
    p = ev_sub.add_parser(
        "compare",
        parents=[common],
        help="paired comparison of two runs; exit 1 when --metric regresses beyond --tolerance",
        description="Compare run B with run A (the baseline) on the questions both answered: per metric the mean "
        "difference B - A with a paired bootstrap 95% interval and a verdict. Exit code 1 when --metric is "
        "detectably worse in B by more than --tolerance (a CI gate).",
    )
    p.add_argument("run_a", type=Path, help="baseline run folder")
    p.add_argument("run_b", type=Path, help="candidate run folder")
    p.add_argument("--metric", default="token_f1", help="the metric that gates (default token_f1)")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest loss of --metric that passes (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=cmd_eval_compare)
    p = ev_sub.add_parser(
        "generate-testset",
        parents=[common],
        help="synthetic question/answer pairs from indexed chunks, written by the generator",
    )
    p.add_argument("--collection", help="collection to draw chunks from (default: store.collection)")
    p.add_argument("--n", type=int, default=200, help="questions wanted (default 200)")
    p.add_argument("--seed", type=int, default=0, help="chunk sampling seed")
    p.add_argument("--max-attempts", type=int, help="chunks to try at most (default 3 x --n)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest question + answer reply (default 64)")
    p.add_argument("--output", type=Path, help="JSONL file (default: data_dir/eval-testsets/<collection>-n<n>-...)")
    p.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto")
    p.set_defaults(func=cmd_eval_generate_testset)
    return parser


# -- helpers -------------------------------------------------------------------------------
def _settings(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    from rag.config import load_settings

    return load_settings(args.config, [*args.overrides, *extra])


def _emit(args: argparse.Namespace, result: Any, human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        human()


def _trim(text: str, width: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- commands ------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    extra = [f"ingest.workers={args.workers}"] if args.workers is not None else []
    settings = _settings(args, extra)
    from ingest.pipeline import ingest_paths
    from ingest.progress import make_progress
    from rag.factory import build_embedder, build_store

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
        if r.documents_missing:
            print(f"{r.documents_missing} documents under these paths no longer exist: run with --prune to remove them")
        for f in r.failures:
            print(f"FAILED {f.path}: {f.reason}")
        for d in r.duplicates:
            print(f"duplicate {d.path}: {d.reason}")
        print(f"report: {r.report_path}")

    _emit(args, report.to_dict(), human)
    return EXIT_FAILURE if report.files_failed else EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
        if not result.chunks:
            print("no chunk matched")
        for i, c in enumerate(result.chunks, 1):
            p = c.payload
            where = p.get("source_name") or p.get("source")
            page = f" p.{','.join(map(str, p['pages']))}" if p.get("pages") else ""
            section = " > ".join(p.get("section_path") or [])
            stages = " ".join(f"{k}={v:.4f}" for k, v in c.stage_scores.items())
            print(f"[{i}] {stages}  {where}{page}" + (f"  § {section}" if section else ""))
            print(f"    {_trim(c.text)}")
        t = result.timings_ms
        rerank = f", rerank {t['rerank']:.1f} ms" if "rerank" in t else ""
        print(f"({result.mode}; embed {t['embed_dense']:.1f} ms, search {t['search']:.1f} ms{rerank})")

    _emit(args, payload, human)
    return EXIT_OK


def _pipeline_settings(args: argparse.Namespace) -> Any:
    extra = []
    if args.max_new_tokens is not None:
        extra.append(f"generator.max_new_tokens={args.max_new_tokens}")
    if args.temperature is not None:
        extra.append(f"generator.temperature={args.temperature}")
    if args.no_cache:
        extra.append("answer.cache=false")
    return _settings(args, extra)


def _print_sources(answer: Any) -> None:
    from rag.prompting import source_label

    if answer.refused:
        if answer.refusal_reason == "evidence":
            print(f"(refused: best evidence {answer.evidence:.3f} is under answer.min_evidence)")
        elif answer.refusal_reason == "answerability":
            print(f"(refused: no sentence of the sources answers it well enough, best {answer.answerability:.3f})")
        if answer.removed:
            print("(every generated sentence failed the check against the sources:)")
            for s in answer.removed:
                print(f"  ✗ {_trim(s.text, 160)} — {s.reason}")
        if answer.retrieved:
            print("closest passages found:")
            for c in answer.retrieved[:3]:
                print(f"  - {source_label(c)}: {_trim(c.text, 160)}")
        return
    for s in answer.unsupported:
        print(f"  ⚠ unsupported: {_trim(s.text, 160)} — {s.reason}")
    for s in answer.removed:
        print(f"  ✗ removed: {_trim(s.text, 160)} — {s.reason}")
    cited = {c.number for c in answer.citations}
    if answer.chunks:
        print("sources:")
    for c in answer.chunks:
        mark = "*" if c.number in cited else " "
        print(f" {mark}[{c.number}] {source_label(c.chunk)}" + (" (truncated)" if c.truncated else ""))
    t = answer.timings_ms
    note = " (cached)" if answer.cached else ""
    if answer.dropped_citations:
        note += f"; {answer.dropped_citations} citation(s) to unknown sources dropped"
    if answer.mode == "extract":
        print(
            f"(quoted from the sources, no generator; retrieve {t.get('retrieve', 0):.0f} ms, "
            f"quote {t.get('extract', 0):.0f} ms)",
            file=sys.stderr,
        )
        return
    checked = (
        f", {len(answer.support)} sentence(s) checked, {len(answer.unsupported)} unsupported" if answer.support else ""
    )
    print(
        f"({answer.model}: {answer.prompt_tokens} prompt + {answer.completion_tokens} answer tokens; "
        f"retrieve {t.get('retrieve', 0):.0f} ms, first token {t.get('ttft', 0):.0f} ms, "
        f"generate {t.get('generate', 0):.0f} ms{checked}{note})",
        file=sys.stderr,
    )


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
    _print_sources(stream.answer)
    return stream.answer


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _pipeline_settings(args)
    from rag.factory import build_pipeline, build_store

    with build_store(settings) as store:
        pipeline = build_pipeline(settings, store, args.collection, rerank=not args.no_rerank)
        answer = _answer_once(args, pipeline, args.question, ())
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _pipeline_settings(args)
    from rag.answering import Turn
    from rag.factory import build_pipeline, build_store

    with build_store(settings) as store:
        pipeline = build_pipeline(settings, store, args.collection, rerank=not args.no_rerank)
        how = (
            "quoted from the indexed documents"
            if pipeline.mode == "extract"
            else "generated by an AI model from the indexed documents, each sentence checked against its sources"
        )
        print(f"Answers are {how}; check the sources.", file=sys.stderr)
        print("Ask a question. /new starts a new conversation, /exit (or Ctrl-D) quits.", file=sys.stderr)
        history: list[Turn] = []
        while True:
            try:
                question = input("> " if sys.stdin.isatty() else "").strip()
            except EOFError:
                break
            if not question:
                continue
            if question in ("/exit", "/quit"):
                break
            if question == "/new":
                history.clear()
                print("(new conversation)", file=sys.stderr)
                continue
            try:
                answer = _answer_once(args, pipeline, question, history)
            except UsageError as e:
                print(f"error: {e}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(answer.to_dict(), default=str), flush=True)
            history.append(Turn(question, answer.text))
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Run `streamlit run ui/app.py`; the app reads the same --config/--set after `--`."""
    import importlib.util

    _settings(args)  # a bad --config or --set fails here, with the usual one-line error
    if importlib.util.find_spec("streamlit") is None:
        from rag.errors import MissingDependencyError

        raise MissingDependencyError('rag ui needs the ui extra: pip install -e ".[ui]"')
    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    forwarded = [*(["--config", args.config] if args.config else []), *(f"--set={o}" for o in args.overrides)]
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port), "--server.address", args.host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--", *forwarded,
    ]  # fmt: skip
    print(f"chat app on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Replace this process: a signal to `rag ui` then reaches Streamlit itself, and no server is left orphaned.
    os.execv(sys.executable, command)
    return EXIT_OK  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API (rag.service) under uvicorn; one process owns the store and the models until Ctrl-C."""
    settings = _settings(args)
    from rag.errors import require_extra

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require_extra(module, "serve", "rag serve")
    import uvicorn

    from rag.service import create_app

    app = create_app(settings, workers=args.workers)
    print(f"API on http://{args.host}:{args.port}/v1 (Ctrl-C stops it)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from rag.config import describe_settings

    settings = _settings(args)
    rows = describe_settings(settings)
    result = {key: value for key, value, _ in rows}
    result["store.resolved_kind"] = settings.store.resolved_kind

    def human() -> None:
        for key, value, help_text in rows:
            print(f"{key} = {value!s}")
            if help_text:
                print(f"    # {help_text}")
        print(f"# store in use: {settings.store.resolved_kind}")

    _emit(args, result, human)
    return EXIT_OK


def cmd_collections_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from rag.factory import build_store

    with build_store(settings) as store:
        rows = []
        for name in store.list_collections():
            meta = store.get_metadata(name)
            rows.append(
                {
                    "name": name,
                    "chunks": store.count(name),
                    "embedder": meta.get("embedder", {}).get("name"),
                    "index_version": meta.get("index_version"),
                }
            )

    def human() -> None:
        if not rows:
            print(f"no collections ({settings.store.resolved_kind} store)")
        for r in rows:
            print(f"{r['name']}\t{r['chunks']} chunks\tembedder {r['embedder']}\tversion {r['index_version']}")

    _emit(args, {"backend": settings.store.resolved_kind, "collections": rows}, human)
    return EXIT_OK


def cmd_collections_describe(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
                print(f"  {d['chunks']:5d}  {_printable(d['source'])}")

    if not args.documents and args.json:
        info = {k: v for k, v in info.items() if k != "document_list"}
    _emit(args, info, human)
    return EXIT_OK


def cmd_collections_delete(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
    _emit(args, {"deleted": args.name, "chunks": chunks}, lambda: print(f"deleted {args.name} ({chunks} chunks)"))
    return EXIT_OK


def cmd_finetune_retrieval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from eval.beir import load_beir_queries
    from eval.metrics import ndcg_at_k
    from eval.stats import paired_bootstrap
    from ingest.progress import make_progress
    from rag.collections import open_collection
    from rag.factory import build_embedder, build_store
    from rag.registry import resolve
    from rag.retrieval import QdrantHybridRetriever
    from rag.retrieval_training import (
        TrainingOptions,
        ValidationMetrics,
        load_csv_queries,
        retriever_candidates,
        train,
    )

    embedder = build_embedder(settings)
    if args.beir is not None:
        queries, corpus = load_beir_queries(args.beir, args.split)
        dataset = args.beir.resolve().name
        from eval.beir import default_collection

        collection = args.collection or default_collection(dataset)
        training_data = f"{args.beir.resolve()} split={args.split}"
    else:
        queries, corpus = load_csv_queries(args.pairs), None
        dataset = args.pairs.stem
        collection = args.collection or settings.store.collection
        training_data = str(args.pairs.resolve())
    options = TrainingOptions(
        kind=args.kind,
        base_model=resolve(args.base_model, settings.models_dir, args.kind) if args.base_model else embedder.model_path,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.learning_rate or (1e-4 if args.kind == "reranker" else 2e-5),
        batch_size=args.batch_size,
        max_length=args.max_length,
        negatives=args.negatives or (7 if args.kind == "reranker" else 4),
        require_significant_gain=not args.register_if_better,
        max_queries=args.max_queries,
    )
    name = args.name or f"{args.kind}-{dataset}"
    with build_store(settings) as store:
        if args.beir is not None:
            from eval.beir import load_beir
            from ingest.pipeline import ingest_paths

            with make_progress("auto") as progress:
                corpus_path = load_beir(args.beir, args.split).corpus_path
                ingest_paths([corpus_path], settings, store, embedder, collection=collection, progress=progress)
        handle = open_collection(store, collection, settings, embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
        result = train(
            options,
            queries,
            retriever_candidates(retriever, corpus),
            settings.models_dir,
            name,
            training_data,
            ValidationMetrics(ndcg_at_k, paired_bootstrap),
            log=log,
        )

    def human() -> None:
        verdict = f"registered as {result.name!r} ({result.path})" if result.registered else result.reason
        blend = "" if result.blend is None else f" (blended with the fused score at share {result.blend})"
        if result.gain_low is not None:
            gain = result.best_ndcg10 - result.baseline_ndcg10
            blend += f", gain {gain:+.4f} [{result.gain_low:+.4f}, {result.gain_high:+.4f}]"
        print(
            f"{result.kind}: validation nDCG@10 {result.baseline_ndcg10:.4f} -> {result.best_ndcg10:.4f}{blend} "
            f"(best epoch {result.best_epoch} of {result.epochs_run}, {result.seconds:.0f}s): {verdict}"
        )

    _emit(args, vars(result), human)
    return EXIT_OK if result.registered else EXIT_FAILURE


def cmd_finetune_generator(args: argparse.Namespace) -> int:
    extra = [
        *([f"generator_training.questions={args.questions}"] if args.questions else []),
        *([f"generator_training.epochs={args.epochs}"] if args.epochs else []),
    ]
    settings = _settings(args, extra)
    from eval.finetune import make_evaluator, make_synthesizer
    from rag.collections import open_collection
    from rag.factory import build_embedder, build_store
    from rag.generation import build_generator
    from rag.generator_training import finetune_generator
    from rag.retrieval import QdrantHybridRetriever

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    collection = args.collection or settings.store.collection
    embedder = build_embedder(settings)
    with build_store(settings) as store:
        handle = open_collection(store, collection, settings, embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        writer = build_generator(settings)  # writes the questions: the configured generator, adapter included
        name = args.name or f"generator-{collection}"
        evaluate = None
        if not args.no_eval:
            evaluate = make_evaluator(settings, store, collection, settings.models_dir / name, embedder=embedder)
        result = finetune_generator(
            settings,
            retriever,
            make_synthesizer(store, collection, writer, log=log),
            evaluate,
            name=name,
            resume=args.resume,
            log=log,
        )

    def human() -> None:
        r = result
        t = r.training
        print(f"{'registered' if r.registered else 'NOT registered'} {r.name}: {r.reason}")
        print(
            f"documents {r.documents}, questions {r.pairs}, examples {r.examples}; {t['epochs_run']} epoch(s) in "
            f"{t['seconds']:.0f} s on {t['device']}, peak memory {t['peak_memory_mb']:,.0f} MB"
        )
        comparison = r.evaluation.get("comparison")
        if comparison:
            for metric, m in comparison.get("metrics", {}).items():
                print(
                    f"  {metric:<24} base {m['mean_a']:.3f}  adapter {m['mean_b']:.3f}  "
                    f"diff {m['diff']:+.3f} [{m['low']:+.3f}, {m['high']:+.3f}]  {m['verdict']}"
                )
            print(f"runs: {r.evaluation['base_run']} vs {r.evaluation['adapter_run']}")
        print(f"retrieval pairs for `rag finetune retrieval --pairs`: {r.retrieval_pairs}")
        if r.registered:
            print(f"serve it: --set generator.adapter={r.name}")

    _emit(args, asdict(result), human)
    return EXIT_OK if result.registered else EXIT_FAILURE


def cmd_models_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from dataclasses import asdict

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

    _emit(args, [asdict(c) for c in cards], human)
    return EXIT_OK


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from eval.retrieval import evaluate_beir, format_table
    from ingest.progress import make_progress
    from rag.factory import build_embedder, build_store
    from rag.reranking import build_reranker

    embedder = build_embedder(settings)
    reranker = build_reranker(settings.rerank, settings.models_dir)
    modes = tuple(args.mode or ("sparse", "dense", "hybrid"))
    with build_store(settings) as store, make_progress("auto") as progress:
        result = evaluate_beir(
            args.beir,
            settings,
            store,
            embedder,
            split=args.split,
            modes=modes,
            collection=args.collection,
            max_queries=args.max_queries,
            output=args.output,
            progress=progress,
            reranker=reranker,
        )
    _emit(args, result.summary(), lambda: print(format_table(result)))
    return EXIT_OK


def cmd_eval_run(args: argparse.Namespace) -> int:
    from eval.report import format_summary
    from eval.runconfig import load_run_spec, merge_overrides
    from eval.runner import load_resumed, run_eval
    from rag.config import load_settings
    from rag.factory import build_store

    if args.resume is not None:
        if args.dataset is not None or args.config or args.overrides:
            raise UsageError(
                "--resume continues a run with its own dataset and settings: drop DATASET, --config and --set"
            )
        spec, saved = load_resumed(args.resume)
        settings = load_settings(None, saved)
    elif args.dataset is None:
        raise UsageError("give a DATASET (ClapNQ folder, .csv/.jsonl, or YAML run config) or --resume RUN_DIR")
    else:
        spec = load_run_spec(args.dataset).updated(
            collection=args.collection,
            limit=args.limit,
            seed=args.seed,
            llm_judge=args.llm_judge,
            perplexity=args.perplexity,
        )
        settings = load_settings(args.config, merge_overrides(spec, args.overrides))
    with build_store(settings) as store:
        result = run_eval(
            spec,
            settings,
            store,
            output=args.resume or args.output,
            progress=args.progress,
            log=lambda message: print(message, file=sys.stderr),
        )
    summary = result.summary()
    _emit(args, summary, lambda: print(format_summary(summary)))
    return EXIT_OK


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from eval.compare import compare_runs, format_comparison

    comparison = compare_runs(args.run_a, args.run_b, metric=args.metric, tolerance=args.tolerance, seed=args.seed)
    _emit(args, comparison.to_dict(), lambda: print(format_comparison(comparison)))
    return EXIT_FAILURE if comparison.regressed else EXIT_OK


def cmd_eval_generate_testset(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from eval.progress import CountProgress
    from eval.testset import default_testset_path, generate_testset, write_testset
    from rag.factory import build_store
    from rag.generation import build_generator

    collection = args.collection or settings.store.collection
    output = args.output or default_testset_path(settings.data_dir, collection, args.n, args.seed)
    generator = build_generator(settings)
    with build_store(settings) as store, CountProgress(args.progress, args.n, desc="testset") as bar:
        result = generate_testset(
            store,
            collection,
            generator,
            args.n,
            args.seed,
            max_attempts=args.max_attempts,
            max_new_tokens=args.max_new_tokens,
            progress=lambda accepted, attempted: bar.update(accepted, f"{attempted} tried"),
        )
    write_testset(result.examples, output)
    summary = {**result.summary(), "output": str(output)}

    def human() -> None:
        rejected = ", ".join(f"{reason} {count}" for reason, count in result.rejected.items() if count) or "none"
        print(f"{len(result.examples)} of {args.n} questions from {result.attempted} chunks (rejected: {rejected})")
        print(f"written to {output}")

    _emit(args, summary, human)
    return EXIT_OK if result.examples else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "sub_overrides", [])]
    try:
        code: int = args.func(args)
        return code
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is reported, with the traceback on --debug
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
