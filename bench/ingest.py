"""Ingest speed: our pipeline vs a plain llama-index IngestionPipeline on a BEIR corpus, and the embedder vs the CPU.

Usage (from the repository root):
    python bench/ingest.py --limit 1000 [--skip-baseline] [--json] [--set embedder.batch_size=32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, emit, machine_info, reproduce_command  # noqa: E402
from bench.matmul import MatmulRate, measure_machine  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"


# -- corpus --------------------------------------------------------------------------------
def write_subset(corpus: Path, limit: int | None, folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The first `limit` non-blank records of `corpus`, written to `folder` (the file both pipelines read)."""
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            records.append(json.loads(line))
            lines.append(line.rstrip("\n"))
            if limit is not None and len(records) >= limit:
                break
    out = folder / "corpus.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out, records


# -- embedder cost model -------------------------------------------------------------------
def encoder_flops_per_token(config: dict[str, Any], seq_len: float) -> tuple[float, float]:
    """(linear, attention) FLOPs per token of a BERT encoder forward pass at sequence length `seq_len`.

    Linear: 2 FLOPs per weight of the Q, K, V, O and feed-forward matrices (4d^2 + 2*d*ff per layer).
    The word-embedding table (11.7M of MiniLM-L6's 22.7M parameters) is a lookup and costs nothing,
    so "2 x 22M params" would double-count. Attention: QK^T and AV, 2 * 2 * seq_len * d per layer.
    LayerNorm, GELU, softmax and pooling are left out (a few % at d=384).
    """
    d = int(config["hidden_size"])
    ff = int(config["intermediate_size"])
    layers = int(config["num_hidden_layers"])
    linear = 2.0 * layers * (4 * d * d + 2 * d * ff)
    attention = 4.0 * layers * seq_len * d
    return linear, attention


def padded_tokens(token_counts_per_call: Sequence[Sequence[int]], batch_size: int) -> int:
    """Tokens the model actually computes on: the embedder sorts each call by token count (`length_batches`)
    and pads every batch to its longest member."""
    from rag.embedding import length_batches

    return sum(
        max(counts[i] for i in batch) * len(batch)
        for counts in token_counts_per_call
        for batch in length_batches(counts, batch_size)
    )


class _TimedCalls:
    """Wraps a function, summing its wall time and remembering its first argument (the texts)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.fn(texts, *args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.calls.append(list(texts))
        return out


# -- ours ----------------------------------------------------------------------------------
def bench_ours(corpus: Path, docs: int, overrides: Sequence[str]) -> dict[str, Any]:
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store

    with tempfile.TemporaryDirectory(prefix="bench-ingest-ours-") as tmp:
        settings = load_settings(None, [f"data_dir={tmp}", "ingest.workers=1", *overrides])
        emb = build_embedder(settings)
        t0 = time.perf_counter()
        emb.warm_up()  # weights load outside the timed run, as the baseline's do in its constructor
        load_s = time.perf_counter() - t0
        dense = _TimedCalls(emb.embed_documents)
        emb.embed_documents = dense  # type: ignore[method-assign]  # instance attribute: times dense only
        with build_store(settings) as store:
            t0 = time.perf_counter()
            report = ingest_paths([corpus], settings, store, emb, collection="bench")
            wall_s = time.perf_counter() - t0
            stored_tokens = sum(int(p["token_count"]) for _, p in store.scroll("bench", fields=["token_count"]))
        texts = [t for call in dense.calls for t in call]
        tok = emb.tokenizer
        counts_per_call = [
            [len(ids) for ids in tok(call, add_special_tokens=True)["input_ids"]] for call in dense.calls
        ]
        tokens = sum(sum(c) for c in counts_per_call)
        padded = padded_tokens(counts_per_call, emb.batch_size)
        import torch

        return {
            "documents": report.documents_ingested,
            "chunks": report.chunks_written,
            "failures": len(report.failures),
            "model_load_s": round(load_s, 2),
            "seconds_total": round(wall_s, 2),
            "seconds_parse": report.seconds_parse,
            "seconds_embed_dense": round(dense.seconds, 2),
            "seconds_embed_dense_sparse": report.seconds_embed,
            "seconds_store": report.seconds_store,
            "docs_per_s": round(report.documents_ingested / wall_s, 2),
            "chunks_per_s": round(report.chunks_written / wall_s, 2),
            "embed_share": round(dense.seconds / wall_s, 3),
            "tokens_embedded": tokens,
            "tokens_in_payload": stored_tokens,
            "tokens_padded": padded,
            "mean_tokens_per_chunk": round(tokens / max(1, len(texts)), 1),
            "embed_tokens_per_s": round(tokens / dense.seconds, 1) if dense.seconds else None,
            "embed_calls": len(dense.calls),
            **stage_fields(report),
            "batch_size": emb.batch_size,
            "backend": settings.embedder.backend,
            "torch_threads": torch.get_num_threads(),
            "model_path": emb.model_path,
        }


# -- plain llama-index ---------------------------------------------------------------------
def bench_baseline(records: Sequence[dict[str, Any]], model_path: str, fit_window: bool = False) -> dict[str, Any]:
    """The plain llama-index pipeline; `fit_window`: its SentenceSplitter sized to the model's window with the
    model's own tokenizer and our 32-token overlap, so that it embeds all the text as ours does (equal work)."""
    import qdrant_client
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode, TransformComponent
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    class TimedTransform(TransformComponent):
        """Times the wrapped transform (the embedding step) inside the pipeline."""

        inner: TransformComponent
        seconds: float = 0.0
        nodes: int = 0

        def __call__(self, nodes: Sequence[Any], **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = self.inner(nodes, **kwargs)
            self.seconds += time.perf_counter() - t0
            self.nodes += len(nodes)
            return out

    t0 = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=model_path, device="cpu")
    load_s = time.perf_counter() - t0
    documents = [Document(text=f"{r.get('title', '')}\n\n{r['text']}", id_=str(r["_id"])) for r in records]
    timed = TimedTransform(inner=embed_model)
    splitter = SentenceSplitter()
    if fit_window:
        st_model = embed_model._model
        window = int(st_model.max_seq_length or 256) - 2  # [CLS] and [SEP]
        splitter = SentenceSplitter(
            chunk_size=window,
            chunk_overlap=32,
            tokenizer=lambda text: st_model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"],
        )
    with tempfile.TemporaryDirectory(prefix="bench-ingest-llamaindex-") as tmp:
        client = qdrant_client.QdrantClient(path=tmp)
        store = QdrantVectorStore(client=client, collection_name="bench")
        pipeline = IngestionPipeline(transformations=[splitter, timed], vector_store=store)
        t0 = time.perf_counter()
        nodes = pipeline.run(documents=documents)
        wall_s = time.perf_counter() - t0
        client.close()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the recount below is untruncated on purpose: no length warning
    # What the model saw: the node text with embed-mode metadata, truncated to its window.
    st = embed_model._model
    window = int(st.max_seq_length or 256)
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    full = [len(ids) for ids in st.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    seen = [min(c, window) for c in full]
    return {
        "documents": len(documents),
        "chunks": len(nodes),
        "model_load_s": round(load_s, 2),
        "seconds_total": round(wall_s, 2),
        "seconds_embed": round(timed.seconds, 2),
        "docs_per_s": round(len(documents) / wall_s, 2),
        "chunks_per_s": round(len(nodes) / wall_s, 2),
        "embed_share": round(timed.seconds / wall_s, 3),
        "tokens_embedded": sum(seen),
        "tokens_truncated_away": sum(full) - sum(seen),
        "chunks_truncated": sum(c > window for c in full),
        "embed_tokens_per_s": round(sum(seen) / timed.seconds, 1) if timed.seconds else None,
        "batch_size": embed_model.embed_batch_size,
        "torch_threads": torch.get_num_threads(),
        "splitter": f"SentenceSplitter(chunk_size={splitter.chunk_size}, chunk_overlap={splitter.chunk_overlap})",
    }


# -- report --------------------------------------------------------------------------------
def utilization(ours: dict[str, Any], rates: Sequence[MatmulRate]) -> dict[str, Any]:
    config = json.loads((Path(ours["model_path"]) / "config.json").read_text(encoding="utf-8"))
    mean_len = ours["mean_tokens_per_chunk"]
    linear, attention = encoder_flops_per_token(config, mean_len)
    per_token = linear + attention
    peak = max(r.gflops_best for r in rates)
    useful = per_token * ours["tokens_embedded"] / ours["seconds_embed_dense"] / 1e9
    computed = per_token * ours["tokens_padded"] / ours["seconds_embed_dense"] / 1e9
    return {
        "mflop_per_token_linear": round(linear / 1e6, 2),
        "mflop_per_token_attention": round(attention / 1e6, 2),
        "at_mean_tokens": mean_len,
        "matmul_gflops_best": round(peak, 1),
        "embed_gflops_useful": round(useful, 1),
        "embed_gflops_incl_padding": round(computed, 1),
        "utilization_useful": round(useful / peak, 3),
        "utilization_incl_padding": round(computed / peak, 3),
    }


def print_table(result: dict[str, Any]) -> None:
    ours, base, fit = result["ours"], result.get("baseline"), result.get("baseline_window")

    def row(name: str, ours_key: str, base_key: str | None = None) -> tuple[str, Any, Any, Any]:
        key = base_key or ours_key
        return (name, ours[ours_key], base and base[key], fit and fit[key])

    rows = [
        row("documents", "documents"),
        row("chunks (ours) / nodes (llama-index)", "chunks"),
        row("model load s (not in the rates)", "model_load_s"),
        row("ingest wall s", "seconds_total"),
        row("  of which dense embedding s", "seconds_embed_dense", "seconds_embed"),
        ("  parse+chunk s / store s", f"{ours['seconds_parse']} / {ours['seconds_store']}", None, None),
        row("docs/s", "docs_per_s"),
        row("chunks/s", "chunks_per_s"),
        row("embedding share of wall time", "embed_share"),
        row("tokens embedded", "tokens_embedded"),
        row("embedder tokens/s", "embed_tokens_per_s"),
        row("embed batch size", "batch_size"),
    ]
    print(f"{'':40} {'ours':>14} {'llama-index':>14} {'l-i, window':>14}")
    for name, a, b, c in rows:
        print(f"{name:40} {a!s:>14} {'' if b is None else str(b):>14} {'' if c is None else str(c):>14}")
    if base:
        print(
            f"\nours / llama-index docs/s: {result['ratio_docs_per_s']:.2f}x   "
            f"(llama-index truncated {base['chunks_truncated']} nodes at the model window, "
            f"dropping {base['tokens_truncated_away']} tokens; ours embeds every token, "
            f"{ours['tokens_padded']} incl. padding)"
        )
    if fit:
        print(
            f"ours / llama-index with {fit['splitter']} (all the text, as ours): "
            f"{result['ratio_docs_per_s_window']:.2f}x; it truncated {fit['chunks_truncated']} nodes"
        )
    print_stages(ours)
    u = result["utilization"]
    print("\nfp32 matmul: " + ", ".join(f"{r['shape']} {r['gflops_best']:.1f} GFLOP/s" for r in result["matmul"]))
    print(
        f"MiniLM cost model: {u['mflop_per_token_linear']} MFLOP/token linear + "
        f"{u['mflop_per_token_attention']} attention at {u['at_mean_tokens']} tokens/chunk"
    )
    print(
        f"embedder: {u['embed_gflops_useful']} GFLOP/s on real tokens = {u['utilization_useful']:.0%} of matmul peak "
        f"({u['embed_gflops_incl_padding']} GFLOP/s = {u['utilization_incl_padding']:.0%} counting padding)"
    )
    print("\nmachine:", ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    print("reproduce:", result["command"])


def stage_fields(report: Any) -> dict[str, Any]:
    """Per stage busy share, idle seconds and rates, where the waits went, and the load average beside them."""
    return {
        "stages": {name: asdict(use) for name, use in report.stages.items()},
        "waits": report.waits,
        "pages_parsed": report.pages_parsed,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def print_stages(result: dict[str, Any]) -> None:
    print(f"\n{'stage':8} {'lanes':>5} {'busy s':>9} {'busy share':>10} {'idle s':>9} {'pages/s':>9} {'chunks/s':>9}")
    for name, use in result["stages"].items():
        print(
            f"{name:8} {use['lanes']:>5} {use['busy_s']:>9} {use['share']:>10.1%} {use['idle_s']:>9} "
            f"{use['pages_per_s'] or '':>9} {use['chunks_per_s'] or '':>9}"
        )
    print("waits (s): " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["waits"].items()))
    print("load average after the run:", " ".join(str(x) for x in result["load_average_after"]))


# -- a folder of real PDFs ------------------------------------------------------------------
def bench_pdf_folder(folder: Path, files: int | None, overrides: Sequence[str]) -> dict[str, Any]:
    """Our pipeline end to end on real PDFs (copied by symlink into a temp folder): pages/s and chunks/s per stage."""
    import pypdfium2 as pdfium

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store

    pdfs = sorted(folder.glob("*.pdf"))[:files]
    if not pdfs:
        raise SystemExit(f"no PDFs in {folder}")
    pages = 0
    for path in pdfs:
        document = pdfium.PdfDocument(path)
        pages += len(document)
        document.close()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-pdfs-") as tmp:
        subset = Path(tmp) / "pdfs"
        subset.mkdir()
        for path in pdfs:
            (subset / path.name).symlink_to(path.resolve())
        settings = load_settings(None, [f"data_dir={tmp}/data", *overrides])
        emb = build_embedder(settings)
        emb.warm_up()
        with build_store(settings) as store:
            t0 = time.perf_counter()
            report = ingest_paths([subset], settings, store, emb, collection="bench-pdfs")
            wall_s = time.perf_counter() - t0
    return {
        "folder": str(folder),
        "files": len(pdfs),
        "pages": pages,
        "files_ingested": report.files_ingested,
        "failures": [f"{Path(f.path).name}: {f.reason}" for f in report.failures],
        "chunks": report.chunks_written,
        "seconds_total": round(wall_s, 2),
        # Parse seconds are summed over workers (CPU-seconds of parsing), so pages/s here is per worker.
        "seconds_parse": report.seconds_parse,
        "seconds_embed": report.seconds_embed,
        "seconds_store": report.seconds_store,
        "pages_per_s_wall": round(pages / wall_s, 1),
        "pages_per_s_parse": round(pages / report.seconds_parse, 1) if report.seconds_parse else None,
        "chunks_per_s_wall": round(report.chunks_written / wall_s, 1),
        "chunks_per_s_embed": round(report.chunks_written / report.seconds_embed, 1) if report.seconds_embed else None,
        "workers": settings.ingest.workers,
        "pdf_parser": settings.ingest.pdf_parser,
        **stage_fields(report),
        "machine": machine_info(),
        "command": reproduce_command("bench/ingest.py"),
    }


def print_pdf_table(result: dict[str, Any]) -> None:
    for key in ("folder", "files", "pages", "files_ingested", "chunks", "pdf_parser", "workers"):
        print(f"{key:28} {result[key]}")
    print(
        f"{'wall s':28} {result['seconds_total']}  ({result['pages_per_s_wall']} pages/s, "
        f"{result['chunks_per_s_wall']} chunks/s)"
    )
    print(f"{'parse s (summed over workers)':28} {result['seconds_parse']}  ({result['pages_per_s_parse']} pages/s)")
    print(f"{'embed s':28} {result['seconds_embed']}  ({result['chunks_per_s_embed']} chunks/s)")
    print(f"{'store s':28} {result['seconds_store']}")
    print_stages(result)
    for failure in result["failures"]:
        print("failed:", failure)
    print("\nmachine:", ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    print("reproduce:", result["command"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the llama-index pipeline")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--pdf-folder", type=Path, default=None, help="instead: ingest this folder of real PDFs (e.g. FinanceBench)"
    )
    parser.add_argument("--files", type=int, default=None, help="with --pdf-folder: the first N PDFs by name")
    add_set_option(parser, "embedder.batch_size=32")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.pdf_folder is not None:
        emit(bench_pdf_folder(args.pdf_folder, args.files, args.overrides), args.json, print_pdf_table)
        return

    with tempfile.TemporaryDirectory(prefix="bench-ingest-corpus-") as tmp:
        corpus, records = write_subset(args.corpus, args.limit, Path(tmp))
        ours = bench_ours(corpus, len(records), args.overrides)
        base = None if args.skip_baseline else bench_baseline(records, ours["model_path"])
        fit = None if args.skip_baseline else bench_baseline(records, ours["model_path"], fit_window=True)
    rates = measure_machine(seconds=2.0)
    result: dict[str, Any] = {
        "corpus": str(args.corpus),
        "limit": args.limit,
        "ours": ours,
        "baseline": base,
        "baseline_window": fit,
        "ratio_docs_per_s": round(ours["docs_per_s"] / base["docs_per_s"], 2) if base else None,
        "ratio_docs_per_s_window": round(ours["docs_per_s"] / fit["docs_per_s"], 2) if fit else None,
        "matmul": [r.__dict__ for r in rates],
        "utilization": utilization(ours, rates),
        "machine": machine_info(),
        "command": reproduce_command("bench/ingest.py"),
    }
    emit(result, args.json, print_table)


if __name__ == "__main__":
    main()
