"""Fixtures for the app's tests: a data folder with samples/ ingested, and one converted generator for all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def app_environment() -> dict[str, str]:
    """What the app under test reads besides RAG_DATA_DIR: the test profile, and answers long enough to check
    but short enough for SmolLM2-135M on two CPU cores (~20 tokens/s)."""
    return {"RAG_CONFIG": "test", "RAG_GENERATOR__MAX_NEW_TOKENS": "24"}


@pytest.fixture(scope="session")
def generator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `<data_dir>/cache/generators` for every data folder: the GGUF is converted once per session."""
    return tmp_path_factory.mktemp("generators")


@pytest.fixture(scope="session")
def make_data_dir(generator_cache: Path, embedder: Any) -> Callable[[Path], Path]:
    """A data folder under `root` holding the collection 'documents' with samples/ ingested through the library."""
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store

    def make(root: Path) -> Path:
        data = root / "data"
        (data / "cache").mkdir(parents=True)
        (data / "cache" / "generators").symlink_to(generator_cache, target_is_directory=True)
        settings = load_settings("test", [f"data_dir={data}"])
        # Closed at once: the embedded store lets one holder open a collection, and the app is that holder.
        with build_store(settings) as store:
            report = ingest_paths([SAMPLES], settings, store, embedder)
        assert report.files_ingested == 3, report
        return data

    return make
