"""The app's command line and the sidebar's per-question options (ui/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import load_settings
from rag.errors import ConfigError
from ui.settings import ChatOptions, load_app_settings, parse_app_args


def test_parse_app_args_reads_config_and_sets_and_ignores_the_rest() -> None:
    argv = ["--config", "test", "--set=generator.max_new_tokens=8", "--set", "retrieval.mode=dense", "-q", "x"]
    assert parse_app_args(argv) == ("test", ["generator.max_new_tokens=8", "retrieval.mode=dense"])


def test_a_test_runners_flags_are_not_taken_for_ours() -> None:
    # pytest's --co would be read as --config by an argparse that allows abbreviations.
    assert parse_app_args(["--co", "-q", "tests/ui"]) == (None, [])


def test_load_app_settings_layers_the_command_line_over_the_profile(tmp_path: Path) -> None:
    settings = load_app_settings(["--config", "test", f"--set=data_dir={tmp_path}", "--set=answer.max_chunks=3"])
    assert settings.data_dir == tmp_path and settings.answer.max_chunks == 3
    assert settings.ingest.workers == 0  # from configs/test.yaml
    with pytest.raises(ConfigError, match=r"answer\.max_chunks"):
        load_app_settings(["--set=answer.max_chunks=0"])


def test_chat_options_change_a_copy_of_the_answer_settings(tmp_path: Path) -> None:
    settings = load_settings("test", [f"data_dir={tmp_path}", "answer.max_chunks=5", "answer.min_evidence=0.4"])
    options = ChatOptions("sparse", 2, False, 0.7, 16, None)
    changed = options.apply(settings)
    assert (changed.answer.max_chunks, changed.answer.min_evidence) == (2, None)
    assert (settings.answer.max_chunks, settings.answer.min_evidence) == (5, 0.4), "the loaded settings stay"
    generation = options.generation_options(settings)
    assert (generation.temperature, generation.max_new_tokens) == (0.7, 16)
    assert generation.repetition_penalty == settings.generator.repetition_penalty


def test_chat_options_default_to_the_settings(tmp_path: Path) -> None:
    overrides = ["retrieval.mode=dense", "answer.max_chunks=7", "generator.temperature=0.2"]
    settings = load_settings("test", [f"data_dir={tmp_path}", *overrides, "generator.max_new_tokens=99"])
    options = ChatOptions.from_settings(settings)
    assert options == ChatOptions("dense", 7, False, 0.2, 99, settings.answer.min_evidence)
    assert options.apply(settings).answer == settings.answer
