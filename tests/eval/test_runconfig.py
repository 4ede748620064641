"""YAML run configs: paths relative to the file, validation with the file named, flags and --set on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.runconfig import RunSpec, load_run_spec, merge_overrides
from eval.scoring import Thresholds
from rag.config import load_settings
from rag.errors import ConfigError


def test_a_bare_dataset_is_a_default_spec(tmp_path: Path) -> None:
    spec = load_run_spec(tmp_path / "qa.jsonl")
    assert spec == RunSpec(dataset=tmp_path / "qa.jsonl")
    assert spec.run_name == "qa" and spec.seed == 0 and spec.perplexity and not spec.llm_judge


def test_yaml_run_config(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "run.yaml"
    path.write_text(
        "dataset: ../data/clapnq dev\n"
        "name: clap nq/dense\n"
        "corpus: ../docs\n"
        "limit: 50\n"
        "seed: 7\n"
        "thresholds: {min_f1: 0.5}\n"
        "settings:\n  retrieval: {mode: dense, top_k: 3}\n  generator: {max_new_tokens: 64}\n",
        encoding="utf-8",
    )
    spec = load_run_spec(path)
    assert spec.dataset == tmp_path / "configs" / ".." / "data" / "clapnq dev"
    assert spec.corpus == tmp_path / "configs" / ".." / "docs"
    assert (spec.limit, spec.seed) == (50, 7)
    assert spec.thresholds == Thresholds(min_f1=0.5)
    assert spec.run_name == "clap-nq-dense"  # safe for a folder and a collection name
    # Flags left unset keep the file's values; --set wins over `settings:`.
    flagged = spec.updated(limit=None, seed=3, collection="docs")
    assert (flagged.limit, flagged.seed, flagged.collection) == (50, 3, "docs")
    overrides = merge_overrides(spec, ["retrieval.mode=sparse", f"data_dir={tmp_path}"])
    assert overrides["retrieval"] == {"mode": "sparse", "top_k": 3}
    settings = load_settings("test", overrides)
    assert settings.retrieval.mode == "sparse" and settings.generator.max_new_tokens == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limit: 5\n", "'dataset' is required"),
        ("dataset: x.jsonl\nlimt: 5\n", "unknown key.*limt"),
        ("dataset: x.jsonl\nlimit: five\n", "'limit' must be int"),
        ("dataset: x.jsonl\nlimit: 0\n", "at least 1"),
        ("dataset: x.jsonl\nthresholds: {lexicon: 0.5}\n", "'thresholds' accepts lexical"),
        ("dataset: x.jsonl\nsettings: [1]\n", "'settings' must be a mapping"),
        ("- dataset\n", "expected a mapping"),
        ("dataset: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_run_configs_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as error:
        load_run_spec(path)
    assert str(path) in str(error.value)


def test_a_spec_round_trips_through_run_json() -> None:
    spec = RunSpec(dataset=Path("/d/qa.csv"), corpus=Path("/d/docs"), limit=3, thresholds=Thresholds(citation=0.7))
    assert RunSpec.from_dict(spec.to_dict()) == spec
