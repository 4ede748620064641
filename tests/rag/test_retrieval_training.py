"""`rag finetune retrieval` on a tiny real slice of SciFact: mining, training, validation, registration."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from eval.metrics import ndcg_at_k
from rag.retrieval_training import (
    LabelledQuery,
    Pool,
    TrainingOptions,
    best_blend,
    build_examples,
    load_csv_queries,
    pools_ndcg,
    retrieval_order,
    score_pools,
    split_queries,
)
from tests.conftest import SCIFACT, require, tiny_beir

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_finetune_reranker_end_to_end_through_the_cli(tmp_path: Path) -> None:
    require(SCIFACT)
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    beir = tiny_beir(tmp_path)
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO_ROOT)}
    args = [
        "finetune",
        "retrieval",
        "--kind",
        "reranker",
        "--beir",
        str(beir),
        "--config",
        "test",
        "--epochs",
        "1",
        "--max-length",
        "96",
        "--negatives",
        "2",
        "--batch-size",
        "8",
        "--name",
        "tiny-ce",
        "--json",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    assert result["train_queries"] + result["validation_queries"] == 24
    assert result["epochs_run"] == 1 and len(result["history"]) == result["epochs_run"]
    # Registered exactly when validation beat the fused order it reranks beyond bootstrap noise; the exit code
    # says which.
    significant = result["gain_low"] is not None and result["gain_low"] > 0
    assert result["registered"] == significant == (proc.returncode == 0)
    models = json.loads(
        subprocess.run(
            [sys.executable, "-m", "rag.cli", "models", "list", "--json"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    if result["registered"]:
        card = next(m for m in models if m["name"] == "tiny-ce")
        assert card["kind"] == "reranker" and card["data_hash"] and card["metrics"]["val_ndcg10"] > 0
        query = subprocess.run(
            [
                sys.executable,
                "-m",
                "rag.cli",
                "query",
                "vitamin D",
                "--collection",
                "beir-tiny",
                "--config",
                "test",
                "--set",
                "rerank.model=tiny-ce",
                "--set",
                "rerank.top_n=5",
                "--json",
            ],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert query.returncode == 0, query.stderr
        assert "rerank" in json.loads(query.stdout)["chunks"][0]["stage_scores"]
    else:
        assert "tiny-ce" not in {m["name"] for m in models}
        assert "not registered" in result["reason"]


def test_examples_use_hard_negatives_and_never_the_positive() -> None:
    q = LabelledQuery("q1", "what is x", ("positive text",), ("d1",))
    mined = {
        "q1": [("hard 1", False, 0.9), ("positive text", True, 0.8)] + [(f"neg {i}", False, 0.5) for i in range(10)]
    }
    examples = build_examples([q], mined, TrainingOptions(negatives=4))
    assert len(examples) == 1
    ex = examples[0]
    assert ex.positive == "positive text" and "positive text" not in ex.negatives
    assert ex.negatives[:2] == ("hard 1", "neg 0") and len(set(ex.negatives)) == 4


def test_split_is_by_query_and_seeded() -> None:
    queries = [LabelledQuery(f"q{i}", f"query {i}", (f"p{i}",)) for i in range(20)]
    train_a, val_a = split_queries(queries, 0.15, seed=3)
    _train_b, val_b = split_queries(queries, 0.15, seed=3)
    assert val_a == val_b and len(val_a) == 3 and not {q.query_id for q in val_a} & {q.query_id for q in train_a}


def test_validation_metric_counts_unretrieved_positives() -> None:
    # Two relevant documents, only one retrieved, at rank 2: DCG = 1/log2(3) = 0.631;
    # ideal DCG = 1 + 1/log2(3) = 1.631; nDCG = 0.387.
    pools = [Pool("q", ["a", "b", "c"], [0, 1, 0], 2, [0.9, 0.5, 0.1])]
    assert pools_ndcg(pools, score_pools(retrieval_order, pools), ndcg_at_k=ndcg_at_k) == pytest.approx(
        0.6309 / 1.6309, abs=1e-3
    )


def test_blend_is_chosen_on_validation_and_mixes_standardised_scores() -> None:
    from rag.reranking import blend_scores, standardise

    assert standardise([1.0, 3.0]) == [-1.0, 1.0] and standardise([2.0, 2.0]) == [0.0, 0.0]
    # Share 0.5: 0.5 * z(rerank) + 0.5 * z(fused); z([0, 4]) = [-1, 1], z([3, 1]) = [1, -1] -> a tie at 0.
    assert blend_scores([0.0, 4.0], [3.0, 1.0], 0.5) == [0.0, 0.0]
    assert blend_scores([0.0, 4.0], [3.0, 1.0], 1.0) == [0.0, 4.0], "share 1: the raw cross-encoder score"
    # Pool 1: the fused order is right by a wide margin, the reranker wrong: z(fused) = [-0.707, 1.414, -0.707],
    # z(rerank) = [1.414, -0.707, -0.707], so "rel" is first while the share a < 0.5 (at 0.5 a tie).
    # Pool 2: the reranker is right, the fused order wrong by a hair: z(fused) = [0.816, 0.593, -1.408];
    # "rel" is first when 0.593 (1 - a) + 1.414 a > 0.816 (1 - a) - 0.707 a, i.e. a > 0.095.
    pools = [
        Pool("q1", ["x", "rel", "w"], [0, 1, 0], 1, [0.0, 10.0, 0.0]),
        Pool("q2", ["y", "rel", "w"], [0, 1, 0], 1, [1.0, 0.9, 0.0]),
    ]
    scores = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert pools_ndcg(pools, scores, ndcg_at_k=ndcg_at_k) == pytest.approx((1 / math.log2(3) + 1) / 2), (
        "the cross-encoder alone"
    )
    share, ndcg = best_blend(pools, scores, ndcg_at_k=ndcg_at_k)
    assert ndcg == pytest.approx(1.0) and 0.095 < share <= 0.5, "a share that ranks both pools right"
    assert pools_ndcg(pools, scores, 0.6, ndcg_at_k=ndcg_at_k) < 1.0
    assert pools_ndcg(pools, scores, 0.05, ndcg_at_k=ndcg_at_k) < 1.0


def test_csv_pairs_need_their_columns(tmp_path: Path) -> None:
    from rag.errors import ConfigError

    good = tmp_path / "pairs.csv"
    good.write_text("query,positive\nwhat is x,x is y\nwhat is x,x is also z\nwhy,because\n")
    loaded = load_csv_queries(good)
    assert [len(q.positives) for q in loaded] == [2, 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\na,b\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_csv_queries(bad)


def test_options_do_not_mutate(embedder: Any) -> None:
    assert TrainingOptions().kind == "reranker"


@pytest.mark.slow
def test_finetune_reranker_from_csv_pairs_mines_chunks_of_a_collection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli import main
    from tests.conftest import SAMPLES

    common = ["--config", "test", "--set", f"data_dir={tmp_path / 'data'}"]
    assert main(["ingest", str(SAMPLES), *common, "--progress", "none", "--json"]) == 0
    capsys.readouterr()
    pairs = tmp_path / "pairs.csv"
    rows = [
        ("How many days of paid leave do employees get?", "28 days of paid leave per calendar year"),
        ("When are the core working hours?", "Core hours are 10:00 to 16:00"),
        ("What is the hotel limit per night?", "Hotel, per night"),
        ("How long must passwords be?", "Passwords must be at least 14 characters long"),
        ("What happens when a laptop is lost?", "reported to the IT service desk within 24 hours"),
        ("Who may see confidential documents?", "shared only with named recipients"),
        ("When is a doctor's certificate needed?", "From the fourth day of absence"),
        ("How are receipts submitted?", "Receipts are submitted within 30 days"),
    ]
    pairs.write_text("query,positive\n" + "".join(f'"{q}","{p}"\n' for q, p in rows))
    args = ["finetune", "retrieval", "--kind", "reranker", "--pairs", str(pairs), "--collection", "documents"]
    tiny = ["--epochs", "1", "--max-length", "64", "--negatives", "2", "--batch-size", "6", "--name", "csv-ce"]
    code = main([*args, *tiny, *common, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == (0 if result["registered"] else 1)
    assert result["train_queries"] + result["validation_queries"] == len(rows)
    assert result["epochs_run"] == 1 and result["history"][0]["loss"] > 0
    # The fused order of the chunks is the baseline; the blend is chosen only for a registered reranker.
    assert 0 < result["baseline_ndcg10"] <= 1 and (result["blend"] is not None) == result["registered"]


def test_a_cross_encoder_base_is_trained_on_and_any_other_gets_a_new_head(tmp_path: Path, embedder: Any) -> None:
    from rag.errors import ConfigError
    from rag.reranking import build_cross_encoder
    from rag.retrieval_training import _load_or_build_cross_encoder

    build_cross_encoder(embedder.model_path, 64).save_pretrained(str(tmp_path / "ce"))
    model, new_head = _load_or_build_cross_encoder(TrainingOptions(base_model=str(tmp_path / "ce"), max_length=64))
    assert not new_head and len(model) == 3, "a reranker built here loads with its trained head"
    _model, new_head = _load_or_build_cross_encoder(TrainingOptions(base_model=embedder.model_path, max_length=64))
    assert new_head, "a sentence-embedding model gets a new scoring head"
    with pytest.raises(ConfigError, match="--base-model 'no-such-model'"):
        _load_or_build_cross_encoder(TrainingOptions(base_model="no-such-model"))


def test_half_precision_covers_the_head_too(embedder: Any) -> None:
    import torch

    from rag.reranking import build_cross_encoder, for_device

    # What the reranker does on CUDA, done on the CPU: an fp16 encoder feeding an fp32 head would fail here.
    model = for_device(build_cross_encoder(embedder.model_path, 64), "cuda")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert len(model.predict([("paid leave", "28 days of paid leave"), ("x", "y")])) == 2


def _filing(document: str, org: str, period: str, section: str, text: str, page: int = 3) -> dict[str, Any]:
    return {
        "document": document,
        "organisation": org,
        "period": period,
        "title": f"Annual report {period}",
        "section_path": ["Results", section],
        "pages": [page],
        "text": text,
    }


# Three issuers' filings: the same sections and table rows in every one (the look-alikes), and one section
# ("Outlook") that only one document has.
_TABLE = "| (in millions) | 2023 | 2022 |\n| --- | --- | --- |\n| Research and development (1) | {a} | {b} |"
_LOOKALIKE_CHUNKS = [
    _filing("acme-2023", "Acme Corp", "2023", "Operating expenses", _TABLE.format(a=120, b=110)),
    _filing("acme-2022", "Acme Corp", "2022", "OPERATING EXPENSES", _TABLE.format(a=110, b=95)),
    _filing("acme-2021", "Acme Corp", "2021", "Operating expenses", _TABLE.format(a=95, b=90)),
    _filing("globex-2023", "Globex Inc", "2023", "Operating Expenses", _TABLE.format(a=700, b=650)),
    _filing("initech-2023", "Initech plc", "2023", "Operating expenses 2", _TABLE.format(a=40, b=38)),
    _filing("acme-2023", "Acme Corp", "2023", "Risk factors", "Our suppliers may fail to deliver parts.", page=4),
    _filing("acme-2023", "Acme Corp", "2023", "Outlook", "We expect sales to grow in 2024.", page=3),
    _filing("globex-2023", "Globex Inc", "2023", "Risk factors", "Competition may lower our prices.", page=5),
]


def test_lookalike_pairs_take_hard_negatives_from_other_documents_with_the_same_label() -> None:
    from rag.reranking import document_context_text
    from rag.retrieval_training import LookalikePairs, normalise_label, table_row_labels

    assert table_row_labels(_TABLE.format(a=1, b=2)) == ["Research and development (1)"]
    assert normalise_label("Research and development (1)") == normalise_label("RESEARCH AND DEVELOPMENT")
    chunks = _LOOKALIKE_CHUNKS
    pairs = LookalikePairs(chunks, lexical=None, seed=0)
    text_of = {pairs.texts[i]: i for i in range(len(chunks))}
    queries = pairs.queries(n=20, negatives=3, lookalikes=3)
    # The "Outlook" chunk shares no label with another document: it yields no query.
    assert {q.positive_ids[0] for q in queries} == {"0", "1", "2", "3", "4", "5", "7"}
    for q in queries:
        i = int(q.positive_ids[0])
        assert q.positives == (document_context_text(chunks[i], str(chunks[i]["text"])),)
        assert chunks[i]["organisation"] in q.query and str(chunks[i]["period"]) in q.query
        negatives = [text_of[t] for t in q.negatives]
        assert negatives, f"query {q.query!r} has no look-alike negative"
        for j in negatives:
            assert chunks[j]["document"] != chunks[i]["document"], "a look-alike comes from another document"
            labels = {normalise_label(r) for r in table_row_labels(chunks[j]["text"])}
            labels.add(normalise_label(chunks[j]["section_path"][-1]))
            shared = {normalise_label(r) for r in table_row_labels(chunks[i]["text"])}
            shared.add(normalise_label(chunks[i]["section_path"][-1]))
            assert labels & shared, f"{chunks[j]['document']} shares no label with {chunks[i]['document']}"
    # Acme 2023's R&D row: half its look-alikes from Acme's other years, the rest from other issuers.
    acme = next(q for q in queries if q.positive_ids == ("0",))
    assert "Research and development" in acme.query
    docs = [chunks[text_of[t]]["document"] for t in acme.negatives]
    assert len(docs) == 3 and sum(d.startswith("acme") for d in docs) == 1 and len(set(docs)) == 3


def test_lexical_negatives_skip_the_positive_page_and_fill_up_to_n() -> None:
    from rag.retrieval_training import LookalikePairs

    chunks = _LOOKALIKE_CHUNKS
    # A lexical ranking that puts the positive's own page first (chunk 6: Acme 2023, page 3, like chunk 0).
    pairs = LookalikePairs(chunks, lexical=lambda _q, k: [0, 6, 5, 7, 1, 2, 3, 4][:k], seed=0)
    q = pairs.for_chunk(0, "Acme 2023 R&D", "research and development", 5, 2, random.Random(0), "q")
    negatives = [pairs.texts.index(t) for t in q.negatives]
    assert len(negatives) == 5 and 0 not in negatives and 6 not in negatives, "never the positive's own page"
    assert all(chunks[j]["document"] != "acme-2023" for j in negatives[:2]), "look-alikes first"


def test_csv_pairs_carry_their_negatives(tmp_path: Path) -> None:
    from rag.retrieval_training import write_csv_queries

    queries = [
        LabelledQuery("a", "acme r&d 2023", ("acme 120",), negatives=("globex 700", "acme 2022 110")),
        LabelledQuery("b", "globex risks", ("competition",)),
    ]
    loaded = load_csv_queries(write_csv_queries(queries, tmp_path / "pairs.csv"))
    assert [(q.query, q.positives, q.negatives) for q in loaded] == [
        (q.query, q.positives, q.negatives) for q in queries
    ]
    mined = {"q0": [("mined", False, 1.0)], "q1": [(f"m{i}", False, 1.0) for i in range(3)]}
    examples = build_examples(loaded, mined, TrainingOptions(negatives=3))
    assert examples[0].negatives == ("globex 700", "acme 2022 110", "mined"), "given negatives first, then mined"
    assert sorted(examples[1].negatives) == ["m0", "m1", "m2"]


def test_a_reranker_trained_with_document_context_reads_chunks_with_their_card(tmp_path: Path) -> None:
    from rag.config import RerankSettings
    from rag.registry import ModelCard, register
    from rag.reranking import build_reranker, document_context_text

    chunk = _LOOKALIKE_CHUNKS[0]
    text = document_context_text(chunk, str(chunk["text"]))
    head, body = text.split("\n\n", 1)
    assert head == "Annual report 2023 · Acme Corp\nResults > Operating expenses", "the period is in the title already"
    assert body == chunk["text"]
    assert document_context_text({}, "plain") == "plain"
    for name, hyperparameters in (("ctx", {"document_context": True}), ("plain", {})):
        (tmp_path / name).mkdir()
        register(tmp_path, ModelCard(name, "reranker", "base", "", {"blend": 0.4}, hyperparameters))
    with_context = build_reranker(RerankSettings.model_validate({"model": "ctx"}), tmp_path)
    without = build_reranker(RerankSettings.model_validate({"model": "plain"}), tmp_path)
    assert with_context is not None and with_context.document_context and with_context.blend == 0.4
    assert without is not None and not without.document_context, "a reranker trained before reads chunk text only"
