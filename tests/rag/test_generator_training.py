"""Generator fine-tuning: document split, RAFT examples, answer-only loss masks, and the whole loop on samples/
with the bundled SmolLM2 (train, checkpoint, resume, register, serve the adapter, refuse what cannot fit)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rag.errors import ConfigError, UsageError
from rag.generation import GenerationOptions, Message, TransformersGenerator
from rag.generator_training import (
    QAPair,
    RaftExample,
    _cite,
    build_raft_examples,
    finetune_generator,
    split_documents,
    tokenize,
)
from rag.prompting import REFUSAL
from rag.retrieval import QdrantHybridRetriever
from tests.conftest import SAMPLES


def test_split_is_seeded_disjoint_and_complete() -> None:
    ids = [f"doc-{i}" for i in range(20)]
    a, b = split_documents(ids, seed=3), split_documents(list(reversed(ids)), seed=3)
    assert a == b
    assert [len(a[s]) for s in ("train", "validation", "test")] == [14, 3, 3]
    assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(ids)
    assert split_documents(ids, seed=4) != a
    with pytest.raises(UsageError, match="at least 3 documents"):
        split_documents(["a", "b"], seed=0)


def test_the_target_cites_like_the_served_answers() -> None:
    assert _cite("Twenty-eight days.", 2) == "Twenty-eight days [2]."
    assert _cite("28 days", 1) == "28 days [1]."


def test_only_answer_tokens_carry_loss(generator: Any) -> None:
    example = RaftExample("q", (Message("system", "s"), Message("user", "What?")), "It is 28 days [1].", True)
    ids, labels = tokenize(generator.tokenizer, example)
    assert len(ids) == len(labels)
    first = next(i for i, y in enumerate(labels) if y != -100)
    assert all(y == -100 for y in labels[:first]) and all(y != -100 for y in labels[first:])
    answer = generator.tokenizer.decode(labels[first:])
    assert answer.startswith("It is 28 days [1].") and answer.endswith("<|im_end|>")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    from ingest.pipeline import ingest_paths
    from rag.collections import open_collection
    from rag.config import load_settings
    from rag.factory import build_store

    data = tmp_path_factory.mktemp("finetune")
    settings = load_settings("test", [f"data_dir={data}"])
    store = build_store(settings)
    ingest_paths([SAMPLES], settings, store, embedder)
    handle = open_collection(store, "documents", settings, embedder)
    yield settings, QdrantHybridRetriever(handle, embedder, settings.retrieval)
    store.close()


def template_pairs(retriever: QdrantHybridRetriever, documents: Sequence[str], n: int, seed: int) -> list[QAPair]:
    """Stand-in for the model-written questions: 'what does <section> say' answered by its first sentence."""
    from rag.retrieval import RetrievedChunk

    handle = retriever.handle
    pairs = []
    for point_id, payload in sorted(handle.store.scroll(handle.name), key=lambda p: p[0]):
        if payload["document_id"] not in documents or len(pairs) >= n:
            continue
        section = (payload.get("section_path") or ["the document"])[-1]
        first = payload["text"].split(". ")[0].rstrip(".") + "."
        pairs.append(QAPair(f"What does the {section} section say?", first, RetrievedChunk(point_id, 1.0, payload)))
    return pairs


def training_settings(collection: Any, *overrides: str) -> Any:
    from rag.config import load_settings

    base, _ = collection
    return load_settings(
        "test",
        [
            f"data_dir={base.data_dir}",
            "generator_training.questions=4",
            "generator_training.validation_questions=2",
            "generator_training.test_questions=2",
            "generator_training.distractors=1",
            "generator_training.max_seq_tokens=700",
            "generator_training.batch_size=1",
            "generator_training.grad_accumulation=2",
            "generator_training.learning_rate=0.001",
            "generator_training.split=[0.34,0.33,0.33]",
            *overrides,
        ],
    )


def test_raft_examples_hide_the_oracle_among_distractors_from_allowed_documents(
    collection: Any, generator: Any
) -> None:
    _, retriever = collection
    documents = sorted({p["document_id"] for _, p in retriever.handle.store.scroll("documents")})
    pairs = template_pairs(retriever, documents, 8, 0)
    tuned = training_settings(collection, "generator_training.no_oracle_share=0.5", "generator_training.distractors=2")
    allowed = documents[:2]
    examples = build_raft_examples(pairs, retriever, generator, tuned, allowed, seed=1)
    assert len(examples) == len(pairs)
    with_oracle = [e for e in examples if e.has_oracle]
    assert 0 < len(with_oracle) < len(examples)
    for pair, ex in zip(pairs, examples, strict=True):
        user = ex.messages[-1].content
        if ex.has_oracle:
            number = int(ex.target.rsplit("[", 1)[1].split("]")[0])
            assert f"[{number}] (" in user and pair.chunk.text.split(".")[0] in user
            assert ex.target.startswith(pair.answer.rstrip("."))
        else:
            assert ex.target == REFUSAL
        # Every passage shown comes from an allowed document or is the oracle itself.
        sources = {
            p["source_name"] for _, p in retriever.handle.store.scroll("documents") if p["document_id"] in allowed
        }
        shown = [line.split("(", 1)[1].split(",")[0] for line in user.splitlines() if line[:1] == "["]
        assert all(s in sources or s == pair.chunk.payload["source_name"] for s in shown)


def test_the_whole_loop_trains_resumes_registers_and_serves(collection: Any, generator: Any) -> None:
    from rag.registry import list_models

    _, retriever = collection
    settings = training_settings(collection, "generator_training.epochs=1")

    def synthesize(documents: Sequence[str], n: int, seed: int) -> list[QAPair]:
        return template_pairs(retriever, documents, n, seed)

    calls: list[int] = []

    def evaluate(base: Any, adapted: Any, pairs: Sequence[QAPair]) -> dict[str, Any]:
        calls.append(len(pairs))
        return {"questions": len(pairs)}

    first = finetune_generator(settings, retriever, synthesize, evaluate, name="gen-samples", log=lambda m: None)
    assert first.documents == {"train": 1, "validation": 1, "test": 1}
    assert first.training["epochs_run"] == 1 and first.examples["train"] >= 2
    assert first.training["peak_memory_mb"] > 0 and first.training["memory_estimate_mb"] > 0
    folder = Path(first.path)
    assert (folder / "checkpoints" / "epoch-1" / "optimizer.pt").is_file()
    assert (folder / "split.json").is_file() and (folder / "retrieval-pairs.csv").is_file()
    # Resume: one more epoch starts after the checkpoint, not from scratch.
    more = training_settings(collection, "generator_training.epochs=2", "generator_training.patience=5")
    second = finetune_generator(
        more, retriever, synthesize, evaluate, name="gen-samples", resume=True, log=lambda m: None
    )
    assert second.training["resumed_from_epoch"] == 1 and second.training["epochs_run"] == 2
    assert [h["epoch"] for h in second.training["history"]] == [1, 2]
    assert second.training["baseline_validation_loss"] == first.training["baseline_validation_loss"]
    assert second.registered, second.reason  # lr 1e-3 on the citation format lowers validation loss
    card = next(c for c in list_models(more.models_dir) if c.name == "gen-samples")
    assert card.kind == "generator-adapter" and card.base_model == more.generator.model
    assert card.metrics["best_validation_loss"] < card.metrics["baseline_validation_loss"]
    assert calls and calls[-1] == second.pairs["test"]
    # A resumption with other settings is refused, and a failed run leaves no registered adapter behind.
    changed = training_settings(collection, "generator_training.epochs=3", "generator_training.lora_r=4")
    with pytest.raises(ConfigError, match="lora_r"):
        finetune_generator(
            changed, retriever, synthesize, evaluate, name="gen-samples", resume=True, log=lambda m: None
        )
    assert not (folder / "model_card.json").exists()
    register_again = training_settings(collection, "generator_training.epochs=2", "generator_training.patience=5")
    again = finetune_generator(
        register_again, retriever, synthesize, None, name="gen-samples", resume=True, log=lambda m: None
    )
    assert again.registered and (folder / "model_card.json").is_file()
    # Served by name, like any setting.
    served = TransformersGenerator(
        more.generator.model_copy(update={"adapter": "gen-samples"}), more.cache_dir, more.models_dir
    )
    assert served.generate([Message("user", "Say hi.")], GenerationOptions(max_new_tokens=4))[0].strip()


def test_a_batch_that_cannot_fit_is_refused_before_training(collection: Any) -> None:
    _, retriever = collection
    settings = training_settings(collection, "generator_training.batch_size=256")
    with pytest.raises(ConfigError, match=r"generator_training\.batch_size"):
        finetune_generator(
            settings, retriever, lambda d, n, s: template_pairs(retriever, d, n, s), name="too-big", log=lambda m: None
        )
