"""Generation speed of the configured generator (default: bundled SmolLM2-135M on this CPU): time to first token
and decode tokens/s at several prompt lengths, then the share of `rag ask` latency per stage.

Prompts are real text (ClapNQ passages when ../shared/data is present, else samples/) cut to the target length.
The `rag ask` part ingests samples/ into a temporary folder and asks a few questions with the cache off.

Usage (from the repository root):
    python bench/generate.py [--lengths 128,512,1024,2048] [--new-tokens 64] [--set generator.precision=bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, machine_line, reproduce_command  # noqa: E402

CLAPNQ = REPO.parent / "shared" / "data" / "clapnq-dev" / "annotated_data" / "dev" / "clapnq_dev_answerable.jsonl"
QUESTIONS = [
    "How many days of paid leave does a full-time employee get?",
    "When is a doctor's certificate required for sick leave?",
    "What is the torque range of the TW-200?",
    "How long must passwords be?",
    "What does the warranty cover?",
]


def filler_text() -> str:
    if CLAPNQ.is_file():
        lines = CLAPNQ.read_text(encoding="utf-8").splitlines()[:60]
        return "\n\n".join(json.loads(line)["passages"][0]["text"] for line in lines)
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "samples").iterdir())) * 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="128,512,1024,2048")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    add_set_option(parser, "generator.precision=bf16")
    parser.add_argument("--data-dir", type=Path, help="keeps the converted GGUF between runs (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_pipeline, build_store
    from rag.generation import GenerationOptions, Message, build_generator

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    settings = load_settings(None, [f"data_dir={data_dir}", "answer.cache=false", "ingest.workers=0", *args.overrides])
    generator = build_generator(settings)
    t0 = time.perf_counter()
    generator.warm_up()
    load_s = time.perf_counter() - t0
    # "Summarise in detail" keeps the model talking, so runs decode (close to) --new-tokens tokens.
    options = GenerationOptions.from_settings(settings.generator, max_new_tokens=args.new_tokens)
    text = filler_text()
    results: list[dict[str, Any]] = []
    generator.generate([Message("user", "Say hello.")], GenerationOptions(max_new_tokens=4))  # warm kernels
    for length in (int(x) for x in args.lengths.split(",")):
        ids = generator.tokenizer(text, add_special_tokens=False)["input_ids"][:length]  # type: ignore[attr-defined]
        context = generator.tokenizer.decode(ids)  # type: ignore[attr-defined]
        messages = [Message("user", f"{context}\n\nSummarise the text above in detail.")]
        runs = []
        for _ in range(args.repeats):
            _, stats = generator.generate(messages, options)
            decode_s = (stats.total_ms - stats.ttft_ms) / 1000
            runs.append(
                {
                    "ttft_ms": stats.ttft_ms,
                    "decode_tok_s": (stats.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0,
                    "completion_tokens": stats.completion_tokens,
                    "total_ms": stats.total_ms,
                }
            )
        results.append(
            {
                "prompt_tokens": stats.prompt_tokens,
                **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            }
        )

    embedder = build_embedder(settings)
    stages: dict[str, list[float]] = {}
    with build_store(settings) as store:
        ingest_paths([REPO / "samples"], settings, store, embedder)
        pipeline = build_pipeline(settings, store)
        pipeline.generator = generator
        for question in QUESTIONS:
            answer = pipeline.ask(question, options=options)
            for k, v in answer.timings_ms.items():
                stages.setdefault(k, []).append(v)
            stages.setdefault("end_to_end", []).append(sum(v for k, v in answer.timings_ms.items() if k != "ttft"))
    total = statistics.mean(stages.pop("end_to_end"))
    ask = {k: {"mean_ms": statistics.mean(v), "share": statistics.mean(v) / total} for k, v in stages.items()}

    out = {
        "command": reproduce_command("bench/generate.py"),
        "machine": machine_line(),
        "generator": generator.name,
        "device": getattr(generator, "device", "remote"),
        "load_s": load_s,
        "new_tokens": args.new_tokens,
        "by_prompt_length": results,
        "rag_ask": {"questions": len(QUESTIONS), "mean_total_ms": total, "stages": ask},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"# {out['command']}\n# {out['machine']}; {out['generator']} on {out['device']}, load {load_s:.1f} s")
    print("prompt tokens  first token ms  decode tok/s  total ms")
    for r in results:
        print(f"{r['prompt_tokens']:13d}  {r['ttft_ms']:14.0f}  {r['decode_tok_s']:12.1f}  {r['total_ms']:8.0f}")
    print(f"rag ask, {len(QUESTIONS)} questions, mean {total:.0f} ms (first token counted inside 'generate'):")
    for k, v in ask.items():
        print(f"  {k:10s} {v['mean_ms']:8.0f} ms  {v['share'] * 100:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
