"""Ingest speed of the Ray engine against the local engine, and its scaling with parse workers.

Usage (from the repository root; needs the [distributed] extra):
    python bench/ingest_ray.py --limit 300 [--ray-first] [--json] [--set ingest.workers=1]   # SciFact .txt files
    python bench/ingest_ray.py --pdfs ../shared/data/financebench/pdfs --files 8 --scaling    # FinanceBench PDFs

Every engine run reads the same files into a fresh data folder with the same settings. The local engine's model
loads before its timed run (in the driver, once per process); the Ray engine's loads inside it (once per embedding
actor, per run), and each local Ray starts before its run (`ray_init_s`, paid once per process or not at all on a
cluster). `--scaling` adds Ray runs with 1 and 2 parse workers and 1 embedding actor (the local Ray gets
workers + actors CPUs, as each task and actor asks for one). The shared machine's load (`uptime`) is recorded
before and after each run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# The repository root first on sys.path (bench/_path.py); a parse worker that re-imports this script (spawn) has
# no bench/ on its path, but its parent's, root first.
with contextlib.suppress(ModuleNotFoundError):
    import _path  # noqa: F401

from bench._common import add_set_option, emit, machine_info, reproduce_command

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"


def write_files(corpus: Path, limit: int, folder: Path) -> int:
    """The first `limit` records of a BEIR corpus as `<id>.txt` files (title, blank line, text)."""
    written = 0
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            (folder / f"{record['_id']}.txt").write_text(f"{record.get('title', '')}\n\n{record['text']}\n")
            written += 1
            if written >= limit:
                break
    return written


def link_pdfs(source: Path, files: int, folder: Path) -> tuple[int, int]:
    """The `files` smallest PDFs of `source` linked into `folder` (small first: a run fits in minutes on 2 cores);
    returns (files, pages)."""
    import pypdfium2 as pdfium

    pdfs = sorted(source.glob("*.pdf"), key=lambda p: (p.stat().st_size, p.name))[:files]
    if not pdfs:
        raise SystemExit(f"{source}: no PDFs there (FinanceBench lives in ../shared/data/financebench/pdfs)")
    pages = 0
    for path in pdfs:
        (folder / path.name).symlink_to(path.resolve())
        document = pdfium.PdfDocument(path)
        pages += len(document)
        document.close()
    return len(pdfs), pages


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_engine(engine: str, docs: Path, data_dir: Path, overrides: list[str], pages: int = 0) -> dict[str, Any]:
    """One timed ingest of `docs`; with `engine=ray` a local Ray (workers + actors CPUs) is started before it."""
    import ray

    from ingest.pipeline import _resolve_workers, ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store

    settings = load_settings(None, [f"data_dir={data_dir}", f"ingest.engine={engine}", *overrides])
    workers = _resolve_workers(settings.ingest.workers) or 1
    embedder = build_embedder(settings)
    if engine == "local":
        embedder.warm_up()
    ray_init_s = 0.0
    if engine == "ray":
        t0 = time.perf_counter()
        cpus = settings.ingest.ray_num_cpus or workers + settings.ingest.ray_embed_actors
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        ray_init_s = time.perf_counter() - t0
    load_before = load()
    try:
        with build_store(settings) as store:
            t0 = time.perf_counter()
            report = ingest_paths([docs], settings, store, embedder, collection="bench")
            wall_s = time.perf_counter() - t0
    finally:
        if engine == "ray":
            ray.shutdown()
    row: dict[str, Any] = {
        "engine": engine,
        "parse_workers": workers,
        "embed_actors": settings.ingest.ray_embed_actors if engine == "ray" else 0,
        "files": report.files_ingested,
        "documents": report.documents_ingested,
        "chunks": report.chunks_written,
        "failures": [f"{Path(f.path).name}: {f.reason}" for f in report.failures],
        "seconds_total": round(wall_s, 2),
        "docs_per_s": round(report.documents_ingested / wall_s, 2),
        "chunks_per_s": round(report.chunks_written / wall_s, 2),
        # Parse seconds are summed over tasks (CPU-seconds of parsing): pages/s of parse is per worker.
        "seconds_parse": report.seconds_parse,
        "seconds_embed": report.seconds_embed,
        "seconds_store": report.seconds_store,
        "embed_chunks_per_s": round(report.chunks_written / report.seconds_embed, 1) if report.seconds_embed else None,
        "ray_init_s": round(ray_init_s, 2),
        "load_before": load_before,
        "load_after": load(),
    }
    if pages:
        row["pages_per_s"] = round(pages / wall_s, 2)
        row["parse_pages_per_s_per_worker"] = round(pages / report.seconds_parse, 1) if report.seconds_parse else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    parser.add_argument("--limit", type=int, default=300, help="first N documents of --corpus")
    parser.add_argument("--pdfs", type=Path, default=None, help="a folder of PDFs instead of --corpus")
    parser.add_argument("--files", type=int, default=8, help="with --pdfs: the N smallest PDFs")
    parser.add_argument(
        "--ray-first", action="store_true", help="run the Ray engine first (on a shared machine, swap to see the noise)"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="also Ray with 1 and 2 parse workers and 1 embedding actor"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set_option(parser, "ingest.workers=1")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    overrides: list[str] = args.overrides
    with tempfile.TemporaryDirectory(prefix="bench-ingest-ray-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        pages = 0
        if args.pdfs is not None:
            n, pages = link_pdfs(args.pdfs, args.files, docs)
            source = str(args.pdfs)
        else:
            if not args.corpus.exists():
                raise SystemExit(f"{args.corpus}: corpus not found (SciFact lives in ../shared/data/beir-scifact)")
            n, source = write_files(args.corpus, args.limit, docs), str(args.corpus)
        order = ["ray", "local"] if args.ray_first else ["local", "ray"]
        rows = {engine: run_engine(engine, docs, Path(tmp) / engine, overrides, pages) for engine in order}
        scaling = []
        if args.scaling:  # the Ray row above is one of the two when its worker count is 1 or 2
            for workers in (1, 2):
                if workers != rows["ray"]["parse_workers"]:
                    more = [*overrides, f"ingest.workers={workers}"]
                    scaling.append(run_engine("ray", docs, Path(tmp) / f"ray-{workers}", more, pages))
    result = {
        "source": source,
        "files": n,
        "pages": pages,
        "local": rows["local"],
        "ray": rows["ray"],
        "scaling": scaling,
        # > 1: the Ray engine is slower. Ray start excluded (a cluster is already up); actor model load included.
        "ray_over_local_time": round(rows["ray"]["seconds_total"] / rows["local"]["seconds_total"], 2),
        "machine": machine_info(),
        "command": reproduce_command("bench/ingest_ray.py"),
    }
    emit(result, args.json, print_table)


def print_table(r: dict[str, Any]) -> None:
    what = f"{r['files']} PDFs, {r['pages']} pages" if r["pages"] else f"{r['files']} SciFact documents as .txt"
    print(f"{what} ({r['source']})")
    for row in (r["local"], r["ray"], *r["scaling"]):
        pages = f"{row['pages_per_s']:>6.2f} pages/s  " if "pages_per_s" in row else ""
        per_worker = row.get("parse_pages_per_s_per_worker")
        print(
            f"  {row['engine']:<6} w={row['parse_workers']} {row['seconds_total']:>7.1f} s  {pages}"
            f"{row['docs_per_s']:>6.2f} docs/s  {row['chunks_per_s']:>6.1f} chunks/s  "
            f"({row['chunks']} chunks, {len(row['failures'])} failed; parse {row['seconds_parse']} s"
            + (f" = {per_worker} pages/s/worker" if per_worker else "")
            + f", embed {row['seconds_embed']} s = {row['embed_chunks_per_s']} chunks/s; "
            f"ray start {row['ray_init_s']} s; load {row['load_before']} -> {row['load_after']})"
        )
    print(f"ray / local time: {r['ray_over_local_time']:.2f}x (ray start not included)")
    m = r["machine"]
    print(f"machine: {m['platform']}, {m['cpu_count']} cores, load {m['loadavg_1m_5m_at_end']}")
    print(f"reproduce: {r['command']}")


if __name__ == "__main__":
    main()
