"""Does a reranker trained on look-alike negatives help on FinanceBench? A document-level split, label-free pairs.

The 74 FinanceBench PDFs are split by company (all filings of one company on the same side, seeded). From the
train documents' chunks (parsed and chunked as ingest does, no embedding) come training pairs without labels:
a query made of the chunk's document context (its card's organisation and period) and its content (a table
row's label or the section heading and first words), the chunk as its positive, and as hard negatives the
chunks with the same section or row label in OTHER documents (the same company's other periods, other
companies: the look-alikes) plus lexical (BM25) neighbours; the real questions about train documents join
with their evidence page's chunk as positive. The pairs are written as `rag finetune retrieval --pairs` CSV
and trained with `rag.retrieval_training.train`. Then every question about a test document is asked of the
hybrid retriever over the full 74-PDF collection (built by bench/financebench.py --docs all), its top 30
reranked, and doc@1/5/10 and page@5/10/20 scored with and without the reranker, paired bootstrap.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python bench/financebench_finetune.py --work /tmp/h5-work \\
        --collection-dir /tmp/h5-fb --set embedder.backend=onnx-int8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import add_set_option, machine_info, machine_line, reproduce_command  # noqa: E402
from bench.financebench import DOC_KS, PAGE_KS, read_questions, score  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "financebench"
# Payload fields a pair needs; the rest of a chunk's payload is not kept in the chunk cache.
KEPT_FIELDS = (
    "text",
    "section_path",
    "pages",
    "element_types",
    "title",
    "organisation",
    "period",
    "doc_type",
    "form",
    "chunk_index",
)


def company_of(doc_name: str, info: dict[str, dict[str, Any]]) -> str:
    """The company a document belongs to: FinanceBench's document information, else the file name before its year."""
    company = info.get(doc_name, {}).get("company") or re.split(r"_(?:19|20)\d\d", doc_name)[0]
    return str(company).lower()


def split_by_company(
    doc_names: list[str], info: dict[str, dict[str, Any]], seed: int, test_share: float = 0.5
) -> tuple[list[str], list[str]]:
    """(train, test) document names; all filings of a company on one side, companies shuffled with `seed` and
    given to test until it holds `test_share` of the documents."""
    by_company: dict[str, list[str]] = {}
    for name in sorted(doc_names):
        by_company.setdefault(company_of(name, info), []).append(name)
    companies = sorted(by_company)
    random.Random(seed).shuffle(companies)
    test: list[str] = []
    train: list[str] = []
    for company in companies:
        (test if len(test) < test_share * len(doc_names) else train).extend(by_company[company])
    return sorted(train), sorted(test)


def parse_chunks(pdfs: list[Path], settings: Any, cache: Path, log: Any) -> list[dict[str, Any]]:
    """Every chunk of `pdfs` as its payload's `KEPT_FIELDS` plus `doc_name`, parsed, cleaned, carded and chunked
    exactly as ingest does (ingest.pipeline.prepare_file), without embedding; cached as JSONL per document."""
    from ingest.pipeline import _init_worker, _WorkerConfig, chunk_payload, prepare_file
    from rag.factory import build_embedder

    cache.mkdir(parents=True, exist_ok=True)
    todo = [p for p in pdfs if not (cache / f"{p.stem}.jsonl").is_file()]
    if todo:
        embedder = build_embedder(settings)
        _init_worker(_WorkerConfig(embedder.model_path, embedder.max_tokens, settings))
    for i, pdf in enumerate(todo, 1):
        t0 = time.perf_counter()
        prepared = prepare_file(str(pdf), {})
        if prepared.failure:
            raise SystemExit(f"{pdf}: {prepared.failure}")
        rows = []
        for pd in prepared.documents:
            for chunk in pd.chunks:
                payload = chunk_payload(pd.doc, chunk, len(pd.chunks), "")
                rows.append({"doc_name": pdf.stem, **{k: payload.get(k) for k in KEPT_FIELDS}})
        tmp = cache / f".{pdf.stem}.jsonl"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.rename(cache / f"{pdf.stem}.jsonl")
        log(f"  parsed {pdf.name} ({i}/{len(todo)}): {len(rows)} chunks in {time.perf_counter() - t0:.0f}s")
    chunks: list[dict[str, Any]] = []
    for pdf in pdfs:
        lines = (cache / f"{pdf.stem}.jsonl").read_text(encoding="utf-8").splitlines()
        chunks.extend(json.loads(line) for line in lines if line.strip())
    return chunks


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bm25Index:
    """Okapi BM25 over chunk texts, in memory (the project's own BM25 tokenizer, rag.sparse), for lexical
    negatives and the validation pools: training never needs an embedded collection."""

    def __init__(self, texts: list[str], settings: Any) -> None:
        import numpy as np
        from scipy.sparse import csr_matrix

        from rag.sparse import Bm25SparseEncoder, measure_avg_len

        self.encoder = Bm25SparseEncoder(settings.sparse, measure_avg_len(texts, settings.sparse.language))
        vocab: dict[int, int] = {}
        rows, cols, vals = [], [], []
        for i, vec in enumerate(self.encoder.embed_documents(texts)):
            for term, weight in zip(vec.indices, vec.values, strict=True):
                rows.append(i)
                cols.append(vocab.setdefault(term, len(vocab)))
                vals.append(weight)
        self.vocab = vocab
        self.matrix = csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab))).tocsc()
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(vocab))
        n = len(texts)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> Any:
        import numpy as np

        terms = [self.vocab[t] for t in self.encoder.embed_query(query).indices if t in self.vocab]
        if not terms:
            return np.zeros(self.matrix.shape[0])
        return np.asarray(self.matrix[:, terms] @ self.idf[terms]).ravel()

    def top(self, query: str, k: int) -> list[int]:
        import numpy as np

        s = self.scores(query)
        k = min(k, s.size)
        best = np.argpartition(-s, k - 1)[:k]
        return [int(i) for i in best[np.argsort(-s[best])]]


def evidence_chunk(question: dict[str, Any], chunks: list[dict[str, Any]], indices: list[int]) -> int | None:
    """The chunk of the question's document on its evidence page that shares most words with the evidence text."""
    pages = {int(e["evidence_page_num"]) + 1 for e in question["evidence"]}
    words = set(" ".join(e.get("evidence_text", "") for e in question["evidence"]).lower().split())
    on_page = [i for i in indices if pages & set(chunks[i].get("pages") or [])]
    if not on_page:
        return None
    return max(on_page, key=lambda i: len(words & set(str(chunks[i]["text"]).lower().split())))


def build_queries(
    chunks: list[dict[str, Any]], questions: list[dict[str, Any]], index: Bm25Index, args: argparse.Namespace
) -> tuple[list[Any], int]:
    """The real questions about train documents (evidence chunk as positive) and label-free look-alike queries."""
    from rag.retrieval_training import LookalikePairs

    pairs = LookalikePairs(chunks, index.top, document_context=True, seed=args.seed)
    rng = random.Random(args.seed)
    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        by_doc.setdefault(c["document"], []).append(i)
    real = []
    for n, q in enumerate(questions):
        positive = evidence_chunk(q, chunks, by_doc.get(q["doc_name"], []))
        if positive is None:
            continue
        found = pairs.label_of(positive, rng)
        label = found[1] if found else ""
        real.append(pairs.for_chunk(positive, q["question"], label, args.negatives, args.lookalikes, rng, f"fb{n}"))
    generated = pairs.queries(args.queries - len(real), args.negatives, args.lookalikes)
    return real + generated, len(real)


def train_reranker(queries: list[Any], index: Bm25Index, texts: list[str], args: argparse.Namespace) -> Any:
    """`rag finetune retrieval --kind reranker`'s training loop, with BM25 over the train chunks as its retriever."""
    from eval.metrics import ndcg_at_k
    from eval.stats import paired_bootstrap
    from rag.models import BUNDLED_EMBEDDER, resolve_model_path
    from rag.retrieval_training import TrainingOptions, ValidationMetrics, train

    def retrieve(q: Any, depth: int) -> list[tuple[str, bool, float]]:
        scores = index.scores(q.query)
        return [(texts[i], str(i) in q.positive_ids, float(scores[i])) for i in index.top(q.query, depth)]

    options = TrainingOptions.for_kind(
        "reranker",
        learning_rate=args.learning_rate,
        negatives=args.negatives,
        base_model=resolve_model_path(BUNDLED_EMBEDDER),
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        validation_fraction=args.validation_fraction,
        mine_depth=args.mine_depth,
        seed=args.seed,
        require_significant_gain=False,
        document_context=True,
    )
    return train(
        options,
        queries,
        retrieve,
        args.work / "models",
        args.name,
        str(args.work / f"{args.name}.pairs.csv"),
        ValidationMetrics(ndcg_at_k, paired_bootstrap),
        log=log,
    )


# A question -> the first stage's candidates best first: (chunk payload, chunk text, first-stage score).
FirstStage = Callable[[str], list[tuple[dict[str, Any], str, float]]]


@contextlib.contextmanager
def hybrid_first_stage(settings: Any, collection: str, top_n: int) -> Iterator[tuple[FirstStage, set[str]]]:
    """Our hybrid retriever (as configured: dense + BM25 fused, query document constraint) over `collection`, and
    the documents the collection holds completely (an ingest stopped part-way holds only some)."""
    from bench.financebench import complete_documents
    from rag.collections import open_collection
    from rag.factory import build_embedder, build_store
    from rag.retrieval import QdrantHybridRetriever

    embedder = build_embedder(settings)
    with build_store(settings) as store:
        handle = open_collection(store, collection, settings, embedder)
        retriever = QdrantHybridRetriever(handle, embedder, settings.retrieval)

        def retrieve(question: str) -> list[tuple[dict[str, Any], str, float]]:
            return [(c.payload, c.text, c.score) for c in retriever.retrieve(question, top_k=top_n).chunks]

        yield retrieve, complete_documents(store, collection)


def bm25_first_stage(chunks: list[dict[str, Any]], settings: Any, top_n: int) -> FirstStage:
    """BM25 over every chunk's document-context text (what ingest indexes for BM25 too), when no embedded
    collection is at hand."""
    from rag.reranking import document_context_text

    index = Bm25Index([document_context_text(c, str(c["text"])) for c in chunks], settings)

    def retrieve(question: str) -> list[tuple[dict[str, Any], str, float]]:
        scores = index.scores(question)
        return [(chunks[i], str(chunks[i]["text"]), float(scores[i])) for i in index.top(question, top_n)]

    return retrieve


def evaluate(
    questions: list[dict[str, Any]], model: Path, settings: Any, first_stage: FirstStage, resamples: int
) -> dict[str, Any]:
    """Each test question's first-stage candidates scored as retrieved and reranked by `model` (at the blend it
    recorded, and alone)."""
    from eval.stats import bootstrap_ci, paired_bootstrap
    from rag.reranking import blend_scores, build_reranker, document_context_text

    reranker = build_reranker(settings.rerank.model_copy(update={"model": str(model)}), settings.models_dir)
    assert reranker is not None
    runs: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    rerank_s = 0.0
    for n, q in enumerate(questions, 1):
        candidates = first_stage(q["question"])
        t1 = time.perf_counter()
        raw = reranker.score(q["question"], [document_context_text(p, t) for p, t, _ in candidates])
        rerank_s += time.perf_counter() - t1
        fused = [f for _, _, f in candidates]
        orders = {"first stage (no reranker)": list(range(len(candidates)))}
        for label, share in ((f"+ reranker (blend {reranker.blend})", reranker.blend), ("+ reranker alone", 1.0)):
            final = blend_scores(raw, fused, share)
            orders[label] = sorted(range(len(candidates)), key=lambda i: -final[i])
        for label, order in orders.items():
            for key, value in score(q, [candidates[i][0] for i in order]).items():
                runs.setdefault(label, {}).setdefault(key, []).append(value)
        if n % 10 == 0:
            log(f"  {n}/{len(questions)} questions ({time.perf_counter() - t0:.0f}s)")
    keys = [f"doc@{k}" for k in DOC_KS] + [f"page@{k}" for k in PAGE_KS]
    base = runs["first stage (no reranker)"]
    return {
        "questions": len(questions),
        "seconds": round(time.perf_counter() - t0, 1),
        "rerank_ms_per_query": round(1000 * rerank_s / max(1, len(questions))),
        "metrics": {
            label: {k: bootstrap_ci(v[k], n_resamples=resamples).__dict__ for k in keys} for label, v in runs.items()
        },
        "paired": {
            label: {k: paired_bootstrap(base[k], v[k], n_resamples=resamples).__dict__ for k in keys}
            for label, v in runs.items()
            if v is not base
        },
        "per_question": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--financebench", type=Path, default=DEFAULT_DATA, help="FinanceBench folder (SOURCE.md)")
    parser.add_argument("--work", type=Path, required=True, help="chunk cache, pairs CSV and the trained model")
    parser.add_argument("--seed", type=int, default=0, help="the company split's and the pairs' seed")
    parser.add_argument("--queries", type=int, default=260, help="training queries (real questions included)")
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per query")
    parser.add_argument("--lookalikes", type=int, default=2, help="of which same-label chunks of other documents")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="the encoder's (the new head's is 10x)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (whole query groups)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--validation-fraction", type=float, default=0.08)
    parser.add_argument("--mine-depth", type=int, default=15, help="BM25 candidates per validation query")
    parser.add_argument("--name", default="reranker-financebench-lookalikes", help="the trained model's name")
    parser.add_argument("--model", type=Path, help="evaluate this trained reranker instead of training one")
    parser.add_argument("--parse-only", action="store_true", help="parse and chunk the train documents, then stop")
    parser.add_argument("--no-eval", action="store_true", help="train only (no collection needed)")
    parser.add_argument(
        "--collection-dir", type=Path, help="data_dir holding the full collection (bench/financebench.py --docs all)"
    )
    parser.add_argument("--collection", default="financebench-74-all")
    parser.add_argument(
        "--first-stage",
        choices=["hybrid", "bm25"],
        default="hybrid",
        help="hybrid: the collection in --collection-dir; bm25: in-memory BM25 over all 74 PDFs' chunks (no embedding)",
    )
    parser.add_argument("--top-n", type=int, default=20, help="first-stage candidates the reranker reorders")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--save", type=Path, help="write the report (per-question scores included) as JSON here")
    add_set_option(parser, "embedder.backend=onnx-int8")
    args = parser.parse_args()

    from rag.config import load_settings
    from rag.retrieval_training import write_csv_queries

    pdfs = args.financebench / "pdfs"
    info_path = args.financebench / "data" / "financebench_document_information.jsonl"
    if not pdfs.is_dir() or not info_path.is_file():
        sys.exit(f"{args.financebench}: no pdfs/ or data/financebench_document_information.jsonl (see its SOURCE.md)")
    info = {
        r["doc_name"]: r
        for r in (json.loads(x) for x in info_path.read_text(encoding="utf-8").splitlines() if x.strip())
    }
    names = sorted(p.stem for p in pdfs.glob("*.pdf"))
    train_docs, test_docs = split_by_company(names, info, args.seed)
    questions = read_questions(args.financebench)
    train_q = [q for q in questions if q["doc_name"] in set(train_docs)]
    test_q = [q for q in questions if q["doc_name"] in set(test_docs)]
    companies = sorted({company_of(n, info) for n in test_docs})
    log(
        f"split (seed {args.seed}): {len(train_docs)} train / {len(test_docs)} test documents; test companies: "
        f"{', '.join(companies)}; questions {len(train_q)} train / {len(test_q)} test"
    )
    settings = load_settings(None, [f"data_dir={args.work / 'data'}", *args.overrides])
    out: dict[str, Any] = {
        "command": reproduce_command("bench/financebench_finetune.py"),
        "machine": machine_line(),
        "split": {
            "seed": args.seed,
            "train_documents": train_docs,
            "test_documents": test_docs,
            "train_questions": len(train_q),
            "test_questions": len(test_q),
        },
    }
    model = args.model
    if model is None:
        t0 = time.perf_counter()
        chunks = parse_chunks([pdfs / f"{n}.pdf" for n in train_docs], settings, args.work / "chunks", log)
        for c in chunks:
            c["document"] = c["doc_name"]
        out["train_chunks"] = len(chunks)
        out["parse_s"] = round(time.perf_counter() - t0, 1)
        log(f"{len(chunks)} train chunks ({out['parse_s']:.0f}s)")
        if args.parse_only:
            return
        from rag.reranking import document_context_text

        texts = [document_context_text(c, str(c["text"])) for c in chunks]
        t0 = time.perf_counter()
        index = Bm25Index(texts, settings)
        queries, n_real = build_queries(chunks, train_q, index, args)
        write_csv_queries(queries, args.work / f"{args.name}.pairs.csv")
        lookalike_negatives = sum(1 for q in queries for _ in q.negatives)
        out["pairs"] = {
            "queries": len(queries),
            "real_questions": n_real,
            "negatives": lookalike_negatives,
            "csv": str(args.work / f"{args.name}.pairs.csv"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"pairs: {out['pairs']}")
        for q in queries[n_real : n_real + 3]:
            log(f"  e.g. {q.query!r}")
        result = train_reranker(queries, index, texts, args)
        out["training"] = {k: v for k, v in vars(result).items()}
        log(
            f"training: {result.seconds:.0f}s, validation nDCG@10 {result.baseline_ndcg10:.3f} (BM25 order) -> "
            f"{result.best_ndcg10:.3f} [{result.gain_low}, {result.gain_high}], blend {result.blend}"
        )
        if not result.registered:
            sys.exit(f"not registered: {result.reason}")
        model = Path(result.path)
    if not args.no_eval:
        if args.collection_dir is None and args.first_stage == "hybrid":
            sys.exit("--collection-dir is needed to evaluate the hybrid first stage (or pass --no-eval)")
        if args.first_stage == "hybrid":
            eval_settings = load_settings(None, [f"data_dir={args.collection_dir}", *args.overrides])
            with hybrid_first_stage(eval_settings, args.collection, args.top_n) as (first_stage, complete):
                asked = [q for q in test_q if q["doc_name"] in complete]
                log(f"the collection holds {len(complete)} documents completely: {len(asked)} test questions on them")
                out["evaluation"] = evaluate(asked, model, eval_settings, first_stage, args.resamples)
                out["evaluation"]["collection_documents"] = sorted(complete)
        else:
            every = parse_chunks([pdfs / f"{n}.pdf" for n in names], settings, args.work / "chunks", log)
            for c in every:
                c["source"] = f"{c['doc_name']}.pdf"  # what score() reads
            first_stage = bm25_first_stage(every, settings, args.top_n)
            out["evaluation"] = evaluate(test_q, model, settings, first_stage, args.resamples)
        out["evaluation"]["first_stage"] = args.first_stage
        out["evaluation"]["top_n"] = args.top_n
    out["machine_info"] = machine_info()
    if args.save:
        args.save.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print_report(out)


def print_report(out: dict[str, Any]) -> None:
    print(f"command: {out['command']}")
    info = out["machine_info"]
    print(
        f"machine: {out['machine']}, torch threads {info['torch_threads']}, load average at the end "
        f"{info['loadavg_1m_5m_at_end']} (shared: slows training, not scores)"
    )
    split = out["split"]
    print(
        f"split (seed {split['seed']}, by company): {len(split['train_documents'])} train / "
        f"{len(split['test_documents'])} test documents, questions {split['train_questions']} train / "
        f"{split['test_questions']} test"
    )
    if "pairs" in out:
        p, t = out["pairs"], out["training"]
        print(
            f"pairs: {out['train_chunks']} train chunks -> {p['queries']} queries ({p['real_questions']} real "
            f"questions), {p['negatives']} hard negatives, {p['csv']}"
        )
        print(
            f"training: {t['seconds']:.0f} s, {t['epochs_run']} epoch(s); validation nDCG@10 over "
            f"{t['validation_queries']} held-out train queries {t['baseline_ndcg10']:.3f} (BM25 order) -> "
            f"{t['best_ndcg10']:.3f}, gain [{t['gain_low']:+.3f}, {t['gain_high']:+.3f}], blend {t['blend']}"
        )
    if "evaluation" not in out:
        return
    ev = out["evaluation"]
    keys = [f"doc@{k}" for k in DOC_KS] + [f"page@{k}" for k in PAGE_KS]
    print(
        f"test: {ev['questions']} questions, {ev['first_stage']} top {ev['top_n']} over "
        f"{len(ev.get('collection_documents', [])) or 74} complete PDFs, rerank "
        f"{ev['rerank_ms_per_query']} ms/query"
    )
    print(f"{'run':<28}" + "".join(f"{k:>20}" for k in keys))
    for label, m in ev["metrics"].items():
        print(f"{label:<28}" + "".join(f"{m[k]['mean']:>7.3f} [{m[k]['low']:.2f},{m[k]['high']:.2f}]" for k in keys))
    for label, m in ev["paired"].items():
        print(
            f"paired vs first stage: {label:<22}"
            + "".join(f"{m[k]['diff']:>+7.3f} [{m[k]['low']:+.2f},{m[k]['high']:+.2f}]" for k in keys)
        )


if __name__ == "__main__":
    main()
