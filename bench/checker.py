"""How well the answer checker (rag/support.py, `answer.verify`) flags unsupported sentences, measured two ways.

1. Perturbed ClapNQ references (ClapNQ dev, answerable questions): every sentence of every reference answer,
   checked against its gold passage, is a *supported* item; seeded perturbed copies are *unsupported* items:
   a number changed, a name inside the sentence replaced by one from another passage, a name opening the
   sentence replaced, a negation inserted or removed, and a sentence of another question's answer (topic swap).
2. Real answers of the bundled generator, labelled by hand (`--labels eval/data/checker_labels.jsonl`): each row
   names the question, the sentence as generated (with its [n] markers) and the prompt's chunks as passage ids and
   character offsets, so the sources are rebuilt from ClapNQ without storing their text. `--generate N --out F`
   writes such rows (label empty) for N answered questions, to label by hand. Labels: "supported" when every claim
   of the sentence is stated in the prompt's chunks (paraphrase and plain synonyms allowed: Union = North),
   "unsupported" when one is not (a bare answer counts as the claim that it answers the question), "no-claim" for a
   list number, a heading, the question restated, a lead-in ("So, the answer is:") or a fragment cut off mid-clause.

The positive class is "flagged unsupported". Precision and recall are pooled over sentences; their 95% intervals
resample questions (bootstrap_ratio over per-question counts), because sentences of one question are not
independent. Each type's precision counts all supported items as its negatives. Embeddings are computed once up
front in batches (the serving path caches them too), so `check ms/sentence` is the checker alone.

Usage (from the repository root):
    python bench/checker.py [--clapnq ../shared/data/clapnq-dev] [--labels eval/data/checker_labels.jsonl] [--json]
    python bench/checker.py --generate 50 --data-dir /tmp/clapnq-check --out /tmp/answers.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import machine_line, reproduce_command  # noqa: E402
from eval.datasets import GoldPassage, QAExample, load_clapnq  # noqa: E402
from eval.stats import bootstrap_ratio  # noqa: E402
from rag.text import STOPWORDS, sentence_split, tokens  # noqa: E402

DEFAULT_CLAPNQ = REPO.parent / "shared" / "data" / "clapnq-dev"
DEFAULT_LABELS = REPO / "eval" / "data" / "checker_labels.jsonl"
COLLECTION = "eval-clapnq"
# A hand label: the sentence's claims are all in the prompt's chunks, or one is not, or it claims nothing (a list
# number, a heading, the question restated, "So, the answer is:"); no-claim sentences are left out of precision
# and recall, and how often the checker flags them is reported on its own.
LABELS = ("supported", "unsupported", "no-claim")
SWEEP = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
TYPES = ("number", "entity", "entity-start", "negation-insert", "negation-remove", "topic-swap")

# A capitalised run inside a sentence (after a lower-case word or a comma): the bench's own notion of a name, kept
# independent of the checker's regex so the bench does not grade the checker by its own definition.
_INNER_NAME = re.compile(r"(?<=[a-z,;:] )[A-Z][a-z]+(?: [A-Z][a-z]+)*")
_START_NAME = re.compile(r"^[A-Z][a-z]+(?: [A-Z][a-z]+)*")
# Citation markers as the checker strips them before embedding a sentence, so the warmed cache keys match its own.
_CITATION = re.compile(r"\s*\[\d+\]")
_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w])")
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.I)
_AUXILIARY = re.compile(r"\b(is|are|was|were|has|have|had|does|do|did|will|would|should|could|must)\b(?! not\b)")
_REMOVALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bcannot\b"), "can"),
    (re.compile(r"\bcan't\b"), "can"),
    (re.compile(r"\bwon't\b"), "will"),
    (re.compile(r"\b(\w+) ?n't\b"), r"\1"),
    (re.compile(r" not\b"), ""),
    (re.compile(r" never\b"), ""),
)


@dataclass(frozen=True)
class Item:
    """One sentence to check against `source`, with its truth (`unsupported`) and how it was made (`kind`)."""

    question: str
    kind: str  # "reference" for supported items, else one of TYPES
    text: str
    source: str
    unsupported: bool


def passage_text(p: GoldPassage) -> str:
    """A gold passage as ingest chunks it: the title element first, then the text."""
    return f"{p.title}\n\n{p.text}" if p.title.strip() else p.text


def _perturb_number(sentence: str, source: str, rng: random.Random) -> str | None:
    present = set(_NUMBER.findall(source)) | {w.lower() for w in _NUMBER_WORD.findall(source)}
    spots = [(m.start(), m.end(), m.group(0)) for m in _NUMBER.finditer(sentence)]
    spots += [(m.start(), m.end(), m.group(0)) for m in _NUMBER_WORD.finditer(sentence)]
    if not spots:
        return None
    a, b, old = rng.choice(spots)
    for _ in range(20):
        if old.lower() in _NUMBER_WORDS:
            new = rng.choice([w for w in _NUMBER_WORDS if w != old.lower()])
        else:
            digits = old.replace(",", "")
            value = float(digits)
            if "." in digits:
                places = len(digits.split(".")[1])
                new = f"{value + rng.choice([-1, 1]) * rng.randint(1, 9) / 10**places:.{places}f}"
            elif 1000 <= value <= 2100:
                new = str(int(value) + rng.choice([-1, 1]) * rng.randint(1, 30))  # a year
            else:
                new = str(max(0, int(value) + rng.choice([-1, 1]) * rng.randint(1, max(2, int(value) // 2))))
                if "," in old:
                    new = f"{int(new):,}"
        if new != old and new.lower() not in present and new.replace(",", "") not in present:
            return sentence[:a] + new + sentence[b:]
    return None


def _name_pool(passages: Sequence[str]) -> list[str]:
    """Names to swap in; none with a stopword in it ("Will", "You"), which no reader would take for a name."""
    names = {m.group(0) for p in passages for m in _INNER_NAME.finditer(p)}
    return sorted(n for n in names if not any(t in STOPWORDS for t in tokens(n)))


def _replace_name(
    sentence: str, source: str, spans: list[tuple[int, int]], pool: list[str], rng: random.Random
) -> str | None:
    known = set(tokens(source))
    spans = [(a, b) for a, b in spans if not all(t in STOPWORDS for t in tokens(sentence[a:b]))]
    if not spans:
        return None
    a, b = rng.choice(spans)
    for _ in range(50):
        new = rng.choice(pool)
        if new != sentence[a:b] and not any(t in known for t in tokens(new)):
            return sentence[:a] + new + sentence[b:]
    return None


def _perturb_entity(sentence: str, source: str, pool: list[str], rng: random.Random) -> str | None:
    return _replace_name(sentence, source, [m.span() for m in _INNER_NAME.finditer(sentence)], pool, rng)


def _perturb_entity_start(sentence: str, source: str, pool: list[str], rng: random.Random) -> str | None:
    """Replace the name that opens the sentence, when the opening words are a name: the source writes them
    capitalised inside a sentence too (so "The" or "Seasonality" at the start are not names)."""
    m = _START_NAME.match(sentence)
    if not m or not any(m.group(0).split()[0] == n.split()[0] for n in _INNER_NAME.findall(source)):
        return None
    return _replace_name(sentence, source, [m.span()], pool, rng)


def _negation_insert(sentence: str, rng: random.Random) -> str | None:
    spots = list(_AUXILIARY.finditer(sentence))
    cans = list(re.finditer(r"\bcan\b(?! not)", sentence))
    if not spots and not cans:
        return None
    m = rng.choice(spots + cans)
    new = "cannot" if m.group(0) == "can" else f"{m.group(0)} not"
    return sentence[: m.start()] + new + sentence[m.end() :]


def _negation_remove(sentence: str) -> str | None:
    for pattern, replacement in _REMOVALS:
        if pattern.search(sentence):
            return pattern.sub(replacement, sentence, count=1)
    return None


def build_items(examples: Sequence[QAExample], seed: int) -> list[Item]:
    """Supported reference sentences and their seeded perturbations (at most one of each type per sentence)."""
    answerable = [e for e in examples if not e.unanswerable and e.gold_passages]
    sources = {e.id: passage_text(e.gold_passages[0]) for e in answerable}
    pool = _name_pool(list(sources.values()))
    sentences = {
        e.id: list(dict.fromkeys(s for a in e.answers for s in sentence_split(a) if re.search(r"\w{3}", s)))
        for e in answerable
    }
    items: list[Item] = []
    for e in answerable:
        source = sources[e.id]
        for i, s in enumerate(sentences[e.id]):
            rng = random.Random(f"{seed}:{e.id}:{i}")
            items.append(Item(e.id, "reference", s, source, False))
            made = {
                "number": _perturb_number(s, source, rng),
                "entity": _perturb_entity(s, source, pool, rng),
                "entity-start": _perturb_entity_start(s, source, pool, rng),
                "negation-insert": None if _negation_remove(s) else _negation_insert(s, rng),
                "negation-remove": _negation_remove(s),
            }
            other = rng.choice([o for o in answerable if sources[o.id] != source and sentences[o.id]])
            made["topic-swap"] = rng.choice(sentences[other.id])
            items.extend(Item(e.id, kind, text, source, True) for kind, text in made.items() if text)
    return items


# --------------------------------------------------------------------------- scoring


def rates(rows: Sequence[tuple[str, bool, bool]]) -> dict[str, Any]:
    """Precision, recall and F1 of the flag over (question, truth_unsupported, flagged) rows, with intervals that
    resample questions."""
    per_q: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # tp, fp, fn
    for q, truth, flagged in rows:
        c = per_q[q]
        c[0] += truth and flagged
        c[1] += flagged and not truth
        c[2] += truth and not flagged
    counts = list(per_q.values())
    tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))

    def ci(num: list[float], den: list[float]) -> dict[str, float] | None:
        r = bootstrap_ratio(num, den)
        return None if r is None else {"mean": r.mean, "low": r.low, "high": r.high}

    return {
        "items": len(rows),
        "positives": int(tp + fn),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": ci([c[0] for c in counts], [c[0] + c[1] for c in counts]),
        "recall": ci([c[0] for c in counts], [c[0] + c[2] for c in counts]),
        "f1": ci([2 * c[0] for c in counts], [2 * c[0] + c[1] + c[2] for c in counts]),
    }


def check_items(
    pairs: Sequence[tuple[str, dict[int, str]]], embed: Callable[[list[str]], Any], min_score: float
) -> tuple[list[bool], list[str], float]:
    """Flag (any sentence unsupported), the reasons, and the checker's ms per item with embeddings cached."""
    from rag.support import check_answer

    flags, reasons = [], []
    start = time.perf_counter()
    for text, sources in pairs:
        checks = check_answer(text, sources, embed=embed, min_score=min_score)
        flags.append(any(not c.supported for c in checks))
        reasons.append("; ".join(c.reason for c in checks if c.reason))
    return flags, reasons, (time.perf_counter() - start) * 1000 / max(1, len(pairs))


def warm(embed: Callable[[list[str]], Any], pairs: Sequence[tuple[str, dict[int, str]]]) -> float:
    """Embed every answer and source sentence once, in batches (the checker then hits the cache)."""
    texts = list(
        dict.fromkeys(
            [_CITATION.sub("", s).strip() for t, _ in pairs for s in sentence_split(t)]
            + [s for _, src in pairs for text in src.values() for s in sentence_split(text)]
        )
    )
    start = time.perf_counter()
    for i in range(0, len(texts), 256):
        embed(texts[i : i + 256])
    return time.perf_counter() - start


def load_labels(path: Path, passages: dict[str, GoldPassage]) -> list[tuple[str, str, dict[int, str], str]]:
    """(question id, sentence, sources, label) for every labelled row of `path`."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        where = f"{path}: line {n}"
        if row.get("label") not in LABELS:
            raise SystemExit(f"{where}: label must be one of {', '.join(LABELS)}, got {row.get('label')!r}")
        sources = {}
        for number, (record_id, a, b) in row["chunks"].items():
            if record_id not in passages:
                raise SystemExit(f"{where}: chunk {number} names passage {record_id}, which ClapNQ dev does not have")
            sources[int(number)] = passage_text(passages[record_id])[a:b]
        out.append((row["question_id"], row["sentence"], sources, row["label"]))
    return out


def generate(args: argparse.Namespace, examples: Sequence[QAExample]) -> int:
    """Answer answerable questions (seeded order) with the bundled generator until `args.generate` answered, and
    write one row per generated sentence with the checker's verdict and an empty label to `args.out`."""
    from eval.runner import stage_gold_corpus
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_embedder, build_pipeline, build_store

    settings = load_settings(
        None,
        [
            f"data_dir={args.data_dir}", "ingest.workers=0", "answer.cache=false", "answer.mode=generate",
            "answer.verify=flag", "answer.min_evidence=null", "answer.min_answerability=null", *args.overrides,
        ],
    )  # fmt: skip
    passages = {p.id: p for e in examples for p in e.gold_passages}
    ids = sorted(e.id for e in examples if not e.unanswerable)
    random.Random(args.seed).shuffle(ids)
    by_id = {e.id: e for e in examples}
    corpus = stage_gold_corpus(examples, settings, "clapnq")
    embedder = build_embedder(settings)
    answered = 0
    with build_store(settings) as store, args.out.open("w", encoding="utf-8") as handle:
        ingest_paths([corpus], settings, store, embedder, collection=COLLECTION)
        pipeline = build_pipeline(settings, store, COLLECTION, embedder=embedder)
        for qid in ids:
            if answered >= args.generate:
                break
            answer = pipeline.ask(by_id[qid].question)
            if answer.refused or not answer.support:
                continue
            answered += 1
            chunks = {}
            for c in answer.chunks:
                record_id = str(c.chunk.payload.get("record_id"))
                full = passage_text(passages[record_id])
                a = full.find(c.text)
                if a < 0:
                    raise SystemExit(f"question {qid}: chunk {c.number} is not a span of passage {record_id}")
                chunks[str(c.number)] = [record_id, a, a + len(c.text)]
            for i, s in enumerate(answer.support):
                verdict = "supported" if s.supported else "unsupported"
                row = {"question_id": qid, "sentence_index": i, "sentence": s.text, "chunks": chunks,
                       "checker": verdict, "label": None, "reason": None}  # fmt: skip
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{answered}/{args.generate} {qid}", file=sys.stderr, flush=True)
    return 0


def measure_perturbed(
    examples: Sequence[QAExample], seed: int, embed: Callable[[list[str]], Any], min_score: float
) -> dict[str, Any]:
    """The perturbed-reference figures: precision, recall and F1 overall and per perturbation type."""
    items = build_items(examples, seed)
    pairs = [(it.text, {1: it.source}) for it in items]
    embed_s = warm(embed, pairs)
    flags, reasons, ms = check_items(pairs, embed, min_score)
    labelled = list(zip(items, flags, strict=True))
    supported = [(it.question, False, f) for it, f in labelled if not it.unsupported]
    return {
        "embed_seconds": embed_s,
        "check_ms_per_sentence": ms,
        "perturbed": {
            "overall": rates([(it.question, it.unsupported, f) for it, f in labelled]),
            **{
                kind: rates(supported + [(it.question, True, f) for it, f in labelled if it.kind == kind])
                for kind in TYPES
            },
        },
        "false_positive_reasons": _reason_counts(
            [r for it, f, r in zip(items, flags, reasons, strict=True) if f and not it.unsupported]
        ),
        "missed_examples": {kind: [it.text for it, f in labelled if it.kind == kind and not f][:3] for kind in TYPES},
    }


def main() -> int:
    from bench._common import add_set_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clapnq", type=Path, default=DEFAULT_CLAPNQ)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="hand labels of generated sentences")
    parser.add_argument("--seed", type=int, default=0, help="seeds the perturbations (and --generate's order)")
    parser.add_argument("--min-score", type=float, default=None, help="default: answer.verify_min_support")
    parser.add_argument("--generate", type=int, default=0, help="write N answers' sentences to --out to label")
    parser.add_argument("--data-dir", type=Path, help="with --generate: a data dir holding (or to hold) eval-clapnq")
    parser.add_argument("--out", type=Path, help="with --generate: the JSONL file to write")
    parser.add_argument("--only", choices=("perturbed", "generated"), help="measure one of the two sets")
    parser.add_argument("--json", action="store_true")
    add_set_option(parser, "generator.max_new_tokens=128")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    examples = load_clapnq(args.clapnq)
    if args.generate:
        if args.data_dir is None or args.out is None:
            parser.error("--generate needs --data-dir and --out")
        return generate(args, examples)

    from rag.answering import sentence_vectors
    from rag.config import load_settings
    from rag.factory import build_embedder

    settings = load_settings(None, list(args.overrides))
    min_score = settings.answer.verify_min_support if args.min_score is None else args.min_score
    embed = sentence_vectors(build_embedder(settings))
    result: dict[str, Any] = {
        "command": reproduce_command("bench/checker.py"),
        "machine": machine_line(),
        "seed": args.seed,
        "min_score": min_score,
    }
    if args.only != "generated":
        result.update(measure_perturbed(examples, args.seed, embed, min_score))
    if args.only != "perturbed" and args.labels.is_file():
        passages = {p.id: p for e in examples for p in e.gold_passages}
        labelled = load_labels(args.labels, passages)
        claims = [row for row in labelled if row[3] != "no-claim"]
        silent = [row for row in labelled if row[3] == "no-claim"]
        warm(embed, [(s, src) for _, s, src, _ in labelled])
        claim_flags, _, _ = check_items([(s, src) for _, s, src, _ in claims], embed, min_score)
        silent_flags, _, _ = check_items([(s, src) for _, s, src, _ in silent], embed, min_score)
        result["generated"] = rates(
            [(q, label == "unsupported", f) for (q, _, _, label), f in zip(claims, claim_flags, strict=True)]
        )
        result["generated"]["questions"] = len({q for q, *_ in labelled})
        result["generated"]["no_claim_sentences"] = len(silent)
        result["generated"]["no_claim_flagged"] = sum(silent_flags)
        sweep = []
        for t in SWEEP:
            flags_t, _, _ = check_items([(s, src) for _, s, src, _ in claims], embed, t)
            r = rates([(q, label == "unsupported", f) for (q, _, _, label), f in zip(claims, flags_t, strict=True)])
            sweep.append({"min_score": t, **{k: r[k]["mean"] if r[k] else None for k in ("precision", "recall", "f1")}})
        result["generated_sweep"] = sweep
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print(result)
    return 0


def _reason_counts(reasons: Sequence[str]) -> dict[str, int]:
    """How many flagged sentences each kind of reason touched: a number, a name, a negation, too low a score."""
    counts: dict[str, int] = defaultdict(int)
    for r in reasons:
        kinds = set()
        for part in r.split("; "):
            if part.startswith("no source"):
                kinds.add("low score")
            elif "negate" in part:
                kinds.add("negation")
            elif re.match(r"^[\d$€£(]", part) or re.match(rf"^({'|'.join(_NUMBER_WORDS)})", part, re.I):
                kinds.add("number")
            else:
                kinds.add("name")
        for k in kinds:
            counts[k] += 1
    return dict(counts)


def _print(result: dict[str, Any]) -> None:
    def fmt(ci: dict[str, float] | None) -> str:
        return "  n/a" if ci is None else f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"

    print(f"# {result['command']}  ({result['machine']})")
    line = f"min_score {result['min_score']}, seed {result['seed']}"
    if "perturbed" in result:
        line += (
            f"; checker {result['check_ms_per_sentence']:.1f} ms per sentence with embeddings cached "
            f"(embedding every sentence once took {result['embed_seconds']:.0f} s)"
        )
    print(line)
    print(
        f"{'set':18s} {'items':>6s} {'unsup':>6s} {'false flags':>11s} {'missed':>6s} {'precision':>22s} "
        f"{'recall':>22s} {'F1':>22s}"
    )
    rows = [("perturbed " + k if k == "overall" else "  " + k, v) for k, v in result.get("perturbed", {}).items()]
    if "generated" in result:
        rows.append(("generated (claims)", result["generated"]))
    for name, r in rows:
        print(
            f"{name:18s} {r['items']:6d} {r['positives']:6d} {r['fp']:11d} {r['fn']:6d} {fmt(r['precision']):>22s} "
            f"{fmt(r['recall']):>22s} {fmt(r['f1']):>22s}"
        )
    if "generated" in result:
        g = result["generated"]
        print(
            f"generated: {g['questions']} answers; no-claim sentences (list numbers, headings, lead-ins) "
            f"{g['no_claim_sentences']}, of which flagged {g['no_claim_flagged']}"
        )
        sweep = result["generated_sweep"]
        print(
            "generated by min_score: "
            + "  ".join(f"{r['min_score']}: P {_num(r['precision'])} R {_num(r['recall'])}" for r in sweep)
        )
    if "perturbed" in result:
        print("flags on supported reference sentences, by reason:", result["false_positive_reasons"])
        for kind, texts in result["missed_examples"].items():
            for t in texts:
                print(f"  missed {kind}: {t[:160]}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
