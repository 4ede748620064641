"""`rag eval retrieval` as a user runs it, on a small real slice of SciFact, fused and reranked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag.cli import main
from tests.conftest import SCIFACT, require, tiny_beir

pytestmark = pytest.mark.integration


def test_eval_retrieval_reports_fused_and_reranked_with_their_paired_difference(
    tmp_path: Path, embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    require(SCIFACT)
    from rag.reranking import build_cross_encoder

    beir = tiny_beir(tmp_path, n_queries=12, n_distractors=30)
    (beir / "qrels" / "test.tsv").write_text((beir / "qrels" / "train.tsv").read_text())
    reranker = tmp_path / "ce"
    build_cross_encoder(embedder.model_path, 128).save_pretrained(str(reranker))
    common = ["--config", "test", "--set", f"data_dir={tmp_path / 'data'}"]
    args = ["eval", "retrieval", "--beir", str(beir), "--mode", "hybrid", *common]
    assert main([*args, "--set", f"rerank.model={reranker}", "--set", "rerank.top_n=10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["modes"]) == {"hybrid", "hybrid+rerank"} and summary["queries"] == 12
    fused, reranked = (summary["modes"][m]["metrics"]["ndcg@10"]["mean"] for m in ("hybrid", "hybrid+rerank"))
    effect = summary["rerank_vs_fused_ndcg@10"]["hybrid+rerank"]
    assert effect["diff"] == pytest.approx(reranked - fused) and effect["n"] == 12
    assert "rerank" in summary["modes"]["hybrid+rerank"]["latency_ms"]
    per_query = json.loads(Path(summary["output"]).read_text())["per_query"]
    assert len(per_query["hybrid"]) == len(per_query["hybrid+rerank"]) == 12

    # The human table says how reranking changed the same queries.
    assert main([*args, "--set", f"rerank.model={reranker}", "--set", "rerank.top_n=10"]) == 0
    table = capsys.readouterr().out
    assert "hybrid+rerank vs hybrid: nDCG@10" in table and "paired bootstrap over 12 queries" in table
