"""`rag finetune retrieval|generator`: adapt the reranker, the embedder or the generator to your documents."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from rag.cli.base import EXIT_FAILURE, EXIT_OK, Parser, Subcommands, load_settings
from rag.cli.output import emit


def register(sub: Subcommands, common: Parser) -> None:
    ft = sub.add_parser("finetune", parents=[common], help="adapt models to your documents")
    ft_sub = ft.add_subparsers(dest="finetune_command", required=True, parser_class=Parser)
    p = ft_sub.add_parser(
        "retrieval", parents=[common], help="train a cross-encoder reranker or fine-tune the embedder on labelled pairs"
    )
    p.add_argument("--kind", choices=["reranker", "embedder"], required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="a BEIR folder; its corpus is indexed and its --split used")
    source.add_argument(
        "--pairs", type=Path, help="CSV with columns query,positive[,negative] (an indexed --collection)"
    )
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
        "--document-context",
        action="store_true",
        help="a reranker reads each chunk with its document card and section path (look-alike documents)",
    )
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


def cmd_finetune_retrieval(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from eval.beir import default_collection, ingest_corpus, load_beir, training_queries
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
    beir = load_beir(args.beir, args.split) if args.beir is not None else None
    if beir is not None:
        queries, corpus = training_queries(beir)
        dataset = args.beir.resolve().name
        collection = args.collection or default_collection(dataset)
        training_data = f"{args.beir.resolve()} split={args.split}"
    else:
        queries, corpus = load_csv_queries(args.pairs), None
        dataset = args.pairs.stem
        collection = args.collection or settings.store.collection
        training_data = str(args.pairs.resolve())
    options = TrainingOptions.for_kind(
        args.kind,
        learning_rate=args.learning_rate,
        negatives=args.negatives,
        base_model=resolve(args.base_model, settings.models_dir, args.kind) if args.base_model else embedder.model_path,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        max_length=args.max_length,
        require_significant_gain=not args.register_if_better,
        max_queries=args.max_queries,
        document_context=args.document_context,
    )
    name = args.name or f"{args.kind}-{dataset}"
    with build_store(settings) as store:
        if beir is not None:
            with make_progress("auto") as progress:
                ingest_corpus(beir, settings, store, embedder, collection=collection, progress=progress)
        handle = open_collection(store, collection, settings, embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)
        log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
        result = train(
            options,
            queries,
            retriever_candidates(retriever, corpus, args.document_context),
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

    emit(args, vars(result), human)
    return EXIT_OK if result.registered else EXIT_FAILURE


def cmd_finetune_generator(args: argparse.Namespace) -> int:
    extra = [
        *([f"generator_training.questions={args.questions}"] if args.questions else []),
        *([f"generator_training.epochs={args.epochs}"] if args.epochs else []),
    ]
    settings = load_settings(args, extra)
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

    emit(args, asdict(result), human)
    return EXIT_OK if result.registered else EXIT_FAILURE
