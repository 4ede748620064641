"""`rag finetune retrieval`: adapt the embedder or train a cross-encoder reranker on (query, relevant document) pairs.

Hard negatives come from our own hybrid retriever over the collection that
holds the documents; a held-out slice of queries validates each epoch, the
best epoch is kept, training stops when validation stops improving, and a
model that does not beat the untrained baseline on that slice is not registered.

A reranker is trained listwise: per query, softmax cross-entropy of the
positive against n hard negatives (given with the pairs, else mined). Pairs
can also be built without labels from a corpus of look-alike documents
(`lookalike_queries`): the hard negatives of a chunk are the chunks with the
same section or table-row label in other documents. Its validation also picks the share of its
score against the first-stage (fused) score (`rerank.blend`) that ranks the
validation queries best; the registered model records that share.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.errors import ConfigError, RagError, require_extra
from rag.registry import ModelCard, register

Kind = Literal["embedder", "reranker"]
# nDCG@k of a ranking (ids best first) against graded relevance: eval.metrics.ndcg_at_k.
Ndcg = Callable[[Sequence[str], Mapping[str, int], int], float]


@dataclass(frozen=True)
class ValidationMetrics:
    """The metrics validation scores with, passed in by the entry point (eval's `ndcg_at_k` and
    `paired_bootstrap`), so the library does not import the evaluation package."""

    ndcg_at_k: Ndcg
    # (baseline values, trained values, seed=) -> an interval with `.low` and `.high`: eval.stats.paired_bootstrap.
    paired_bootstrap: Callable[..., Any]


@dataclass(frozen=True)
class LabelledQuery:
    """A query with the texts of its relevant documents (ids where known)."""

    query_id: str
    query: str
    positives: tuple[str, ...]
    positive_ids: tuple[str, ...] = ()
    # Hard negatives given with the pairs (the CSV's `negative` column, `lookalike_queries`): used before mined ones.
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingExample:
    query: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class TrainingResult:
    name: str
    kind: str
    path: str
    registered: bool
    baseline_ndcg10: float
    best_ndcg10: float
    epochs_run: int
    best_epoch: int
    train_queries: int
    validation_queries: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str = ""
    blend: float | None = None  # a reranker's share against the fused score, chosen on validation
    gain_low: float | None = None  # paired bootstrap 95% interval of the validation gain over the baseline
    gain_high: float | None = None


@dataclass(frozen=True)
class TrainingOptions:
    kind: Kind = "reranker"
    base_model: str = ""
    epochs: int = 3
    patience: int = 1
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 256
    negatives: int = 4
    mine_depth: int = 30
    skip_top: int = 0
    validation_fraction: float = 0.15
    seed: int = 0
    max_queries: int | None = None
    head_lr_factor: float = 10.0  # the new scoring head of a reranker learns this much faster than the encoder
    require_significant_gain: bool = True  # register only when the validation gain is beyond bootstrap noise
    # A reranker reads each chunk as `rag.reranking.document_context_text` (card short form, section path, text);
    # recorded on its card, so serving reads chunks the same way.
    document_context: bool = False

    @classmethod
    def for_kind(
        cls, kind: Kind, *, learning_rate: float | None, negatives: int | None, **given: Any
    ) -> TrainingOptions:
        """Options for `kind`, with its own defaults where `learning_rate` or `negatives` is None (not given):
        a reranker 1e-4 (its new head 10x that) and 7 negatives, an embedder 2e-5 and 4."""
        reranker = kind == "reranker"
        return cls(
            kind=kind,
            learning_rate=learning_rate or (1e-4 if reranker else 2e-5),
            negatives=negatives or (7 if reranker else 4),
            **given,
        )


def load_csv_queries(path: Path) -> list[LabelledQuery]:
    """A CSV with columns `query` and `positive` (the relevant passage's text), and optionally `negative` (a hard
    negative's text, used before mined ones); one row per pair, rows of one query grouped (duplicates once)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"query", "positive"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError(
                    f"{path}: missing column(s) {', '.join(sorted(missing))}; expected query,positive[,negative]"
                )
            grouped: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
            for line, row in enumerate(reader, start=2):
                query, positive = (row.get("query") or "").strip(), (row.get("positive") or "").strip()
                if not query or not positive:
                    raise ConfigError(f"{path}:{line}: empty query or positive")
                positives, negatives = grouped.setdefault(query, ({}, {}))
                positives[positive] = None
                negative = (row.get("negative") or "").strip()
                if negative:
                    negatives[negative] = None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the training pairs ({e.strerror or e})") from e
    return [
        LabelledQuery(f"q{i}", q, tuple(ps), negatives=tuple(n for n in ns if n not in ps))
        for i, (q, (ps, ns)) in enumerate(grouped.items())
    ]


def write_csv_queries(queries: Sequence[LabelledQuery], path: Path) -> Path:
    """`queries` as the CSV `load_csv_queries` reads: one row per (query, positive, negative)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "positive", "negative"])
        for q in queries:
            for positive in q.positives:
                for negative in q.negatives or ("",):
                    writer.writerow([q.query, positive, negative])
    return path


def data_hash(queries: Sequence[LabelledQuery]) -> str:
    digest = hashlib.sha256()
    for q in queries:
        digest.update(json.dumps([q.query, list(q.positives)]).encode())
    return digest.hexdigest()[:16]


def split_queries(
    queries: Sequence[LabelledQuery], fraction: float, seed: int
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """Seeded split by query, so that no validation query is seen in training."""
    order = list(queries)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
    return order[n_val:], order[:n_val]


# A retrieved candidate: its text, whether it is relevant, and its first-stage (fused) score.
Candidate = tuple[str, bool, float]
# A query and a depth -> candidates in retrieval order.
Retrieve = Callable[[LabelledQuery, int], list[Candidate]]


def retriever_candidates(retriever: Any, corpus: dict[str, str] | None, document_context: bool = False) -> Retrieve:
    """Candidates from our hybrid retriever: whole documents by record id when the corpus is known
    (BEIR, a document scoring as its best chunk), else chunk texts (with `document_context`, as
    `rag.reranking.document_context_text` gives them), a chunk counting as relevant when it overlaps
    a positive passage."""
    from rag.reranking import document_context_text

    def candidates(q: LabelledQuery, depth: int) -> list[Candidate]:
        chunks = retriever.retrieve(q.query, top_k=depth * 2 if corpus is not None else depth).chunks
        if corpus is None:
            return [
                (
                    document_context_text(c.payload, c.text) if document_context else c.text,
                    any(c.text in p or p in c.text for p in q.positives),
                    c.score,
                )
                for c in chunks
            ]
        best: dict[str, float] = {}
        for c in chunks:  # best first, so a record's first chunk holds its best score
            best.setdefault(str(c.payload.get("record_id")), c.score)
        ids = [i for i in best if i in corpus][:depth]
        return [(corpus[i], i in q.positive_ids, best[i]) for i in ids]

    return candidates


def mine(queries: Sequence[LabelledQuery], retrieve: Retrieve, depth: int) -> dict[str, list[Candidate]]:
    return {q.query_id: retrieve(q, depth) for q in queries}


def build_examples(
    queries: Sequence[LabelledQuery], mined: dict[str, list[Candidate]], options: TrainingOptions
) -> list[TrainingExample]:
    """One example per positive: the positive and `negatives` hard negatives: the query's given negatives first,
    then from the retrieved list."""
    rng = random.Random(options.seed)
    examples = []
    for q in queries:
        pool = [t for t, relevant, _ in mined.get(q.query_id, []) if not relevant][options.skip_top :]
        if q.negatives:
            given = [t for t in q.negatives if t not in q.positives]
            pool = given + [t for t in pool if t not in given and t not in q.positives]
            if len(pool) < options.negatives:
                continue
            for positive in q.positives:
                examples.append(TrainingExample(q.query, positive, tuple(pool[: options.negatives])))
            continue
        if len(pool) < options.negatives:
            continue
        for positive in q.positives:
            # Half the negatives from the very top (hardest), half sampled from the rest of the pool.
            hardest = pool[: options.negatives // 2]
            rest = rng.sample(pool[len(hardest) :], options.negatives - len(hardest))
            examples.append(TrainingExample(q.query, positive, tuple(hardest + rest)))
    return examples


@dataclass(frozen=True)
class Pool:
    """One validation query's retrieved candidates in retrieval order."""

    query: str
    texts: list[str]
    labels: list[int]
    n_relevant: int  # relevant documents, retrieved or not
    first_stage: list[float]  # the fused scores


def validation_pools(queries: Sequence[LabelledQuery], mined: dict[str, list[Candidate]]) -> list[Pool]:
    """Per validation query: the retrieved candidates in retrieval order, with labels and fused scores."""
    pools = []
    for q in queries:
        candidates = mined.get(q.query_id, [])
        pools.append(
            Pool(
                q.query,
                [t for t, _, _ in candidates],
                [int(r) for _, r, _ in candidates],
                len(q.positives),
                [s for _, _, s in candidates],
            )
        )
    return pools


def retrieval_order(query: str, texts: list[str]) -> list[float]:
    """The baseline a reranker must beat: the fused order it would rerank."""
    return [-float(i) for i in range(len(texts))]


Score = Callable[[str, list[str]], list[float]]


def score_pools(score: Score, pools: Sequence[Pool]) -> list[list[float]]:
    return [score(p.query, p.texts) if p.texts else [] for p in pools]


def pools_ndcg_values(
    pools: Sequence[Pool], scores: Sequence[Sequence[float]], blend: float = 1.0, *, ndcg_at_k: Ndcg
) -> list[float]:
    """nDCG@10 of ranking each pool by its scores (blended with the fused scores when `blend` < 1);
    relevant documents not retrieved still count in the ideal."""
    from rag.reranking import blend_scores

    values = []
    for pool, raw in zip(pools, scores, strict=True):
        final = blend_scores(raw, pool.first_stage, blend)
        order = sorted(range(len(pool.texts)), key=lambda i: -final[i])
        relevant = {str(i): 1 for i, label in enumerate(pool.labels) if label}
        relevant.update({f"missing{j}": 1 for j in range(max(0, pool.n_relevant - len(relevant)))})
        values.append(ndcg_at_k([str(i) for i in order], relevant, 10))
    return values


def pools_ndcg(
    pools: Sequence[Pool], scores: Sequence[Sequence[float]], blend: float = 1.0, *, ndcg_at_k: Ndcg
) -> float:
    """Mean nDCG@10 over the pools (see `pools_ndcg_values`)."""
    return _mean(pools_ndcg_values(pools, scores, blend, ndcg_at_k=ndcg_at_k))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


BLEND_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))  # the cross-encoder's share; 0 would be no reranker


def best_blend(pools: Sequence[Pool], scores: Sequence[Sequence[float]], *, ndcg_at_k: Ndcg) -> tuple[float, float]:
    """The share of the cross-encoder score that ranks the pools best, and that nDCG@10 (ties: the larger share)."""
    results = [(pools_ndcg(pools, scores, share, ndcg_at_k=ndcg_at_k), share) for share in BLEND_GRID]
    ndcg, share = max(results)
    return share, ndcg


def _require_training_extras() -> None:
    for module in ("accelerate", "datasets"):
        require_extra(module, "finetune", "rag finetune retrieval")


def train(
    options: TrainingOptions,
    queries: Sequence[LabelledQuery],
    retrieve: Retrieve,
    models_dir: Path,
    name: str,
    training_data: str,
    metrics: ValidationMetrics,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Train, validate each epoch, keep the best, register it if it beats the baseline beyond noise: the
    paired bootstrap 95% interval of its per-query gain over the validation queries must lie above 0
    (`options.require_significant_gain=False`: a higher mean is enough)."""
    ndcg = metrics.ndcg_at_k
    if options.kind == "embedder":
        _require_training_extras()
    started = time.perf_counter()
    if options.max_queries:
        queries = list(queries)[: options.max_queries]
    if len(queries) < 4:
        raise ConfigError(f"need at least 4 labelled queries to train and validate, got {len(queries)}")
    train_q, val_q = split_queries(queries, options.validation_fraction, options.seed)
    log(f"mining hard negatives for {len(queries)} queries (top {options.mine_depth} of the hybrid retriever)")
    mined = mine(queries, retrieve, options.mine_depth)
    examples = build_examples(train_q, mined, options)
    if not examples:
        raise RagError("no training example could be built: the retriever found too few negatives per query")
    pools = validation_pools(val_q, mined)
    trainer = _EmbedderTrainer(options) if options.kind == "embedder" else _RerankerTrainer(options, log)
    # The embedder must beat itself untrained; a reranker must beat the fused order it reorders.
    baseline_values = pools_ndcg_values(
        pools, score_pools(trainer.score if options.kind == "embedder" else retrieval_order, pools), ndcg_at_k=ndcg
    )
    baseline = _mean(baseline_values)
    log(
        f"{len(examples)} training examples from {len(train_q)} queries; validation on {len(val_q)} queries, "
        f"baseline nDCG@10 {baseline:.4f}"
    )

    out = models_dir / name
    work = models_dir / f".{name}.training"
    shutil.rmtree(work, ignore_errors=True)
    history: list[dict[str, float]] = []
    best, best_epoch, stale = baseline, 0, 0
    best_share: float | None = None
    best_values = baseline_values
    for epoch in range(1, options.epochs + 1):
        t0 = time.perf_counter()
        loss = trainer.train_epoch(examples, epoch)
        scores = score_pools(trainer.score, pools)
        # `val_ndcg10` is the order as served: for a reranker, blended with the fused score at the best share.
        share = None if options.kind == "embedder" else best_blend(pools, scores, ndcg_at_k=ndcg)[0]
        values = pools_ndcg_values(pools, scores, 1.0 if share is None else share, ndcg_at_k=ndcg)
        score = _mean(values)
        entry: dict[str, float] = {"epoch": epoch, "loss": loss, "val_ndcg10": score}
        if share is not None:
            entry.update({"blend": share, "val_ndcg10_alone": pools_ndcg(pools, scores, ndcg_at_k=ndcg)})
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        alone = "" if share is None else f" (the cross-encoder alone {entry['val_ndcg10_alone']:.4f}, share {share})"
        log(f"epoch {epoch}: loss {loss:.4f}, validation nDCG@10 {score:.4f}{alone} ({entry['seconds']:.0f}s)")
        if score > best:
            best, best_epoch, stale, best_share, best_values = score, epoch, 0, share, values
            trainer.save(work)
        else:
            stale += 1
            if stale > options.patience:
                log(f"stopping: no improvement for {stale} epochs")
                break
    gain = metrics.paired_bootstrap(baseline_values, best_values, seed=0) if baseline_values else None
    significant = gain is not None and gain.low > 0
    registered = best_epoch > 0 and (significant or not options.require_significant_gain)
    if registered:
        reason = ""
    elif best_epoch == 0:
        reason = f"not registered: the best validation nDCG@10 {best:.4f} does not beat the baseline {baseline:.4f}"
    else:
        interval = "" if gain is None else f" [{gain.low:+.4f}, {gain.high:+.4f}]"
        reason = (
            f"not registered: validation nDCG@10 {baseline:.4f} -> {best:.4f}, a gain of {best - baseline:+.4f}"
            f"{interval} over {len(val_q)} queries, which the paired bootstrap cannot tell from noise; "
            "add labelled queries, or pass --register-if-better to register on the mean alone"
        )
    if registered:
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
        register(
            models_dir,
            ModelCard(
                name=name,
                kind=options.kind,
                base_model=options.base_model,
                data_hash=data_hash(queries),
                metrics={
                    "baseline_val_ndcg10": baseline,
                    "val_ndcg10": best,
                    "history": history,
                    **({} if best_share is None else {"blend": best_share}),
                },
                hyperparameters={k: v for k, v in vars(options).items() if k not in ("kind", "base_model")},
                training_data=training_data,
            ),
        )
    else:
        shutil.rmtree(work, ignore_errors=True)
    return TrainingResult(
        name=name,
        kind=options.kind,
        path=str(out) if registered else "",
        registered=registered,
        baseline_ndcg10=baseline,
        best_ndcg10=best,
        epochs_run=len(history),
        best_epoch=best_epoch,
        train_queries=len(train_q),
        validation_queries=len(val_q),
        seconds=time.perf_counter() - started,
        history=history,
        reason=reason,
        blend=best_share if registered else None,
        gain_low=None if gain is None else gain.low,
        gain_high=None if gain is None else gain.high,
    )


class _RerankerTrainer:
    """A cross-encoder trained listwise: for each example, softmax cross-entropy of its positive against its
    hard negatives. A plain torch loop, because the new scoring head needs a larger learning rate than the
    pretrained encoder (`head_lr_factor`); warm-up over the first 10% of the first epoch, then linear decay
    to zero at the last epoch, gradients clipped at norm 1.

    A reranker trained before (a folder or registered name as the base) is trained further as it is; any
    other base gets a new mean-pooled scoring head (`rag.reranking.build_cross_encoder`).
    """

    def __init__(self, options: TrainingOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.log = log
        self.model, self.new_head = _load_or_build_cross_encoder(options)
        self.groups_per_step = max(1, options.batch_size // (1 + options.negatives))
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._rng = random.Random(options.seed)

    def _optimizers(self, steps_per_epoch: int) -> tuple[Any, Any]:
        import torch

        if self._optimizer is None:
            # Only a head built just now learns faster; a trained reranker's head is trained on like the rest.
            head = list(self.model[-1].parameters()) if self.new_head else []
            body = [p for p in self.model.parameters() if id(p) not in {id(h) for h in head}]
            lr = self.options.learning_rate
            groups = [{"params": body, "lr": lr}]
            if head:
                groups.append({"params": head, "lr": lr * self.options.head_lr_factor})
            self._optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
            total = max(1, steps_per_epoch * self.options.epochs)
            warmup = max(1, steps_per_epoch // 10)

            def schedule(step: int) -> float:
                return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

            self._scheduler = torch.optim.lr_scheduler.LambdaLR(self._optimizer, schedule)
        return self._optimizer, self._scheduler

    def train_epoch(self, examples: Sequence[TrainingExample], epoch: int) -> float:
        import torch

        order = list(examples)
        self._rng.shuffle(order)
        steps = (len(order) + self.groups_per_step - 1) // self.groups_per_step
        optimizer, scheduler = self._optimizers(steps)
        self.model.train()
        losses: list[float] = []
        t0 = time.perf_counter()
        for step in range(steps):
            batch = order[step * self.groups_per_step : (step + 1) * self.groups_per_step]
            pairs = [(ex.query, text) for ex in batch for text in (ex.positive, *ex.negatives)]
            features = self.model.preprocess(pairs)
            logits = self.model(features)["scores"].view(len(batch), -1)
            # Each row holds its positive first, then its negatives.
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if (step + 1) % 50 == 0:
                recent = sum(losses[-50:]) / len(losses[-50:])
                self.log(
                    f"  epoch {epoch} step {step + 1}/{steps}: loss {recent:.4f} ({time.perf_counter() - t0:.0f}s)"
                )
        self.model.eval()
        return sum(losses) / len(losses) if losses else 0.0

    def score(self, query: str, texts: list[str]) -> list[float]:
        return [
            float(s) for s in self.model.predict([(query, t) for t in texts], batch_size=32, show_progress_bar=False)
        ]

    def save(self, path: Path) -> None:
        self.model.save_pretrained(str(path))


def _load_or_build_cross_encoder(options: TrainingOptions) -> tuple[Any, bool]:
    """The base as it is when it already is a cross-encoder, else a new scoring head on its encoder;
    and whether the head is new."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    from rag.reranking import build_cross_encoder

    base = options.base_model
    st_config = Path(base) / "config_sentence_transformers.json"
    if st_config.is_file() and json.loads(st_config.read_text(encoding="utf-8")).get("model_type") == "CrossEncoder":
        return CrossEncoder(base, device="cpu", max_length=options.max_length), False
    try:
        architectures = AutoConfig.from_pretrained(base).architectures or []
    except OSError as e:
        raise ConfigError(
            f"--base-model {base!r}: not a model folder, a registered model, or a hub name in the local cache ({e})"
        ) from e
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return CrossEncoder(base, device="cpu", max_length=options.max_length), False
    return build_cross_encoder(base, options.max_length, options.seed), True


class _EmbedderTrainer:
    """The bi-encoder, multiple-negatives ranking loss with one mined hard negative per example."""

    def __init__(self, options: TrainingOptions) -> None:
        from sentence_transformers import SentenceTransformer

        self.options = options
        self.model = SentenceTransformer(options.base_model, device="cpu")

    def train_epoch(self, examples: Sequence[TrainingExample], epoch: int) -> float:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.losses import MultipleNegativesRankingLoss

        rows = {
            "anchor": [ex.query for ex in examples],
            "positive": [ex.positive for ex in examples],
            "negative": [ex.negatives[0] for ex in examples],
        }
        loss = MultipleNegativesRankingLoss(self.model)
        return _run_trainer(
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            self.model,
            Dataset.from_dict(rows),
            loss,
            self.options,
            epoch,
            no_duplicates=True,
        )

    def score(self, query: str, texts: list[str]) -> list[float]:
        import numpy as np

        q = self.model.encode([query], normalize_embeddings=True, show_progress_bar=False)
        d = self.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return [float(x) for x in (np.asarray(d) @ np.asarray(q)[0])]

    def save(self, path: Path) -> None:
        self.model.save_pretrained(str(path))


def _run_trainer(
    trainer_cls: Any,
    args_cls: Any,
    model: Any,
    dataset: Any,
    loss: Any,
    options: TrainingOptions,
    epoch: int,
    no_duplicates: bool = False,
) -> float:
    import tempfile

    kwargs: dict[str, Any] = {}
    if no_duplicates:
        from sentence_transformers.training_args import BatchSamplers

        # In-batch negatives must not include the anchor's own positive.
        kwargs["batch_sampler"] = BatchSamplers.NO_DUPLICATES
    with tempfile.TemporaryDirectory() as tmp:
        args = args_cls(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            warmup_steps=0.1 if epoch == 1 else 0.0,  # a float is a ratio of the steps (transformers 5)
            seed=options.seed + epoch,
            save_strategy="no",
            report_to="none",
            logging_steps=50,
            disable_tqdm=True,
            use_cpu=True,
            **kwargs,
        )
        trainer = trainer_cls(
            model=model, args=args, train_dataset=dataset.shuffle(seed=options.seed + epoch), loss=loss
        )
        # The trainer prints its log dicts to stdout; keep stdout for the command's own (JSON) output.
        with contextlib.redirect_stdout(sys.stderr):
            output = trainer.train()
    return float(output.training_loss)


# -- label-free pairs from a corpus of look-alike documents ------------------------------------------------
# (query, k) -> indices of the k chunks that match the query best lexically (e.g. BM25), best first.
Lexical = Callable[[str, int], list[int]]
_LABEL_NOISE = re.compile(r"[^a-z& ]+")
_TEMPLATES = (
    "{org} {period}: {label}",
    "What does {org} report for {label} in {period}?",
    "{label} ({org}, {period})",
)


def normalise_label(label: str) -> str:
    """A section heading or table-row label as look-alike documents share it: lower case, no digits, notes or
    punctuation ("Research and development (1)" and "RESEARCH AND DEVELOPMENT" are one label)."""
    return " ".join(_LABEL_NOISE.sub(" ", label.lower()).split())


def table_row_labels(text: str) -> list[str]:
    """The first cells of a Markdown table's body rows that name something (two letters at least)."""
    labels = []
    lines = [ln.strip() for ln in text.splitlines()]
    body = False
    for line in lines:
        if not line.startswith("|"):
            body = False
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and all(set(c) <= set("-: ") for c in cells):
            body = True  # the separator row: what follows is the body
            continue
        if body and cells and sum(ch.isalpha() for ch in cells[0]) >= 2:
            labels.append(cells[0])
    return labels


def section_label(chunk: Mapping[str, Any]) -> str:
    path = chunk.get("section_path") or []
    return str(path[-1]) if path else ""


class LookalikePairs:
    """Training queries without labels from chunk payloads of a corpus whose documents look alike.

    Each chunk is a payload with its `document`, `text`, `section_path`, and its card's `organisation`, `period`
    and `title` (what ingest stores). A chunk's label is a table-row label it holds or its section heading; a
    chunk whose label also occurs in another document becomes a query: its document's organisation and period
    plus the label (and, for a section, the chunk's first words). Its positive is the chunk; its hard negatives
    are the chunks with the same label in other documents (the same organisation's other periods first, then
    other organisations: exactly the look-alikes a retriever confuses), then lexical neighbours.
    """

    def __init__(
        self,
        chunks: Sequence[Mapping[str, Any]],
        lexical: Lexical | None = None,
        document_context: bool = True,
        seed: int = 0,
    ) -> None:
        from rag.reranking import document_context_text

        self.chunks = chunks
        self.lexical = lexical
        self.seed = seed
        self.texts = [document_context_text(c, str(c["text"])) if document_context else str(c["text"]) for c in chunks]
        # label -> {document -> chunk indices}
        self.by_label: dict[str, dict[str, list[int]]] = {}
        self.rows: list[list[tuple[str, str]]] = []  # per chunk: (row label as written, normalised)
        for i, c in enumerate(chunks):
            rows = [(r, normalise_label(r)) for r in table_row_labels(str(c["text"]))]
            self.rows.append([(r, n) for r, n in rows if n])
            labels = {n for _, n in self.rows[-1]} | {normalise_label(section_label(c))} - {""}
            for label in labels:
                self.by_label.setdefault(label, {}).setdefault(str(c["document"]), []).append(i)

    def _shared(self, label: str, document: str) -> bool:
        return any(d != document for d in self.by_label.get(label, {}))

    def label_of(self, i: int, rng: random.Random) -> tuple[str, str] | None:
        """(label as written, normalised) of chunk i that another document shares: a row label, else the section."""
        document = str(self.chunks[i]["document"])
        rows = [r for r in self.rows[i] if self._shared(r[1], document)]
        if rows:
            return rng.choice(rows)
        section = section_label(self.chunks[i])
        if section and self._shared(normalise_label(section), document):
            return section, normalise_label(section)
        return None

    def lookalikes(self, i: int, label: str, n: int, rng: random.Random) -> list[int]:
        """Up to n chunks with `label` in other documents: half from the same organisation, the rest from others."""
        chunk = self.chunks[i]
        document, org = str(chunk["document"]), chunk.get("organisation")
        same_org: list[int] = []
        other_org: list[int] = []
        for doc, indices in sorted(self.by_label.get(label, {}).items()):
            if doc == document:
                continue
            j = rng.choice(indices)  # one chunk per document: n different look-alike documents
            if self.texts[j] == self.texts[i]:
                continue
            (same_org if org and self.chunks[j].get("organisation") == org else other_org).append(j)
        rng.shuffle(same_org)
        rng.shuffle(other_org)
        k = min(len(same_org), n // 2)
        picked = same_org[:k] + other_org[: n - k]
        if len(picked) < n:  # too few other organisations share the label: more of the same one's other documents
            picked += same_org[k : k + n - len(picked)]
        return picked

    def _query(self, i: int, label: str, rng: random.Random, with_words: bool) -> str:
        chunk = self.chunks[i]
        org = chunk.get("organisation") or str(chunk.get("title") or "")[:60]
        period = chunk.get("period") or ""
        if with_words:
            words = str(chunk["text"]).replace("|", " ").split()[:12]  # a table's cell bars say nothing
            label = f"{label}: {' '.join(words)}"
        return " ".join(rng.choice(_TEMPLATES).format(org=org, period=period, label=label).split())

    def for_chunk(
        self, i: int, query: str, label: str, negatives: int, lookalikes: int, rng: random.Random, query_id: str
    ) -> LabelledQuery:
        """The labelled query for chunk i: its look-alikes, then lexical neighbours, as hard negatives."""
        chunk = self.chunks[i]
        picked = self.lookalikes(i, label, lookalikes, rng) if label else []
        if self.lexical is not None and len(picked) < negatives:
            pages = set(chunk.get("pages") or [])
            for j in self.lexical(query, negatives * 4):
                other = self.chunks[j]
                same_place = other["document"] == chunk["document"] and (
                    j == i or pages & set(other.get("pages") or [])
                )
                if same_place or j in picked or self.texts[j] == self.texts[i]:
                    continue  # the positive's own page may hold the answer too: never a negative
                picked.append(j)
                if len(picked) >= negatives:
                    break
        return LabelledQuery(
            query_id, query, (self.texts[i],), (str(i),), negatives=tuple(self.texts[j] for j in picked)
        )

    def queries(self, n: int, negatives: int = 7, lookalikes: int = 4) -> list[LabelledQuery]:
        """Up to n queries, spread over the documents in turn (seeded), each with up to `negatives` hard negatives
        of which up to `lookalikes` are look-alikes."""
        rng = random.Random(self.seed)
        by_document: dict[str, list[int]] = {}
        for i, c in enumerate(self.chunks):
            by_document.setdefault(str(c["document"]), []).append(i)
        for indices in by_document.values():
            rng.shuffle(indices)
        order = [i for batch in _round_robin(list(by_document.values())) for i in batch]
        out: list[LabelledQuery] = []
        for i in order:
            if len(out) >= n:
                break
            found = self.label_of(i, rng)
            if found is None:
                continue
            written, label = found
            is_row = any(label == r for _, r in self.rows[i])
            query = self._query(i, written, rng, with_words=not is_row)
            out.append(self.for_chunk(i, query, label, negatives, lookalikes, rng, f"c{i}"))
        return out


def _round_robin(lists: list[list[int]]) -> list[list[int]]:
    """[[a1, b1, ...], [a2, b2, ...], ...]: the first of each list, then the second of each, ..."""
    longest = max((len(x) for x in lists), default=0)
    return [[x[k] for x in lists if k < len(x)] for k in range(longest)]
