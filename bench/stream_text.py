"""Memory and speed of reading and chunking one big .txt file a block at a time (ingest/streaming.py).

Embedding is left out: at ~3k tokens/s on 2 cores it takes an hour for 50 MB whatever the reader does; what the
streaming path changes is the memory (bounded by ingest.stream_text_mb, not by the file) and that progress moves.

Usage (from the repository root):
    python bench/stream_text.py --mb 50 [--block-mb 8] [--json]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import emit, machine_info, reproduce_command  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="size of the generated file")
    parser.add_argument("--block-mb", type=float, default=8.0, help="ingest.stream_text_mb")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from ingest.chunking import StructureChunker
    from ingest.pipeline import file_hash
    from ingest.streaming import chunk_parts
    from rag.config import load_settings
    from rag.embedding import SentenceTransformerEmbedder

    settings = load_settings("default", [])
    embedder = SentenceTransformerEmbedder(settings.embedder)
    chunker = StructureChunker(embedder.tokenizer, settings.chunking, embedder.max_tokens)
    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        line = "The quarterly report lists revenue, costs and the outlook for each region of the company.\n"
        with path.open("w", encoding="utf-8") as f:  # the file: one line, repeated
            for _ in range(int(args.mb * 1024 * 1024 / len(line))):
                f.write(line)
        started = time.perf_counter()
        chunks = blocks = 0
        first_part_s = None
        for part in chunk_parts(path, str(path), file_hash(path), chunker, int(args.block_mb * 1024 * 1024)):
            first_part_s = first_part_s if first_part_s is not None else time.perf_counter() - started
            chunks += len(part.chunks)
            blocks += 1
        seconds = time.perf_counter() - started
    result = {
        "file_mb": args.mb,
        "block_mb": args.block_mb,
        "blocks": blocks,
        "chunks": chunks,
        "seconds_one_pass": round(seconds, 1),
        "seconds_to_first_block": round(first_part_s or 0.0, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "rss_before_mb": round(baseline, 0),
        "machine": machine_info(),
        "command": reproduce_command("bench/stream_text.py", argv),
    }

    def human(r: dict[str, object]) -> None:
        print(
            f"{r['file_mb']} MB in {r['blocks']} blocks of {r['block_mb']} MB: {r['chunks']} chunks, "
            f"{r['seconds_one_pass']} s per pass (first block after {r['seconds_to_first_block']} s), "
            f"peak RSS {r['peak_rss_mb']} MB (tokenizer loaded: {r['rss_before_mb']} MB)"
        )
        print(f"machine: {r['machine']}")
        print(f"reproduce: {r['command']}")

    emit(result, args.json, human)
    return 0


if __name__ == "__main__":
    sys.exit(main())
