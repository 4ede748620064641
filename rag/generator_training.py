"""`rag finetune generator`: a LoRA adapter that teaches the generator to answer from one collection (RAFT-style).

Documents (not chunks) are split train / validation / test, so no test text is seen in training. Each training
example is a synthetic question with its oracle chunk hidden among hard distractors mined by our own retriever
(from training documents only), or, in a share of examples, distractors alone with a refusal as the target. The
prompt is built by rag/prompting.py exactly as in serving, and the loss covers the answer tokens only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError, UsageError, require_extra
from rag.generation import Message, TransformersGenerator
from rag.prompting import REFUSAL, build_prompt
from rag.retrieval import QdrantHybridRetriever, search
from rag.store.base import Condition, Filter
from rag.types import RetrievedChunk

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class QAPair:
    """A synthetic question, its short answer and the chunk it was written from."""

    question: str
    answer: str
    chunk: RetrievedChunk


@dataclass(frozen=True)
class RaftExample:
    question: str
    messages: tuple[Message, ...]
    target: str
    has_oracle: bool


@dataclass
class TrainingReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_validation_loss: float = float("inf")
    baseline_validation_loss: float = float("inf")
    history: list[dict[str, float]] = field(default_factory=list)
    train_examples: int = 0
    validation_examples: int = 0
    skipped_too_long: int = 0
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_estimate_mb: float = 0.0
    device: str = ""
    resumed_from_epoch: int = 0


# -- data ----------------------------------------------------------------------------------
def split_documents(
    document_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, list[str]]:
    """A seeded split of document ids; each split gets at least one document when there are three or more."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"generator_training.split={fractions}: the three shares must add up to 1")
    ids = sorted(set(document_ids))
    if len(ids) < 3:
        raise UsageError(
            f"the collection has {len(ids)} document(s): a train/validation/test split needs at least 3 documents"
        )
    random.Random(seed).shuffle(ids)
    n_val = max(1, round(len(ids) * fractions[1]))
    n_test = max(1, round(len(ids) * fractions[2]))
    n_train = len(ids) - n_val - n_test
    return {
        "train": sorted(ids[:n_train]),
        "validation": sorted(ids[n_train : n_train + n_val]),
        "test": sorted(ids[n_train + n_val :]),
    }


def _cite(answer: str, number: int) -> str:
    """'Twenty-eight days.' -> 'Twenty-eight days [2].': the serving format, the marker before the final stop."""
    text = answer.strip()
    end = text[-1] if text and text[-1] in ".!?" else "."
    body = text[:-1] if text and text[-1] in ".!?" else text
    return f"{body} [{number}]{end}"


def build_raft_examples(
    pairs: Sequence[QAPair],
    retriever: QdrantHybridRetriever,
    generator: TransformersGenerator,
    settings: Settings,
    allowed_documents: Sequence[str],
    seed: int,
) -> list[RaftExample]:
    """One example per pair: the oracle among hard distractors from `allowed_documents`, or no oracle at all."""
    cfg = settings.generator_training
    rng = random.Random(seed)
    only = Filter((Condition("document_id", any_of=tuple(allowed_documents)),))
    answer_settings = settings.answer.model_copy(update={"max_chunks": cfg.distractors + 1})
    examples = []
    for pair in pairs:
        found = search(retriever, None, pair.question, top_k=cfg.distractors + 4, filters=only, rerank=False)
        distractors = [c for c in found.chunks if c.id != pair.chunk.id and c.text != pair.chunk.text]
        distractors = distractors[: cfg.distractors]
        has_oracle = rng.random() >= cfg.no_oracle_share
        chunks = [*distractors, pair.chunk] if has_oracle else list(distractors)
        rng.shuffle(chunks)
        if not chunks:
            continue
        prompt = build_prompt(pair.question, chunks, generator, answer_settings, cfg.max_answer_tokens)
        oracle = [c for c in prompt.chunks if c.chunk.id == pair.chunk.id and not c.truncated]
        if has_oracle and not oracle:
            continue  # the oracle did not fit whole: an answer it cannot support would teach guessing
        target = _cite(pair.answer, oracle[0].number) if has_oracle else REFUSAL
        examples.append(RaftExample(pair.question, prompt.messages, target, has_oracle))
    return examples


def tokenize(tokenizer: Any, example: RaftExample) -> tuple[list[int], list[int]]:
    """Input ids of prompt + answer through the chat template, and labels that mask everything but the answer."""
    chat = [{"role": m.role, "content": m.content} for m in example.messages]
    prompt = str(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
    full = str(tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": example.target}], tokenize=False))
    if not full.startswith(prompt):
        raise ConfigError("the model's chat template renders the prompt differently once an answer is added")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    return list(prompt_ids) + list(answer_ids), [-100] * len(prompt_ids) + list(answer_ids)


def data_hash(pairs: Sequence[QAPair], splits: dict[str, list[str]]) -> str:
    digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode())
    for p in pairs:
        digest.update(f"{p.question}\x1f{p.answer}\x1f{p.chunk.id}\n".encode())
    return digest.hexdigest()[:16]


# -- memory --------------------------------------------------------------------------------
def estimate_memory_mb(model: Any, batch_size: int, seq_tokens: int) -> float:
    """Weights + training activations, from Korthikanti et al. 2022 (34·s·b·h + 5·a·s²·b bytes per layer in
    16-bit), doubled for fp32; LoRA's own parameters and optimizer state are a rounding error beside them."""
    config = model.config
    hidden = int(getattr(config, "hidden_size", 1024))
    layers = int(getattr(config, "num_hidden_layers", 24))
    heads = int(getattr(config, "num_attention_heads", 16))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_layer = 34 * seq_tokens * batch_size * hidden + 5 * heads * seq_tokens**2 * batch_size
    bytes_per_value = 2 if next(model.parameters()).element_size() <= 2 else 4
    activations = layers * per_layer * bytes_per_value / 2
    vocab = int(getattr(config, "vocab_size", 50_000))
    logits = batch_size * seq_tokens * vocab * 4 * 2  # fp32 logits and their gradient
    return (weights + activations + logits) / 2**20


def available_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free) / 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) / 2**20


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# -- training ------------------------------------------------------------------------------
class LoraTrainer:
    """A LoRA adapter on the generator's own model: epochs of AdamW with gradient accumulation, validation loss
    after each epoch, the best epoch kept, early stopping, and a checkpoint per epoch to resume from."""

    def __init__(self, generator: TransformersGenerator, settings: Settings, output_dir: Path) -> None:
        if generator.settings.adapter:
            raise ConfigError("generator.adapter is set: fine-tune from the base model (unset generator.adapter)")
        require_extra("peft", "finetune", "rag finetune generator")
        self.generator = generator
        self.settings = settings
        self.cfg = settings.generator_training
        self.output_dir = output_dir

    def _model(self) -> Any:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        model = self.generator.model
        if self.generator.settings.quantization != "none":
            model = prepare_model_for_kbit_training(model)  # QLoRA: frozen 4/8-bit base, trainable fp adapters
        config = LoraConfig(
            r=self.cfg.lora_r,
            lora_alpha=self.cfg.lora_alpha,
            lora_dropout=self.cfg.lora_dropout,
            target_modules=list(self.cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)

    def _batches(self, rows: list[tuple[list[int], list[int]]], shuffle: bool, epoch: int) -> list[Any]:
        import torch

        order = list(range(len(rows)))
        if shuffle:
            random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
        pad = self.generator.tokenizer.pad_token_id
        batches = []
        for start in range(0, len(order), self.cfg.batch_size):
            group = [rows[i] for i in order[start : start + self.cfg.batch_size]]
            width = max(len(ids) for ids, _ in group)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            labels = torch.full((len(group), width), -100, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for i, (x, y) in enumerate(group):
                ids[i, : len(x)] = torch.tensor(x)
                labels[i, : len(y)] = torch.tensor(y)
                mask[i, : len(x)] = 1
            batches.append((ids, labels, mask))
        return batches

    def _loss(self, model: Any, batches: list[Any]) -> float:
        import torch

        model.eval()
        total = tokens = 0.0
        with torch.inference_mode():
            for ids, labels, mask in batches:
                device = self.generator.device
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
                n = float((labels[:, 1:] != -100).sum())
                total += float(out.loss) * n
                tokens += n
        return total / max(tokens, 1.0)

    def train(
        self,
        train: Sequence[RaftExample],
        validation: Sequence[RaftExample],
        resume: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> tuple[TrainingReport, Path]:
        import torch

        say = log or (lambda m: print(m, file=sys.stderr))
        tokenizer = self.generator.tokenizer
        report = TrainingReport(device=self.generator.device)
        rows: dict[str, list[tuple[list[int], list[int]]]] = {"train": [], "validation": []}
        for name, examples in (("train", train), ("validation", validation)):
            for ex in examples:
                ids, labels = tokenize(tokenizer, ex)
                if len(ids) > self.cfg.max_seq_tokens:
                    report.skipped_too_long += 1
                    continue
                rows[name].append((ids, labels))
        if not rows["train"] or not rows["validation"]:
            raise UsageError(
                f"{len(rows['train'])} training and {len(rows['validation'])} validation examples fit "
                f"generator_training.max_seq_tokens={self.cfg.max_seq_tokens}: raise it, or synthesize more questions"
            )
        report.train_examples, report.validation_examples = len(rows["train"]), len(rows["validation"])
        longest = max(len(ids) for ids, _ in rows["train"])
        estimate = estimate_memory_mb(self.generator.model, self.cfg.batch_size, longest)
        available = available_memory_mb(self.generator.device)
        report.memory_estimate_mb = estimate
        if estimate > 0.9 * available:
            raise ConfigError(
                f"training needs about {estimate:,.0f} MB ({self.generator.name}, batch {self.cfg.batch_size} x "
                f"{longest} tokens) but {available:,.0f} MB is free on {self.generator.device}: "
                "lower generator_training.batch_size (raise grad_accumulation to keep the effective batch) or "
                "generator_training.max_seq_tokens, or use generator.quantization=4bit on a GPU"
            )
        torch.manual_seed(self.cfg.seed)
        model = self._model()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=0.0)
        validation_batches = self._batches(rows["validation"], shuffle=False, epoch=0)
        checkpoints = self.output_dir / "checkpoints"
        best_dir = self.output_dir  # the registered model folder: adapter_config.json + weights of the best epoch
        start_epoch = 1
        state_file = self.output_dir / "state.json"
        if resume and state_file.is_file():
            state = json.loads(state_file.read_text(encoding="utf-8"))
            self._check_resumable(state.get("settings", {}))
            last = checkpoints / f"epoch-{state['epochs_run']}"
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(last / "adapter_model.safetensors")))
            optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
            for key in ("epochs_run", "best_epoch", "best_validation_loss", "baseline_validation_loss", "history"):
                setattr(report, key, state[key])
            report.resumed_from_epoch = state["epochs_run"]
            start_epoch = state["epochs_run"] + 1
            say(f"resuming after epoch {state['epochs_run']} (best so far: epoch {state['best_epoch']})")
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)
            report.baseline_validation_loss = self._loss(model, validation_batches)
            report.best_validation_loss = report.baseline_validation_loss
            say(f"validation loss before training: {report.baseline_validation_loss:.4f}")
        autocast = self._autocast()
        started = time.perf_counter()
        for epoch in range(start_epoch, self.cfg.epochs + 1):
            if epoch - report.best_epoch > self.cfg.patience and report.best_epoch > 0:
                break
            model.train()
            batches = self._batches(rows["train"], shuffle=True, epoch=epoch)
            running, steps = 0.0, 0
            optimizer.zero_grad()
            for i, (ids, labels, mask) in enumerate(batches, 1):
                device = self.generator.device
                with autocast:
                    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
                (out.loss / self.cfg.grad_accumulation).backward()
                running += float(out.loss.detach())
                if i % self.cfg.grad_accumulation == 0 or i == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    optimizer.zero_grad()
                    steps += 1
            val = self._loss(model, validation_batches)
            report.history.append({"epoch": epoch, "train_loss": running / len(batches), "validation_loss": val})
            report.epochs_run = epoch
            improved = val < report.best_validation_loss
            if improved:
                report.best_validation_loss, report.best_epoch = val, epoch
                model.save_pretrained(best_dir)
            say(
                f"epoch {epoch}: train loss {running / len(batches):.4f}, validation loss {val:.4f}"
                + (" (best)" if improved else "")
            )
            target = checkpoints / f"epoch-{epoch}"
            model.save_pretrained(target)
            torch.save(optimizer.state_dict(), target / "optimizer.pt")
            state = {k: getattr(report, k) for k in ("epochs_run", "best_epoch", "best_validation_loss")}
            state.update(
                baseline_validation_loss=report.baseline_validation_loss,
                history=report.history,
                settings=self._resume_key(),
            )
            state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
        report.seconds = time.perf_counter() - started
        report.peak_memory_mb = peak_memory_mb(self.generator.device)
        return report, best_dir

    def _resume_key(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (more epochs or patience may)."""
        key = self.cfg.model_dump(mode="json", exclude={"epochs", "patience"})
        key["generator.model"] = self.generator.settings.model
        key["generator.quantization"] = self.generator.settings.quantization
        return key

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        current = self._resume_key()
        changed = sorted(k for k in current if saved.get(k) != current[k])
        if changed:
            raise ConfigError(
                f"{self.output_dir} was trained with other settings ({', '.join(changed)} differ): "
                "resume with the same settings, or drop --resume to start over"
            )

    def _autocast(self) -> Any:
        import contextlib

        import torch

        device = self.generator.device
        if device.startswith("cuda") and self.generator.settings.quantization == "none":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


# -- the whole loop ------------------------------------------------------------------------
# (document ids, how many, seed) -> checked QA pairs written from those documents' chunks (eval/testset.py).
Synthesize = Callable[[Sequence[str], int, int], list[QAPair]]
# (base generator, adapted generator, test pairs) -> comparison summary (eval harness; paired bootstrap).
Evaluate = Callable[[TransformersGenerator, TransformersGenerator, Sequence[QAPair]], dict[str, Any]]


@dataclass
class FinetuneResult:
    name: str
    path: str
    registered: bool
    reason: str
    documents: dict[str, int]
    pairs: dict[str, int]
    examples: dict[str, int]
    training: dict[str, Any]
    evaluation: dict[str, Any]
    retrieval_pairs: str
    seconds: float


def _save_pairs(path: Path, pairs: Sequence[QAPair]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"question": p.question, "answer": p.answer, "id": p.chunk.id, "payload": p.chunk.payload} for p in pairs]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _load_pairs(path: Path) -> list[QAPair]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        pairs.append(QAPair(row["question"], row["answer"], RetrievedChunk(row["id"], 1.0, row["payload"])))
    return pairs


def write_retrieval_pairs(path: Path, pairs: Sequence[QAPair]) -> Path:
    """The same questions as `query,positive` rows for `rag finetune retrieval --pairs`."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "positive"])
        for p in pairs:
            writer.writerow([p.question, p.chunk.text])
    return path


def finetune_generator(
    settings: Settings,
    retriever: QdrantHybridRetriever,
    synthesize: Synthesize,
    evaluate: Evaluate | None = None,
    *,
    name: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Split, synthesize, build RAFT examples, train the adapter, register it if it beats the base, evaluate."""
    from rag.registry import CARD, ModelCard, register

    say = log or (lambda m: print(m, file=sys.stderr))
    started = time.perf_counter()
    cfg = settings.generator_training
    if settings.generator.kind != "transformers":
        raise ConfigError("rag finetune generator trains a local model: set generator.kind=transformers")
    handle = retriever.handle
    name = name or f"generator-{handle.name}"
    folder = settings.models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    # The folder's adapter files are about to change: unregister first, so a run that fails half-way never
    # leaves an old card vouching for new, half-written weights. The card comes back only at the end.
    (folder / CARD).unlink(missing_ok=True)
    documents = sorted({str(p["document_id"]) for _, p in handle.store.scroll(handle.name, fields=["document_id"])})
    splits = split_documents(documents, cfg.seed, cfg.split)
    (folder / "split.json").write_text(json.dumps({"seed": cfg.seed, **splits}, indent=2), encoding="utf-8")
    say(f"{len(documents)} documents: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} (seed {cfg.seed})")

    wanted = {"train": cfg.questions, "validation": cfg.validation_questions, "test": cfg.test_questions}
    pairs: dict[str, list[QAPair]] = {}
    for split, n in wanted.items():
        cached = folder / f"pairs-{split}.jsonl"
        if resume and cached.is_file():
            pairs[split] = _load_pairs(cached)
        else:
            say(f"writing {n} {split} questions from {len(splits[split])} documents...")
            pairs[split] = synthesize(splits[split], n, cfg.seed + SPLITS.index(split))
            _save_pairs(cached, pairs[split])
    if len(pairs["train"]) < 2 or len(pairs["validation"]) < 1:
        raise UsageError(
            f"only {len(pairs['train'])} training and {len(pairs['validation'])} validation questions passed the "
            "quality checks: the collection may be too small, or the generator too weak to write questions "
            "(configure a stronger generator.model for synthesis)"
        )
    retrieval_pairs = write_retrieval_pairs(folder / "retrieval-pairs.csv", pairs["train"])

    base_settings = settings.generator.model_copy(update={"adapter": None})
    trainee = TransformersGenerator(base_settings, settings.cache_dir, settings.models_dir)
    examples = {
        split: build_raft_examples(pairs[split], retriever, trainee, settings, splits[split], cfg.seed + i)
        for i, split in enumerate(("train", "validation"))
    }
    report, adapter_dir = LoraTrainer(trainee, settings, folder).train(
        examples["train"], examples["validation"], resume=resume, log=say
    )
    registered = report.best_epoch > 0
    reason = (
        f"validation loss {report.baseline_validation_loss:.4f} -> {report.best_validation_loss:.4f} (epoch "
        f"{report.best_epoch})"
        if registered
        else f"no epoch beat the base model's validation loss {report.baseline_validation_loss:.4f}: not registered"
    )
    evaluation: dict[str, Any] = {}
    if registered and evaluate is not None and pairs["test"]:
        say(f"evaluating base vs adapter on {len(pairs['test'])} questions from the test documents...")
        base = TransformersGenerator(base_settings, settings.cache_dir, settings.models_dir)
        adapted_settings = base_settings.model_copy(update={"adapter": str(adapter_dir)})
        adapted = TransformersGenerator(adapted_settings, settings.cache_dir, settings.models_dir)
        evaluation = evaluate(base, adapted, pairs["test"])
    if registered:
        card = ModelCard(
            name=name,
            kind="generator-adapter",
            base_model=settings.generator.model,
            data_hash=data_hash([*pairs["train"], *pairs["validation"]], splits),
            metrics={
                "baseline_validation_loss": report.baseline_validation_loss,
                "best_validation_loss": report.best_validation_loss,
                "test": evaluation,
            },
            hyperparameters=cfg.model_dump(mode="json"),
            training_data=(
                f"collection {handle.name} index_version {handle.metadata.get('index_version')}, "
                f"{len(pairs['train'])} synthetic questions, split seed {cfg.seed}"
            ),
        )
        register(settings.models_dir, card)
    return FinetuneResult(
        name=name,
        path=str(folder),
        registered=registered,
        reason=reason,
        documents={k: len(v) for k, v in splits.items()},
        pairs={k: len(v) for k, v in pairs.items()},
        examples={k: len(v) for k, v in examples.items()},
        training=asdict(report),
        evaluation=evaluation,
        retrieval_pairs=str(retrieval_pairs),
        seconds=time.perf_counter() - started,
    )
