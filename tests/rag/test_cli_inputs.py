"""Bad usage at the edges of the CLI and the retriever: clear errors and exit 2, never a crash or a silent default."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag.cli import main
from rag.errors import UsageError
from tests.conftest import SAMPLES


@pytest.mark.parametrize("value", ["-3", "0", "1001", "ten"])
def test_a_top_k_out_of_range_is_bad_usage(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # -3 was "unexpected OverflowError" (exit 1); 0 silently became the default of 10.
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "paid leave", "--top-k", value, "--config", "test"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--top-k" in err and "Traceback" not in err


def test_a_query_of_control_characters_is_empty(make_settings: Callable[..., Any]) -> None:
    from rag.retrieval import QdrantHybridRetriever

    retriever = QdrantHybridRetriever(None, None, make_settings().retrieval)  # type: ignore[arg-type]
    for query in ("\x00", "\x00\x00 \n", "\x1b"):
        with pytest.raises(UsageError, match="the query is empty"):
            retriever.retrieve(query)
    with pytest.raises(UsageError, match="top_k must be at least 1"):
        retriever.retrieve("paid leave", top_k=0)


def test_an_over_long_query_gives_our_error_without_the_tokenizers_warning(capfd: pytest.CaptureFixture[str]) -> None:
    from rag.config import EmbedderSettings
    from rag.embedding import SentenceTransformerEmbedder

    fresh = SentenceTransformerEmbedder(EmbedderSettings())  # transformers warns once per tokenizer
    with pytest.raises(UsageError, match="over the embedder's window"):
        fresh.embed_query("word " * 3000)
    captured = capfd.readouterr()
    assert "> 512" not in captured.err + captured.out


@pytest.mark.integration
def test_describe_prints_a_newline_in_a_file_name_escaped(
    tmp_path: Path,
    make_settings: Callable[..., Any],
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLES / "security-policy.txt", docs / "line\nbreak.txt")
    settings = make_settings()
    with build_store(settings) as store:
        assert ingest_paths([docs], settings, store, embedder).files_ingested == 1
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    assert main(["collections", "describe", "documents", "--documents", "--config", "test"]) == 0
    out = capsys.readouterr().out
    assert "line\\nbreak.txt" in out and "line\nbreak" not in out
