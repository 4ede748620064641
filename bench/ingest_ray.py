"""Ingest speed of the Ray engine against the local engine: the first N SciFact documents, one .txt file each.

Usage (from the repository root; needs the [distributed] extra):
    python bench/ingest_ray.py --limit 300 [--ray-cpus 2] [--json] [--set ingest.workers=2]

Both engines read the same files into fresh data folders with the same settings. The local engine's model loads
before its timed run (in the driver, once per process); the Ray engine's loads inside it (once per embedding actor,
per run), and the local Ray starts before it (`ray_init_s`, paid once per process or not at all on a cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


def run_engine(engine: str, docs: Path, data_dir: Path, overrides: list[str]) -> dict[str, Any]:
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_store

    settings = load_settings(None, [f"data_dir={data_dir}", f"ingest.engine={engine}", *overrides])
    embedder = build_embedder(settings)
    if engine == "local":
        embedder.warm_up()
    with build_store(settings) as store:
        t0 = time.perf_counter()
        report = ingest_paths([docs], settings, store, embedder, collection="bench")
        wall_s = time.perf_counter() - t0
    return {
        "engine": engine,
        "documents": report.documents_ingested,
        "chunks": report.chunks_written,
        "failures": len(report.failures),
        "seconds_total": round(wall_s, 2),
        "docs_per_s": round(report.documents_ingested / wall_s, 2),
        "chunks_per_s": round(report.chunks_written / wall_s, 2),
        "parse_workers": settings.ingest.workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    parser.add_argument("--limit", type=int, default=300, help="first N documents")
    parser.add_argument("--ray-cpus", type=int, default=0, help="CPUs of the local Ray (0 = all cores)")
    parser.add_argument(
        "--ray-first", action="store_true", help="run the Ray engine first (on a shared machine, swap to see the noise)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set_option(parser, "ingest.workers=2")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.corpus.exists():
        raise SystemExit(f"{args.corpus}: corpus not found (SciFact lives in ../shared/data/beir-scifact)")
    import logging

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ingest-ray-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        n = write_files(args.corpus, args.limit, docs)
        if not args.ray_first:
            local = run_engine("local", docs, Path(tmp) / "local", args.overrides)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        ray_init_s = time.perf_counter() - t0
        try:
            on_ray = run_engine("ray", docs, Path(tmp) / "ray", args.overrides)
        finally:
            ray.shutdown()
        if args.ray_first:
            local = run_engine("local", docs, Path(tmp) / "local", args.overrides)
    on_ray["ray_init_s"] = round(ray_init_s, 2)
    result = {
        "corpus": str(args.corpus),
        "documents": n,
        "local": local,
        "ray": on_ray,
        # > 1: the Ray engine is slower. Ray start excluded (a cluster is already up); actor model load included.
        "ray_over_local_time": round(on_ray["seconds_total"] / local["seconds_total"], 2),
        "machine": machine_info(),
        "command": reproduce_command("bench/ingest_ray.py"),
    }
    emit(result, args.json, print_table)


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['documents']} SciFact documents as .txt files ({r['corpus']})")
    for row in (r["local"], r["ray"]):
        print(
            f"  {row['engine']:<6} {row['seconds_total']:>7.1f} s  {row['docs_per_s']:>6.1f} docs/s  "
            f"{row['chunks_per_s']:>6.1f} chunks/s  ({row['chunks']} chunks, {row['failures']} failed)"
        )
    print(f"  ray start {r['ray']['ray_init_s']:.1f} s (not in the ray row)")
    print(f"ray / local time: {r['ray_over_local_time']:.2f}x")
    m = r["machine"]
    print(f"machine: {m['platform']}, {m['cpu_count']} cores, load {m['loadavg_1m_5m_at_end']}")
    print(f"reproduce: {r['command']}")


if __name__ == "__main__":
    main()
