"""API keys on `rag serve`: 401 without a valid key, 403 for a collection the key has no rights to, and the leak
test over HTTP: bob (group it) never receives a chunk, a citation or a listing of alice's (group hr) handbook."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.access.keys import KeyStore
from rag.access.principal import Principal
from tests.conftest import SAMPLES
from tests.rag.test_access import HANDBOOK_SENTENCE
from tests.rag.test_answering import ScriptedGenerator

HANDBOOK = "employee-handbook.md"


@dataclass
class Served:
    client: TestClient
    settings: Any
    store: Any
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Served]:
    from ingest.pipeline import ingest_paths
    from rag.access.rules import document_access
    from rag.config import load_settings
    from rag.factory import build_store
    from rag.service import create_app

    root = tmp_path_factory.mktemp("auth")
    docs = root / "docs"
    for folder, name in (("hr", HANDBOOK), ("it", "security-policy.txt"), (".", "product-faq.html")):
        (docs / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / name, docs / folder / name)
    settings = load_settings(
        "test", [f"data_dir={root / 'data'}", "answer.mode=extract", "answer.min_evidence=null", "answer.cache=false"]
    )
    keys = KeyStore(settings.keys_path)
    tokens = {
        "alice": keys.create("alice", ["hr"])[0],
        "bob": keys.create("bob", ["it"])[0],
        "root": keys.create("root", admin=True)[0],
        "gone": keys.create("gone", ["hr"])[0],
    }
    keys.revoke("gone")
    store = build_store(settings)
    ingest_paths([docs], settings, store, embedder, access=document_access(settings, ["public"], None))
    ingest_paths([docs / "hr"], settings, store, embedder, access=document_access(settings, ["hr"]))
    ingest_paths([docs / "it"], settings, store, embedder, access=document_access(settings, ["it"]))
    app = create_app(settings, store=store, embedder=embedder, generator=ScriptedGenerator(), workers=2)
    with TestClient(app) as client:
        yield Served(client, settings, store, tokens)
    store.close()


def _without_echo(value: Any) -> Any:
    """A response without the fields that echo the request (`query`, `question`): what the server gave back."""
    if isinstance(value, dict):
        return {k: _without_echo(v) for k, v in value.items() if k not in ("query", "question")}
    if isinstance(value, list):
        return [_without_echo(v) for v in value]
    return value


def _retrieve(s: Served, who: str, query: str, **extra: Any) -> Any:
    return s.client.post("/v1/retrieve", json={"query": query, "top_k": 10, **extra}, headers=s.headers(who))


def _chat(s: Served, who: str, messages: list[dict[str, str]]) -> Any:
    body = {"model": s.settings.store.collection, "messages": messages}
    return s.client.post("/v1/chat/completions", json=body, headers=s.headers(who))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer rag_0000abcd_" + "x" * 43}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_every_v1_route_needs_a_valid_key(served: Served, headers: dict[str, str]) -> None:
    routes = (("POST", "/v1/retrieve"), ("GET", "/v1/models"), ("GET", "/v1/collections/documents/documents"))
    for method, path in routes:
        r = served.client.request(method, path, json={"query": "leave"}, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert served.client.get("/healthz").status_code == 200  # probes stay open


def test_a_revoked_key_is_401_naming_the_revocation(served: Served) -> None:
    r = _retrieve(served, "gone", "paid leave")
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_bob_never_receives_the_hr_handbook(served: Served) -> None:
    answers = [
        _retrieve(served, "bob", "What does the employee handbook say about paid leave?"),
        _retrieve(served, "bob", HANDBOOK_SENTENCE, mode="sparse"),
        _retrieve(served, "bob", HANDBOOK_SENTENCE, mode="dense"),
        _chat(served, "bob", [{"role": "user", "content": HANDBOOK_SENTENCE}]),
        _chat(
            served,
            "bob",
            [
                {"role": "user", "content": "What does the employee handbook say about paid leave?"},
                {"role": "assistant", "content": "I found nothing about that."},
                {"role": "user", "content": "And how many unused days can be carried over?"},
            ],
        ),
        served.client.get("/v1/collections/documents/documents", headers=served.headers("bob")),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        served_text = json.dumps(_without_echo(r.json()))
        assert HANDBOOK not in served_text and "28 days" not in served_text, served_text[:500]
    chunks = answers[0].json()["chunks"]
    assert chunks and {Path(c["source"]).name for c in chunks} <= {"security-policy.txt", "product-faq.html"}
    # alice asking the same reaches it: the probes above could find it.
    mine = _retrieve(served, "alice", HANDBOOK_SENTENCE, mode="sparse").json()["chunks"]
    assert Path(mine[0]["source"]).name == HANDBOOK
    listed = served.client.get("/v1/collections/documents/documents", headers=served.headers("alice")).text
    assert HANDBOOK in listed and "security-policy.txt" not in listed


def test_a_filter_naming_the_hr_document_says_no_more_than_for_a_missing_one(served: Served) -> None:
    handbook = next(p["source"] for _, p in served.store.scroll("documents") if p["source"].endswith(HANDBOOK))
    named = _retrieve(served, "bob", "paid leave", filters=[f"source={handbook}"])
    missing = _retrieve(served, "bob", "paid leave", filters=[f"source={handbook}.missing"])
    assert named.status_code == missing.status_code == 400 and HANDBOOK not in named.json().get("chunks", "")
    assert named.json()["error"]["message"] == missing.json()["error"]["message"]  # no existence oracle
    assert _retrieve(served, "alice", "paid leave", filters=[f"source={handbook}"]).json()["chunks"]


def test_writes_need_an_admin_key(served: Served) -> None:
    r = served.client.delete("/v1/collections/documents/documents/product-faq.html", headers=served.headers("bob"))
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
    assert served.client.delete("/v1/collections/documents", headers=served.headers("alice")).status_code == 403
    assert served.store.count("documents") > 0


def test_a_collection_limited_to_hr_is_403_for_bob_on_every_route(served: Served) -> None:
    from rag.collections import set_collection_access

    set_collection_access(served.store, "documents", ["hr"])
    try:
        refused = [
            _retrieve(served, "bob", "paid leave"),
            _chat(served, "bob", [{"role": "user", "content": "paid leave?"}]),
            served.client.get("/v1/collections/documents/documents", headers=served.headers("bob")),
            served.client.get("/v1/collections/documents", headers=served.headers("bob")),
        ]
        for r in refused:
            assert r.status_code == 403, r.text
            assert "limited to group(s) hr" in r.json()["error"]["message"]
        models = served.client.get("/v1/models", headers=served.headers("bob")).json()["data"]
        assert "documents" not in [m["id"] for m in models]  # not listed to a key that may not use it
        assert _retrieve(served, "alice", "paid leave").status_code == 200
        assert _retrieve(served, "root", "paid leave").status_code == 200
    finally:
        set_collection_access(served.store, "documents", [])


def test_auth_modes(tmp_path: Path, make_settings: Any) -> None:
    from rag.service.auth import KeyAuth

    settings = make_settings()
    assert KeyAuth(settings).principal(None) == Principal.local()  # auto, no key yet: the single user
    with pytest.raises(Exception, match="no API key") as required:
        KeyAuth(make_settings("access.auth=required")).principal(None)
    assert getattr(required.value, "status", None) == 401
    token, _ = KeyStore(settings.keys_path).create("alice", ["hr"])
    with pytest.raises(Exception, match="no API key"):
        KeyAuth(settings).principal(None)  # auto: a key exists now
    assert KeyAuth(settings).principal(f"Bearer {token}").name == "alice"
    assert KeyAuth(make_settings("access.auth=off")).principal(None) == Principal.local()
