"""Settings precedence: defaults < YAML profile < RAG_ environment < --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import describe_settings, load_settings, parse_overrides
from rag.errors import ConfigError


def test_defaults_are_the_embedded_store_and_bundled_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    s = load_settings()
    assert s.store.resolved_kind == "edge"
    assert s.embedder.model == "bundled:all-MiniLM-L6-v2"
    assert s.data_dir == Path(".rag")


def test_precedence_yaml_env_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("retrieval:\n  top_k: 3\n  mode: sparse\nchunking:\n  chunk_tokens: 150\n")
    monkeypatch.setenv("RAG_RETRIEVAL__TOP_K", "4")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "d"))
    s = load_settings(profile)
    assert s.retrieval.top_k == 4  # env beats YAML
    assert s.retrieval.mode == "sparse"  # YAML beats defaults
    assert s.chunking.chunk_tokens == 150
    assert s.data_dir == tmp_path / "d"
    s = load_settings(profile, ["retrieval.top_k=7"])
    assert s.retrieval.top_k == 7  # --set beats env


def test_named_profile_and_qdrant_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    s = load_settings("test")
    assert s.ingest.workers == 0
    assert s.store.resolved_kind == "server" and s.store.resolved_url == "http://qdrant:6333"
    assert s.store.api_key is not None and s.store.api_key.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["retrieval.top_k=0"], "retrieval.top_k"),
        (["retrieval.nope=1"], "retrieval.nope"),
        (["chunking.overlap_tokens=150"], "overlap_tokens"),
        (["novalue"], "section.key=value"),
    ],
)
def test_bad_settings_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, overrides)


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="default, finetune-cpu, gpu, test"):
        load_settings("no-such-profile")


def test_parse_overrides_types_values() -> None:
    assert parse_overrides(["a.b=3", "a.c=true", "d=x"]) == {"a": {"b": 3, "c": True}, "d": "x"}


def test_every_setting_has_help_text() -> None:
    rows = describe_settings(load_settings())
    missing = [key for key, _, help_text in rows if not help_text]
    assert not missing, f"settings without help text: {missing}"
