"""`rag eval retrieval|run|compare|generate-testset`: offline quality benchmarks (the eval package does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rag.cli.base import EXIT_FAILURE, EXIT_OK, MODES, Parser, Subcommands, load_settings, progress_option
from rag.cli.output import emit
from rag.errors import UsageError


def register(sub: Subcommands, common: Parser) -> None:
    progress = progress_option()
    ev = sub.add_parser("eval", parents=[common], help="offline quality benchmarks")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, parser_class=Parser)
    p = ev_sub.add_parser("retrieval", parents=[common], help="nDCG@10, Recall@100, MRR@10 on a BEIR folder")
    p.add_argument("--beir", type=Path, required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--mode",
        action="append",
        choices=MODES,
        help="modes to evaluate (repeatable; default: all three)",
    )
    p.add_argument("--collection", help="collection for the corpus (default: beir-<folder name>)")
    p.add_argument("--max-queries", type=int, help="evaluate only the first N queries")
    p.add_argument("--output", type=Path, help="per-query results JSON (default: under data_dir/reports)")
    p.set_defaults(func=cmd_eval_retrieval)

    p = ev_sub.add_parser(
        "run",
        parents=[common, progress],
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
        parents=[common, progress],
        help="synthetic question/answer pairs from indexed chunks, written by the generator",
    )
    p.add_argument("--collection", help="collection to draw chunks from (default: store.collection)")
    p.add_argument("--n", type=int, default=200, help="questions wanted (default 200)")
    p.add_argument("--seed", type=int, default=0, help="chunk sampling seed")
    p.add_argument("--max-attempts", type=int, help="chunks to try at most (default 3 x --n)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest question + answer reply (default 64)")
    p.add_argument("--output", type=Path, help="JSONL file (default: data_dir/eval-testsets/<collection>-n<n>-...)")
    p.set_defaults(func=cmd_eval_generate_testset)


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    settings = load_settings(args)
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
    emit(args, result.summary(), lambda: print(format_table(result)))
    return EXIT_OK


def cmd_eval_run(args: argparse.Namespace) -> int:
    from eval.report import format_summary
    from eval.runconfig import load_run_spec, merge_overrides
    from eval.runner import load_resumed, run_eval
    from rag.config import load_settings as load
    from rag.factory import build_store

    if args.resume is not None:
        if args.dataset is not None or args.config or args.overrides:
            raise UsageError(
                "--resume continues a run with its own dataset and settings: drop DATASET, --config and --set"
            )
        spec, saved = load_resumed(args.resume)
        settings = load(None, saved)
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
        settings = load(args.config, merge_overrides(spec, args.overrides))
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
    emit(args, summary, lambda: print(format_summary(summary)))
    return EXIT_OK


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from eval.compare import compare_runs, format_comparison

    comparison = compare_runs(args.run_a, args.run_b, metric=args.metric, tolerance=args.tolerance, seed=args.seed)
    emit(args, comparison.to_dict(), lambda: print(format_comparison(comparison)))
    return EXIT_FAILURE if comparison.regressed else EXIT_OK


def cmd_eval_generate_testset(args: argparse.Namespace) -> int:
    settings = load_settings(args)
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

    emit(args, summary, human)
    return EXIT_OK if result.examples else EXIT_FAILURE
