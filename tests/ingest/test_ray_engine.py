"""ingest.engine=ray on real files: the same chunk set as the local engine, incremental, changes, bad files.

One local Ray (2 CPUs) serves the whole module; the engine uses a Ray already initialised in the process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import ingest_paths
from rag.errors import ConfigError, MissingDependencyError
from rag.factory import build_store
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install -e '.[distributed]' (scripts/setup.sh installs it)")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


# The two tests without a cluster come first: the module's Ray, once started, is what connect() would use.
def test_ray_engine_without_ray_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Any]
) -> None:
    from ingest import ray_engine

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"pip install 'rag-framework\[distributed\]'"):
        ray_engine.connect(make_settings("ingest.engine=ray"))


def test_a_ray_address_that_does_not_answer_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Any]
) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install -e '.[distributed]'")
    import ray

    from ingest import ray_engine

    assert not ray.is_initialized()
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=f"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers"):
        ray_engine.connect(make_settings("ingest.engine=ray"))
    assert not ray.is_initialized()


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    return docs


def _ingest(settings: Any, embedder: Any, paths: list[Path]) -> Any:
    with build_store(settings) as store:
        return ingest_paths(paths, settings, store, embedder)


def _chunk_set(settings: Any) -> dict[str, tuple[str, str, int]]:
    """Chunk id -> (document id, sha256 of its text, chunk count): what must not depend on the engine."""
    with build_store(settings) as store:
        return {
            point_id: (p["document_id"], hashlib.sha256(p["text"].encode()).hexdigest(), p["chunk_count"])
            for point_id, p in store.scroll(settings.store.collection)
        }


def test_ray_and_local_engines_store_the_same_chunks_and_ray_reruns_write_nothing(
    ray_cluster: None, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _docs(tmp_path)
    local = make_settings("ingest.engine=local", data_dir=tmp_path / "local")
    on_ray = make_settings("ingest.engine=ray", data_dir=tmp_path / "ray")
    local_report = _ingest(local, embedder, [docs])
    ray_report = _ingest(on_ray, embedder, [docs])
    assert (ray_report.files_ingested, ray_report.files_failed) == (3, 0)
    assert ray_report.chunks_written == local_report.chunks_written > 3
    assert ray_report.seconds_embed > 0, "the actors' embedding time is reported"
    ray_chunks = _chunk_set(on_ray)
    assert ray_chunks == _chunk_set(local), "same ids, texts and counts from both engines"
    assert len({doc for doc, _, _ in ray_chunks.values()}) == 3

    again = _ingest(on_ray, embedder, [docs])
    assert (again.files_unchanged, again.chunks_written, again.index_version) == (3, 0, ray_report.index_version)


def test_ray_engine_replaces_a_changed_file_and_reports_a_bad_one_by_name(
    ray_cluster: None, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _docs(tmp_path)
    settings = make_settings("ingest.engine=ray")
    _ingest(settings, embedder, [docs])
    handbook = docs / "employee-handbook.md"
    handbook.write_text(handbook.read_text().replace("28 days", "30 days") + "\n## Parental leave\n\nSixteen weeks.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n this is not really a pdf")
    report = _ingest(settings, embedder, [docs])
    assert report.ingested == (str(handbook.resolve()),)
    assert [Path(f.path).name for f in report.failures] == ["broken.pdf"]
    with build_store(settings) as store:
        mine = [p for _, p in store.scroll(settings.store.collection) if p["source"] == str(handbook.resolve())]
    assert len({p["content_hash"] for p in mine}) == 1, "no stale chunk of the old version"
    assert len(mine) == mine[0]["chunk_count"]
    assert any("30 days" in p["text"] for p in mine) and not any("28 days" in p["text"] for p in mine)


def test_compose_ray_profile_has_a_three_node_qdrant_cluster_and_a_ray_cluster() -> None:
    import yaml

    from tests.conftest import REPO_ROOT

    services = yaml.safe_load((REPO_ROOT / "docker-compose.ray.yml").read_text(encoding="utf-8"))["services"]
    nodes = [services[f"qdrant-{i}"] for i in (1, 2, 3)]
    assert all(n["environment"]["QDRANT__CLUSTER__ENABLED"] == "true" for n in nodes)
    assert "--bootstrap" not in nodes[0]["command"]
    assert all(n["command"][n["command"].index("--bootstrap") + 1] == "http://qdrant-1:6335" for n in nodes[1:])
    ingest = services["ingest-ray"]
    assert ingest["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    assert "--engine" in ingest["command"] and "ray" in ingest["command"]
    # Parse tasks open files by the driver's paths: the workers mount the documents where the driver does.
    assert set(ingest["volumes"]) & set(services["ray-worker"]["volumes"])
