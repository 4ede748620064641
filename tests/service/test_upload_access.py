"""Uploads over HTTP carry access groups: an uploader labels within its own groups, the labels survive a rebuild,
and nobody replaces a file they may not read. Keys alice (hr), bob (it) and an admin; ingest by ingest.pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.test_documents import _runner, wait_job

PAY = "Payroll runs on the 25th; the bonus pool for 2026 is 4.2 percent of salaries."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from rag.access.keys import KeyStore
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    root = tmp_path_factory.mktemp("uploads")
    settings = load_settings("test", [f"data_dir={root / 'data'}", "answer.cache=false"])
    keys = KeyStore(settings.keys_path)
    tokens = {
        "alice": keys.create("alice", ["hr"])[0],
        "bob": keys.create("bob", ["it"])[0],
        "root": keys.create("root", admin=True)[0],
    }
    store = build_store(settings)
    app = create_app(settings, store=store, embedder=embedder, workers=2, ingest=_runner())
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {tokens['root']}"
        assert client.post("/v1/collections", json={"name": "team"}).status_code == 201
        yield client, tokens
    store.close()


def _as(who: str, tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def _upload(client: TestClient, who: str, tokens: dict[str, str], name: str, text: str, **form: str) -> Any:
    files = [("files", (name, text.encode(), "text/markdown"))]
    return client.post("/v1/collections/team/documents", files=files, data=form, headers=_as(who, tokens))


def _sources(client: TestClient, who: str, tokens: dict[str, str], query: str) -> list[str]:
    body = {"query": query, "collection": "team", "top_k": 10}
    r = client.post("/v1/retrieve", json=body, headers=_as(who, tokens))
    assert r.status_code == 200, r.text
    return [Path(c["source"]).name for c in r.json()["chunks"]]


def test_an_upload_is_labelled_with_the_uploaders_groups_and_stays_so_after_a_rebuild(
    served: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = served
    r = _upload(client, "alice", tokens, "pay.md", f"# Pay\n\n{PAY}\n")
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["id"])["state"] == "done"
    r = _upload(client, "bob", tokens, "laptops.md", "# Laptops\n\nLaptops are replaced every four years.\n")
    assert wait_job(client, r.json()["id"])["state"] == "done"
    assert "pay.md" in _sources(client, "alice", tokens, "bonus pool payroll")
    assert "pay.md" not in _sources(client, "bob", tokens, "bonus pool payroll")  # hr only: alice's groups
    assert "laptops.md" not in _sources(client, "alice", tokens, "laptops replaced")

    r = client.post("/v1/collections/team/reindex", json={"rebuild": True})  # as the admin: embeds everything again
    assert wait_job(client, r.json()["id"])["state"] == "done"
    assert "pay.md" not in _sources(client, "bob", tokens, "bonus pool payroll"), "a rebuild made it public"
    assert "pay.md" in _sources(client, "alice", tokens, "bonus pool payroll")


def test_an_uploader_labels_only_within_its_own_groups(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    r = _upload(client, "bob", tokens, "salaries.md", "# Salaries\n\nAll salaries.\n", access="hr")
    assert r.status_code == 403 and "not in group(s) hr" in r.json()["error"]["message"]
    r = _upload(client, "root", tokens, "x.md", "# X\n\nText.\n", access="nosuchgroup")
    assert r.status_code == 400 and r.json()["error"]["param"] == "access"


def test_nobody_replaces_a_file_they_may_not_read(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    r = _upload(client, "alice", tokens, "pay.md", f"# Pay\n\n{PAY}\n")  # alice replaces her own file
    assert r.status_code == 202, r.text
    wait_job(client, r.json()["id"])
    r = _upload(client, "bob", tokens, "pay.md", "# Pay\n\nEveryone gets a 50 percent bonus.\n")
    assert r.status_code == 403 and "may not replace" in r.json()["error"]["message"]
    assert "pay.md" in _sources(client, "alice", tokens, "bonus pool payroll")
