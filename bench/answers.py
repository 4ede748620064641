"""Answer quality and refusals on ClapNQ dev, calibrated on one half and reported on the other.

The 600 dev questions (300 answerable, 300 whose related passage does not answer them) are split by question id
with a recorded seed into halves A and B. Every question is answered by the real pipeline over all 597 gold
passages with refusals switched off, so each answer carries its evidence and answerability scores; the refusal
thresholds (`answer.min_evidence`, `answer.min_answerability`) are then chosen on half A only — the most refusals
of unanswerable questions with abstention precision >= 0.85 and wrong refusals <= 10% — and every figure printed
is measured on half B: token F1 and ROUGE-L on answerable questions (a refusal scores 0), abstention precision
and recall, wrong refusals, citation correctness and latency, with bootstrap 95% intervals.

`--generate N` also answers the first N questions of half B with the configured generator, unchecked and with
`answer.verify=strict`, and compares them with quoting on the same questions (paired bootstrap). SmolLM2-135M
writes ~12 tokens/s on this CPU: N=100 takes about half an hour.

Usage (from the repository root):
    python bench/answers.py --data-dir /work/clapnq-data [--clapnq ../shared/data/clapnq-dev] [--generate 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from eval.answer_metrics import abstention_metrics, citation_correctness, rouge_l, strip_citations, token_f1  # noqa: E402
from eval.datasets import QAExample, load_clapnq  # noqa: E402
from eval.runner import stage_gold_corpus  # noqa: E402
from eval.stats import bootstrap_ci, bootstrap_ratio, paired_bootstrap, percentile  # noqa: E402

DEFAULT_CLAPNQ = REPO.parent / "shared" / "data" / "clapnq-dev"
COLLECTION = "eval-clapnq"
EVIDENCE_GRID = (None, *(round(0.30 + 0.01 * i, 2) for i in range(36)))
ANSWERABILITY_GRID = (None, *(round(0.30 + 0.01 * i, 2) for i in range(51)))


def split_halves(examples: Sequence[QAExample], seed: int) -> tuple[set[str], set[str]]:
    """Question ids of halves A and B: the sorted ids shuffled by `seed`, first half A."""
    ids = sorted(e.id for e in examples)
    random.Random(seed).shuffle(ids)
    return set(ids[: len(ids) // 2]), set(ids[len(ids) // 2 :])


def refuses(row: dict[str, Any], min_evidence: float | None, min_answerability: float | None) -> bool:
    if row["forced_refusal"]:
        return True
    if min_evidence is not None and row["evidence"] is not None and row["evidence"] < min_evidence:
        return True
    return min_answerability is not None and row["answerability"] < min_answerability


def calibrate(rows: Sequence[dict[str, Any]], max_wrong: float, min_precision: float) -> tuple[Any, Any, Any]:
    """The thresholds with the highest abstention recall on `rows` within the precision and wrong-refusal limits."""
    best: tuple[tuple[float, float], Any, Any, Any] | None = None
    truth = [r["unanswerable"] for r in rows]
    for ev in EVIDENCE_GRID:
        for ans in ANSWERABILITY_GRID:
            m = abstention_metrics([refuses(r, ev, ans) for r in rows], truth)
            if m.precision is None or m.precision < min_precision or (m.wrong_refusal_rate or 0) > max_wrong:
                continue
            key = (m.recall or 0.0, -(m.wrong_refusal_rate or 0.0))
            if best is None or key > best[0]:
                best = (key, ev, ans, m)
    if best is None:
        return None, None, None
    return best[1], best[2], best[3]


def answer_rows(pipeline: Any, examples: Sequence[QAExample], label: str) -> list[dict[str, Any]]:
    rows = []
    start = time.perf_counter()
    for i, ex in enumerate(examples, 1):
        t = time.perf_counter()
        answer = pipeline.ask(ex.question)
        seconds = time.perf_counter() - t
        text = strip_citations(answer.text)
        share, _ = citation_correctness(answer.text, {c.number: c.text for c in answer.chunks}, 0.5)
        rows.append(
            {
                "id": ex.id,
                "unanswerable": ex.unanswerable,
                "answers": list(ex.answers),
                "text": answer.text,
                "mode": answer.mode,
                "evidence": answer.evidence,
                "answerability": answer.answerability if answer.answerability is not None else 0.0,
                "forced_refusal": answer.refused,  # refused by something other than the thresholds under study
                "f1": token_f1(text, ex.answers) if ex.answers else None,
                "rouge_l": rouge_l(text, ex.answers) if ex.answers else None,
                "citation_correct": share,
                "unsupported": len(answer.unsupported),
                "sentences": len(answer.support),
                "ms": seconds * 1000,
                "stage_ms": answer.timings_ms,
            }
        )
        if i % 50 == 0:
            rate = i / (time.perf_counter() - start)
            print(f"{label}: {i}/{len(examples)} ({rate:.1f} questions/s)", file=sys.stderr, flush=True)
    return rows


def summarise(rows: Sequence[dict[str, Any]], min_evidence: Any, min_answerability: Any) -> dict[str, Any]:
    refused = [refuses(r, min_evidence, min_answerability) for r in rows]
    truth = [r["unanswerable"] for r in rows]
    answerable = [(r, ref) for r, ref in zip(rows, refused, strict=True) if not r["unanswerable"]]
    f1 = [0.0 if ref else r["f1"] for r, ref in answerable]
    rl = [0.0 if ref else r["rouge_l"] for r, ref in answerable]
    f1_answered = [r["f1"] for r, ref in answerable if not ref]
    m = abstention_metrics(refused, truth)
    tp = [float(ref and u) for ref, u in zip(refused, truth, strict=True)]
    out: dict[str, Any] = {
        "questions": len(rows),
        "token_f1": bootstrap_ci(f1).__dict__,
        "token_f1_answered": bootstrap_ci(f1_answered).__dict__ if f1_answered else None,
        "rouge_l": bootstrap_ci(rl).__dict__,
        "abstention_precision": _ratio(tp, [float(x) for x in refused]),
        "abstention_recall": _ratio(tp, [float(u) for u in truth]),
        "wrong_refusals": _ratio(
            [float(ref and not u) for ref, u in zip(refused, truth, strict=True)], [float(not u) for u in truth]
        ),
        "abstention_f1": m.f1,
        "latency_ms_p50": percentile([r["ms"] for r in rows], 50),
        "latency_ms_p95": percentile([r["ms"] for r in rows], 95),
    }
    for stage in ("extract", "generate", "verify"):
        values = [r["stage_ms"][stage] for r in rows if stage in r["stage_ms"]]
        if values:
            out[f"{stage}_ms_p50"] = percentile(values, 50)
            out[f"{stage}_ms_p95"] = percentile(values, 95)
    cited = [r["citation_correct"] for r, ref in zip(rows, refused, strict=True) if not ref]
    cited = [c for c in cited if c is not None]
    out["citation_correctness"] = sum(cited) / len(cited) if cited else None
    sentences = sum(r["sentences"] for r in rows)
    out["unsupported_sentence_share"] = sum(r["unsupported"] for r in rows) / sentences if sentences else None
    return out


def _ratio(num: list[float], den: list[float]) -> dict[str, Any] | None:
    ci = bootstrap_ratio(num, den)
    return ci.__dict__ if ci else None


def _fmt(ci: dict[str, Any] | None) -> str:
    return "n/a" if ci is None else f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--clapnq", type=Path, default=DEFAULT_CLAPNQ)
    parser.add_argument("--seed", type=int, default=0, help="seeds the A/B split of the questions")
    parser.add_argument("--generate", type=int, default=0, help="also generate for the first N questions of half B")
    parser.add_argument("--max-wrong-refusals", type=float, default=0.05, help="calibration limit on half A")
    parser.add_argument("--min-precision", type=float, default=0.85)
    parser.add_argument("--set", action="append", default=[], help="settings overrides, section.key=value")
    parser.add_argument("--rows", type=Path, help="also write every answered question's row here (JSONL)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_pipeline, build_store

    base = [f"data_dir={args.data_dir}", "ingest.workers=0", "answer.cache=false", *args.set]
    open_thresholds = ["answer.min_evidence=null", "answer.min_answerability=null"]
    settings = load_settings(None, [*base, "answer.mode=extract", *open_thresholds])
    examples = load_clapnq(args.clapnq)
    half_a, half_b = split_halves(examples, args.seed)
    corpus = stage_gold_corpus(examples, settings, "clapnq")
    embedder = build_embedder(settings)
    with build_store(settings) as store:
        report = ingest_paths([corpus], settings, store, embedder, collection=COLLECTION)
        print(f"corpus: {report.chunks_written} chunks written", file=sys.stderr)
        pipeline = build_pipeline(settings, store, COLLECTION, embedder=embedder)
        rows = answer_rows(pipeline, examples, "extract")
        if args.rows:
            args.rows.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
        rows_a = [r for r in rows if r["id"] in half_a]
        rows_b = [r for r in rows if r["id"] in half_b]
        min_evidence, min_answerability, fit = calibrate(rows_a, args.max_wrong_refusals, args.min_precision)
        result: dict[str, Any] = {
            "command": "python bench/answers.py " + shlex.join(sys.argv[1:]),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "seed": args.seed,
            "calibrated_on_a": {
                "min_evidence": min_evidence,
                "min_answerability": min_answerability,
                "a_precision": fit.precision if fit else None,
                "a_recall": fit.recall if fit else None,
                "a_wrong_refusals": fit.wrong_refusal_rate if fit else None,
            },
            "extract_b": summarise(rows_b, min_evidence, min_answerability),
            "extract_b_no_refusal": summarise(rows_b, None, None),
        }
        if args.generate:
            chosen = sorted(half_b)[: args.generate]
            by_id = {e.id: e for e in examples}
            subset = [by_id[i] for i in chosen]
            quoted = {r["id"]: r for r in rows_b}
            calibrated = [
                f"answer.min_evidence={'null' if min_evidence is None else min_evidence}",
                f"answer.min_answerability={'null' if min_answerability is None else min_answerability}",
            ]
            result["generate_subset"] = len(subset)
            result["extract_subset"] = summarise([quoted[i] for i in chosen], min_evidence, min_answerability)
            for name, extra in (("generate", ["answer.verify=flag"]), ("generate_strict", ["answer.verify=strict"])):
                gen_settings = load_settings(None, [*base, "answer.mode=generate", *calibrated, *extra])
                generating = build_pipeline(gen_settings, store, COLLECTION, embedder=embedder)
                gen_rows = answer_rows(generating, subset, name)
                result[name] = summarise(gen_rows, None, None)
                answerable = [i for i in chosen if not quoted[i]["unanswerable"]]
                gen_by_id = {r["id"]: r for r in gen_rows}
                held = [refuses(quoted[i], min_evidence, min_answerability) for i in answerable]
                a = [0.0 if r else quoted[i]["f1"] for i, r in zip(answerable, held, strict=True)]
                b = [0.0 if gen_by_id[i]["forced_refusal"] else gen_by_id[i]["f1"] for i in answerable]
                result[f"{name}_vs_extract_f1"] = paired_bootstrap(a, b).__dict__
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"# {result['command']}  ({result['machine']})")
    cal = result["calibrated_on_a"]
    print(
        f"calibrated on half A (seed {args.seed}): answer.min_evidence={cal['min_evidence']}, "
        f"answer.min_answerability={cal['min_answerability']}"
    )
    for name in ("extract_b", "extract_b_no_refusal", "extract_subset", "generate", "generate_strict"):
        if name not in result:
            continue
        s = result[name]
        print(
            f"{name:22s} n={s['questions']}  token F1 {_fmt(s['token_f1'])}  ROUGE-L {_fmt(s['rouge_l'])}  "
            f"abstention P {_fmt(s['abstention_precision'])} R {_fmt(s['abstention_recall'])}  "
            f"wrong refusals {_fmt(s['wrong_refusals'])}  citations {s['citation_correctness']}  "
            f"p50 {s['latency_ms_p50']:.0f} ms p95 {s['latency_ms_p95']:.0f} ms"
            + (f" (quoting p50 {s['extract_ms_p50']:.0f} ms)" if "extract_ms_p50" in s else "")
        )
    for name in ("generate_vs_extract_f1", "generate_strict_vs_extract_f1"):
        if name in result:
            c = result[name]
            print(f"{name}: {c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
