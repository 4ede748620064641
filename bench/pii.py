"""Personal-data redaction, measured: precision and recall per entity kind on tests/data/pii/labelled.jsonl, and
throughput, for the identifiers alone (patterns and checksums) and with names (spaCy NER through Presidio).

The set: 80 business-document sentences with gold spans (e-mail, phone, IBAN, card, national id, person), 32 of
them hard negatives only (invoice, order and serial numbers, dates, amounts, VAT ids, company names that read as
people's: Morgan Stanley, Charles Schwab, Walt Disney Company).

- recall: a gold span counts as found when spans of its kind cover every character of it (it is fully redacted).
- precision: a predicted span counts as right when it overlaps a gold span of its kind.
- leak-free recall ("any kind"): the gold span is fully covered by predicted spans of any kind (a national id
  found as a phone number is still redacted).

Usage (from the repository root):
    python bench/pii.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import emit, machine_line, reproduce_command  # noqa: E402

LABELLED = REPO / "tests" / "data" / "pii" / "labelled.jsonl"


def load_labelled(path: Path = LABELLED) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        for span in row["spans"]:
            if row["text"][span["start"] : span["end"]] != span["text"]:
                raise ValueError(f"{path}:{number}: span {span} does not match the text")
        rows.append(row)
    return rows


def _covered(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return all(any(s <= i < e for s, e in spans) for i in range(start, end))


def score(rows: Sequence[dict[str, Any]], predicted: Sequence[Sequence[Any]]) -> dict[str, dict[str, float]]:
    """Per kind and 'overall': tp/fp/fn counts, precision, recall, and recall_any_kind (see the docstring)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"gold": 0, "pred": 0, "pred_ok": 0, "found": 0, "any": 0})
    for row, spans in zip(rows, predicted, strict=True):
        gold = row["spans"]
        for g in gold:
            same = [(p.start, p.end) for p in spans if p.kind == g["kind"]]
            c = counts[g["kind"]]
            c["gold"] += 1
            c["found"] += _covered(g["start"], g["end"], same)
            c["any"] += _covered(g["start"], g["end"], [(p.start, p.end) for p in spans])
        for p in spans:
            c = counts[p.kind]
            c["pred"] += 1
            c["pred_ok"] += any(g["kind"] == p.kind and p.start < g["end"] and g["start"] < p.end for g in gold)
    total = {k: sum(c[k] for c in counts.values()) for k in ("gold", "pred", "pred_ok", "found", "any")}
    report: dict[str, dict[str, float]] = {}
    for kind, c in [*sorted(counts.items()), ("overall", total)]:
        report[kind] = {
            "gold": c["gold"],
            "predicted": c["pred"],
            "precision": c["pred_ok"] / c["pred"] if c["pred"] else 1.0,
            "recall": c["found"] / c["gold"] if c["gold"] else 1.0,
            "recall_any_kind": c["any"] / c["gold"] if c["gold"] else 1.0,
        }
    return report


# Lines like those rag serve and the CLI log (request lines, job summaries, failures): what the log filter pays.
LOG_LINES = (
    "GET /v1/chat/completions 200",
    "GET /healthz 200",
    "ingest job 3f2a9c ingested: 3/3 files, 11 chunks in 2.1 s",
    "request failed: collection 'hr' is limited to group(s) finance",
    "stream failed: GenerationError: the server answered 503",
    "cannot parse /data/hr/cv-anna.schmidt@firma.de.pdf: no text layer",
)


def _per_text_ms(redactor: Any, texts: Sequence[str], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        for text in texts:
            redactor.find(text)
    return 1000 * (time.perf_counter() - started) / (repeat * len(texts))


def measure(names: bool, rows: Sequence[dict[str, Any]], repeat: int) -> dict[str, Any]:
    from rag.privacy import PresidioRedactor

    started = time.perf_counter()
    redactor = PresidioRedactor(names=names).warm_up()
    load_s = time.perf_counter() - started
    texts = [row["text"] for row in rows]
    predicted = [redactor.find(t) for t in texts]  # the first pass is a warm-up for the timing below
    started = time.perf_counter()
    for _ in range(repeat):
        for text in texts:
            redactor.find(text)
    seconds = time.perf_counter() - started
    entities = ["person", *redactor.entities] if names else list(redactor.entities)
    misses = [
        {
            "text": row["text"],
            "gold": row["spans"],
            "predicted": [(p.kind, row["text"][p.start : p.end]) for p in spans],
        }
        for row, spans in zip(rows, predicted, strict=True)
        if {(g["start"], g["end"], g["kind"]) for g in row["spans"] if g["kind"] in entities}
        != {(p.start, p.end, p.kind) for p in spans}
    ]
    return {
        "names": names,
        "load_s": round(load_s, 2),
        "sentences_per_s": round(repeat * len(texts) / seconds, 1),
        "ms_per_sentence": round(1000 * seconds / (repeat * len(texts)), 2),
        "chars_per_s": round(repeat * sum(map(len, texts)) / seconds),
        "ms_per_log_line": round(_per_text_ms(redactor, LOG_LINES, 10 * repeat), 2),
        "scores": score([{**r, "spans": [g for g in r["spans"] if g["kind"] in entities]} for r in rows], predicted),
        "mismatches": misses,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the set (default 3)")
    parser.add_argument("--show-misses", action="store_true", help="print every sentence not redacted exactly")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = load_labelled()
    runs = [measure(False, rows, args.repeat), measure(True, rows, args.repeat)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"command": reproduce_command("bench/pii.py", argv), "machine": machine_line(), "load": load, "runs": runs}

    def human(r: dict[str, Any]) -> None:
        print(f"# {r['command']}\n# {r['machine']}, load {r['load']:.1f} at the end")
        print(f"# {len(rows)} sentences in {LABELLED.relative_to(REPO)}")
        for run in r["runs"]:
            label = "identifiers + names (spaCy NER)" if run["names"] else "identifiers only (patterns, checksums)"
            print(
                f"\n{label}: {run['sentences_per_s']} sentences/s ({run['ms_per_sentence']} ms, "
                f"{run['chars_per_s']} chars/s), {run['ms_per_log_line']} ms per typical log line, "
                f"load {run['load_s']} s"
            )
            print(f"  {'kind':12} {'gold':>4} {'pred':>4} {'precision':>9} {'recall':>6} {'any-kind recall':>15}")
            for kind, s in run["scores"].items():
                print(
                    f"  {kind:12} {s['gold']:4d} {s['predicted']:4d} {s['precision']:9.3f} {s['recall']:6.3f}"
                    f" {s['recall_any_kind']:15.3f}"
                )
            if args.show_misses:
                for miss in run["mismatches"]:
                    gold = [(g["kind"], g["text"]) for g in miss["gold"]]
                    print(f"  - {miss['text']}\n      gold {gold}\n      got  {miss['predicted']}")

    emit(result, args.json, human)


if __name__ == "__main__":
    main()
