"""ingest.engine=ray on real files: the same chunk set as the local engine, incremental, changes, bad files, a Ray
worker, an embedding actor or the driver killed mid-run, and writes through a pool of writer actors.

One local Ray (2 CPUs) serves the whole module; the engine uses a Ray already initialised in the process. Its
workers run `_install_crash_hooks` at start: a parse task or an embedding actor SIGKILLs its own process when the
test leaves a marker file for it (real process deaths, at a chosen point, retried by Ray itself).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from ingest.pipeline import ingest_paths, load_state
from rag.errors import ConfigError, MissingDependencyError, StoreError
from rag.factory import build_store
from rag.store.base import PointRecord, VectorStore
from tests.conftest import EXAMPLE_DOCS, REPO_ROOT, SAMPLES, SCIFACT, kill_once_chunks_are_stored, require

pytestmark = pytest.mark.integration

# The folder where tests leave markers for the crash hooks (set in every Ray worker's environment).
CRASH_DIR = "RAG_TEST_RAY_CRASH_DIR"


def _die_if_marked(kind: str, name: str) -> None:
    """In a Ray worker: SIGKILL this process when the test marked `name` (`kill-once-`: the first time only)."""
    folder = Path(os.environ.get(CRASH_DIR, "/nonexistent"))
    once = folder / f"kill-once-{kind}-{name}"
    try:
        once.unlink()  # the one process that removes the marker dies; its retry finds none
    except FileNotFoundError:
        if not (folder / f"kill-always-{kind}-{name}").exists():
            return
    with (folder / "killed").open("a", encoding="utf-8") as f:
        f.write(f"{kind} {name} {os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _install_crash_hooks() -> None:
    """worker_process_setup_hook: wrap the parse of one file and the embedding actor's batch call."""
    from ingest import pipeline, ray_engine

    parse = pipeline.prepare_file

    def prepare_or_die(path: str, known: dict[str, str], *args: Any, **kwargs: Any) -> Any:
        _die_if_marked("parse", Path(path).name)
        return parse(path, known, *args, **kwargs)

    embed = ray_engine._EmbedActor.__call__

    def embed_or_die(self: Any, batch: Any) -> Any:
        _die_if_marked("embed", "batch")
        return embed(self, batch)

    pipeline.prepare_file = prepare_or_die  # type: ignore[assignment]
    ray_engine._EmbedActor.__call__ = embed_or_die  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-crash")


@pytest.fixture(scope="module")
def ray_cluster(crash_dir: Path) -> Iterator[None]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install -e '.[distributed]' (scripts/setup.sh installs it)")
    import ray

    runtime_env = {
        "worker_process_setup_hook": "tests.ingest.test_ray_engine._install_crash_hooks",
        "env_vars": {CRASH_DIR: str(crash_dir), "PYTHONPATH": str(REPO_ROOT)},
    }
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    yield
    ray.shutdown()


def _killed(crash_dir: Path) -> list[str]:
    """'kind name' of every process the hooks killed so far, and clears the record."""
    record = crash_dir / "killed"
    if not record.exists():
        return []
    lines = [" ".join(line.split()[:2]) for line in record.read_text(encoding="utf-8").splitlines()]
    record.unlink()
    return lines


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


def _chunk_set(settings: Any, store: VectorStore | None = None) -> dict[str, tuple[str, int, str]]:
    """Chunk id -> (document id, chunk index, sha256 of the whole payload but its time stamp): what must depend
    neither on the engine nor on a crash. Asserts no (document, index) is stored twice."""
    if store is None:
        with build_store(settings) as own:
            return _chunk_set(settings, own)
    chunks = {}
    for point_id, p in store.scroll(settings.store.collection):
        stable = json.dumps({k: v for k, v in p.items() if k != "ingested_at"}, sort_keys=True)
        chunks[point_id] = (p["document_id"], p["chunk_index"], hashlib.sha256(stable.encode()).hexdigest())
    positions = [(doc, index) for doc, index, _ in chunks.values()]
    assert len(set(positions)) == len(positions), "a chunk position is stored under two ids"
    assert store.count(settings.store.collection) == len(chunks)
    return chunks


def _scifact_files(folder: Path, n: int) -> Path:
    """The first `n` SciFact abstracts as .txt files: real text, 1-3 chunks each at the test profile's 128 tokens."""
    require(SCIFACT)
    folder.mkdir()
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            record = json.loads(line)
            (folder / f"{record['_id']}.txt").write_text(f"{record['title']}\n\n{record['text']}\n")
    return folder


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
    assert ray_chunks == _chunk_set(local), "same ids and payloads from both engines"
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


# -- crashes: a Ray worker, an embedding actor, the driver ------------------------------------------------------
@pytest.mark.slow
def test_a_killed_parse_worker_and_embedding_actor_are_retried_and_the_chunk_set_is_unchanged(
    ray_cluster: None, crash_dir: Path, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _scifact_files(tmp_path / "docs", 8)
    reference = make_settings("ingest.engine=local", data_dir=tmp_path / "reference")
    _ingest(reference, embedder, [docs])
    victim = sorted(docs.iterdir())[3].name  # the 4th file: three are parsed before its worker dies
    (crash_dir / f"kill-once-parse-{victim}").touch()
    (crash_dir / "kill-once-embed-batch").touch()  # the embedding actor dies on its first batch
    on_ray = make_settings("ingest.engine=ray", "ingest.queue_files=2", data_dir=tmp_path / "ray")
    report = _ingest(on_ray, embedder, [docs])
    assert sorted(_killed(crash_dir)) == ["embed batch", f"parse {victim}"], "both processes really died"
    assert (report.files_ingested, report.files_failed) == (8, 0)
    assert _chunk_set(on_ray) == _chunk_set(reference), "retries wrote each chunk once, under the same id"


@pytest.mark.slow
def test_a_file_that_always_kills_its_worker_is_reported_by_name_after_bounded_retries(
    ray_cluster: None, crash_dir: Path, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    docs = _docs(tmp_path)
    poison = crash_dir / "kill-always-parse-employee-handbook.md"
    poison.touch()
    try:
        report = _ingest(make_settings("ingest.engine=ray"), embedder, [docs])
    finally:
        poison.unlink()
    assert _killed(crash_dir) == ["parse employee-handbook.md"] * 4, "one try and 3 retries, not endless"
    assert [Path(f.path).name for f in report.failures] == ["employee-handbook.md"]
    assert "Ray worker died 4 times" in report.failures[0].reason
    assert report.files_ingested == 2, "the other files are written"


@pytest.mark.slow
def test_a_killed_driver_then_a_rerun_equals_an_uninterrupted_run(
    ray_cluster: None, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    import ray

    docs = _scifact_files(tmp_path / "docs", 60)
    reference = make_settings("ingest.engine=local", data_dir=tmp_path / "reference")
    _ingest(reference, embedder, [docs])
    # The driver is a `rag ingest` of its own that joins this module's Ray (RAY_ADDRESS), as on a cluster.
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "RAG_DATA_DIR": str(tmp_path / "killed"),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    args = ["ingest", str(docs), "--config", "test", "--engine", "ray", "--progress", "plain"]
    kill_once_chunks_are_stored([*args, "--set", "ingest.embed_batch_chunks=8"], env)

    killed = make_settings("ingest.engine=ray", data_dir=tmp_path / "killed")
    total = len(_chunk_set(reference))
    with build_store(killed) as store:
        stored = store.count(killed.store.collection)
        partial_docs = [d for d, st in load_state(store, killed.store.collection).items() if not st.complete]
    assert 0 < stored < total, "the driver died mid-run"
    resumed = _ingest(killed, embedder, [docs])
    assert resumed.files_unchanged > 0, "documents finished before the kill are not redone"
    assert set(partial_docs) <= set(resumed.ingested), "a document cut short is redone"
    assert _chunk_set(killed) == _chunk_set(reference)


# -- writes through a pool of writer actors ---------------------------------------------------------------------
class _StoreHost:
    """A Ray actor holding one embedded store: a store that several processes (the driver and the writer actors)
    reach, as they would a Qdrant server; it can refuse upserts like a node that went down."""

    def __init__(self, settings: Any) -> None:
        self.store = build_store(settings)
        self.writers: set[int] = set()
        self.accept_upserts = -1  # how many more upserts to accept (-1: all)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = getattr(self.store, method)(*args, **kwargs)
        return list(result) if method == "scroll" else result

    def upsert_from(self, pid: int, name: str, points: list[PointRecord]) -> None:
        if self.accept_upserts == 0:
            raise StoreError("Qdrant at http://qdrant-2:6333: upserting points failed: connection refused")
        self.accept_upserts -= self.accept_upserts > 0
        self.writers.add(pid)
        self.store.upsert(name, points)

    def refuse_after(self, upserts: int) -> None:
        self.accept_upserts = upserts

    def writer_pids(self) -> list[int]:
        return sorted(self.writers)

    def close(self) -> None:
        self.store.close()


def _hosted_writer(host: Any) -> Callable[[str, Any], None]:
    """In a writer actor: upsert through the host, saying which process wrote."""
    import ray

    pid = os.getpid()
    return lambda name, points: ray.get(host.upsert_from.remote(pid, name, points))


class _HostedStore:
    """The driver's side of the hosted store: every VectorStore call goes to the host actor."""

    backend = "edge"

    def __init__(self, host: Any) -> None:
        self.host = host

    def __getattr__(self, method: str) -> Callable[..., Any]:
        import ray

        return lambda *args, **kwargs: ray.get(self.host.call.remote(method, args, kwargs))

    def remote_writer(self) -> Callable[[], Callable[[str, Any], None]]:
        return partial(_hosted_writer, self.host)


@pytest.fixture
def hosted(ray_cluster: None, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Any, VectorStore]]:
    import ray

    settings = make_settings(
        "ingest.engine=ray", "ingest.ray_writers=2", "ingest.ray_write_batch=4", "ingest.ray_write_attempts=2"
    )
    actor: Any = ray.remote(num_cpus=0)(_StoreHost)
    host = actor.remote(settings)
    yield settings, host, cast(VectorStore, _HostedStore(host))
    ray.get(host.close.remote())
    ray.kill(host)


def test_writer_actors_store_the_same_chunks_as_the_driver(
    hosted: tuple[Any, Any, VectorStore], tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    import ray

    settings, host, store = hosted
    docs = _docs(tmp_path)
    reference = make_settings("ingest.engine=local", data_dir=tmp_path / "reference")
    _ingest(reference, embedder, [docs])
    report = ingest_paths([docs], settings, store, embedder)
    assert (report.files_ingested, report.files_failed) == (3, 0)
    writers = ray.get(host.writer_pids.remote())
    assert len(writers) == 2 and os.getpid() not in writers, "both writer actors wrote, the driver did not"
    assert _chunk_set(settings, store) == _chunk_set(reference)
    again = ingest_paths([docs], settings, store, embedder)
    assert (again.files_unchanged, again.chunks_written) == (3, 0)


def test_a_store_that_refuses_writes_mid_run_stops_it_with_what_was_written(
    hosted: tuple[Any, Any, VectorStore], tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    import ray

    settings, host, store = hosted
    docs = _scifact_files(tmp_path / "docs", 12)
    reference = make_settings("ingest.engine=local", data_dir=tmp_path / "reference")
    _ingest(reference, embedder, [docs])
    ray.get(host.refuse_after.remote(3))  # 3 upserts of 4 points land, then the node refuses
    with pytest.raises(StoreError, match=r"refused 2 times, last: Qdrant at .*connection refused") as refused:
        ingest_paths([docs], settings, store, embedder)
    message = str(refused.value)
    assert "written before the run stopped: 12 chunks" in message, message
    report = json.loads(Path(message.split("(report: ")[1].split(")")[0]).read_text(encoding="utf-8"))
    assert report["chunks_written"] == store.count(settings.store.collection) == 12, "the report is exact"
    assert report["documents_partial"] or report["documents_whole"]

    ray.get(host.refuse_after.remote(-1))  # the node is back: a re-run completes the index
    resumed = ingest_paths([docs], settings, store, embedder)
    assert resumed.files_failed == 0
    assert _chunk_set(settings, store) == _chunk_set(reference)


# -- the example documents: the same chunks from both engines ---------------------------------------------------
def test_ray_and_local_engines_store_the_same_chunks_for_the_example_documents(
    ray_cluster: None, tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    # One small file of each family the loaders handle (PDF, Office, e-mail, HTML, Markdown, CSV, RTF, EPUB), and
    # one that fails (a password-protected PDF): both engines must report it alike.
    names = [
        "pdf/fake-memo.pdf", "pdf/password.pdf", "docx-tables.docx", "fake-power-point-table.pptx", "vodafone.xlsx",
        "eml/fake-email-attachment.eml", "fake-html-cp1252.html", "codeblock.md", "stanley-cups.csv",
        "fake-doc.rtf", "README.rst",
    ]  # fmt: skip
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in names:
        shutil.copy(require(EXAMPLE_DOCS / name), docs / Path(name).name)
    local = make_settings("ingest.engine=local", data_dir=tmp_path / "local")
    on_ray = make_settings("ingest.engine=ray", data_dir=tmp_path / "ray")
    local_report, ray_report = _ingest(local, embedder, [docs]), _ingest(on_ray, embedder, [docs])
    assert ray_report.files_ingested == local_report.files_ingested >= len(names) - 1
    assert [(f.path, f.reason) for f in ray_report.failures] == [(f.path, f.reason) for f in local_report.failures]
    chunks = _chunk_set(on_ray)
    assert chunks == _chunk_set(local), "same ids and payloads"
    assert len({doc for doc, _, _ in chunks.values()}) == ray_report.documents_ingested


def test_writer_actors_reach_a_qdrant_server_by_the_drivers_url_and_their_own_nodes_key(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Any]
) -> None:
    from ingest.ray_engine import writer_factory

    embedded = make_settings("ingest.engine=ray")
    with build_store(embedded) as store:
        assert writer_factory(store, embedded) is None, "the embedded store is written by the driver alone"
    monkeypatch.setenv("QDRANT_URL", "http://qdrant-1:6333")
    monkeypatch.setenv("QDRANT_API_KEY", "driver-key")
    settings = make_settings("ingest.engine=ray", "store.kind=server")
    factory = writer_factory(build_store(settings), settings)
    assert factory is not None
    monkeypatch.delenv("QDRANT_URL")  # a Ray node's environment: the URL comes with the factory...
    write = factory()
    assert write.__self__.settings.resolved_url == "http://qdrant-1:6333"  # type: ignore[attr-defined]
    monkeypatch.delenv("QDRANT_API_KEY")  # ...the key does not: a node without one is named
    with pytest.raises(StoreError, match=r"QDRANT_API_KEY is not set on Ray node .*: the ingest driver has one"):
        factory()
