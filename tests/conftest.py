"""Shared fixtures: the real bundled embedder loaded once, fresh settings per test, the shared data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
EXAMPLE_DOCS = SHARED_DATA / "unstructured-example-docs" / "docs"
SCIFACT = SHARED_DATA / "beir-scifact"
SAMPLES = REPO_ROOT / "samples"


def run_rag(args: Sequence[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m rag.cli ARGS` in the repository, output captured as text; `kwargs` go to subprocess.run."""
    options: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 600, **kwargs}
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], env=env, cwd=REPO_ROOT, **options)


def kill_once_chunks_are_stored(args: Sequence[str], env: dict[str, str]) -> None:
    """Start `rag <args>` (an ingest with `--progress plain`) and SIGKILL it as soon as its progress line says some
    chunks are stored, so the store holds a part of the run and not all of it."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if line.startswith("progress") and "chunks=0 " not in line:
            break  # some chunks are in the store, most are not
        assert time.monotonic() < deadline, "the ingest never reported progress"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def require(path: Path) -> Path:
    """Skip the test, saying what is missing, when shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (it lives in ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def embedder() -> Any:
    from rag.config import EmbedderSettings
    from rag.embedding import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(EmbedderSettings(batch_size=32, backend="torch"))
    _ = emb.model  # load once for the session
    return emb


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    """Settings from the test profile with data_dir in a fresh folder, plus overrides."""
    from rag.config import load_settings

    def build(*overrides: str, data_dir: Path | None = None) -> Any:
        return load_settings("test", [f"data_dir={data_dir or tmp_path / 'data'}", *overrides])

    return build


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The bundled SmolLM2-135M generator, loaded once (its GGUF converted once) for the whole session."""
    from rag.config import load_settings
    from rag.generation import build_generator

    settings = load_settings("test", [f"data_dir={tmp_path_factory.mktemp('generator')}"])
    gen = build_generator(settings)
    gen.warm_up()
    return gen


def tiny_beir(root: Path, n_queries: int = 24, n_distractors: int = 40) -> Path:
    """A BEIR folder with the positives of the first train queries plus random distractors."""
    import json
    import random

    from eval.beir import iter_corpus, load_beir

    full = load_beir(SCIFACT, "train")
    qids = sorted(full.queries)[:n_queries]
    keep = {d for q in qids for d in full.qrels[q]}
    corpus = list(iter_corpus(full.corpus_path))
    others = [r for r in corpus if r["_id"] not in keep]
    chosen = [r for r in corpus if r["_id"] in keep] + random.Random(0).sample(others, n_distractors)
    out = root / "tiny"
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    (out / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": full.queries[q]}) + "\n" for q in qids))
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q in qids for d, g in full.qrels[q].items()]
    (out / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n")
    return out
