"""API keys, document access groups at ingest, and the leak test: a key of one group never reads another's chunks.

Two tenants over the real samples/ documents and the bundled embedder: the employee handbook belongs to group
`hr` (alice), the security policy to group `it` (bob), the product FAQ is public. Every way bob can reach a chunk
(a question naming the handbook, an exact sentence of it, a chat follow-up, the answer cache after alice asked,
an explicit filter on its document, the documents list, "show in context", evidence vectors) is probed, and the
leak detector counts handbook chunks by document id (not by the access field the filter uses). The negative tests
remove the filter and the cache scope and show that the detector then catches the leak.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rag.access.keys import KeyStore
from rag.access.principal import ACCESS_FIELD, PUBLIC, Principal
from rag.access.rules import document_access
from rag.access.scoped import scope_store
from rag.errors import AccessDeniedError, AuthenticationError, ConfigError, UsageError
from rag.sparse import SparseVector
from rag.store.base import Condition, Filter, PointRecord, SearchRequest, VectorStore
from tests.conftest import SAMPLES
from tests.rag.test_answering import ScriptedGenerator
from tests.rag.test_store_contract import _store

HANDBOOK_SENTENCE = (
    "Every full-time employee gets 28 days of paid leave per calendar year, in addition to public holidays."
)
ALICE_SECRET_ANSWER = "Full-time employees get 28 days of paid leave [1]."


# -- keys --------------------------------------------------------------------------------------------------
def test_a_key_is_shown_once_stored_hashed_and_authenticates_to_its_groups(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    assert not keys.has_keys()
    token, record = keys.create("alice", ["hr", "finance"])
    assert token.startswith("rag_") and len(token) > 40
    stored = (tmp_path / "keys.json").read_text(encoding="utf-8")
    assert token.split("_")[-1] not in stored and record.hash in stored  # only the salted hash is kept
    principal = keys.authenticate(token)
    assert principal == Principal("alice", frozenset({"finance", "hr"}), admin=False)
    assert keys.has_keys() and keys.groups() == {"finance", "hr"}
    admin_token, _ = keys.create("root", admin=True)
    assert keys.authenticate(admin_token).admin


@pytest.mark.parametrize(
    "token",
    [None, "", "Bearer nonsense", "rag_00000000_" + "x" * 43],
    ids=["missing", "empty", "malformed", "unknown"],
)
def test_a_missing_or_unknown_key_is_refused(tmp_path: Path, token: str | None) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    keys.create("alice", ["hr"])
    with pytest.raises(AuthenticationError):
        keys.authenticate(token)


def test_a_revoked_or_tampered_key_is_refused_and_names_are_checked(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    token, _ = keys.create("alice", ["hr"])
    with pytest.raises(AuthenticationError, match="not valid"):
        keys.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))  # right id, wrong secret
    with pytest.raises(UsageError, match="active key named 'alice'"):
        keys.create("alice", ["hr"])
    keys.revoke("alice")
    with pytest.raises(AuthenticationError, match="revoked"):
        KeyStore(tmp_path / "keys.json").authenticate(token)  # another process reads the file
    with pytest.raises(UsageError, match="no active key named 'alice'"):
        keys.revoke("alice")
    with pytest.raises(UsageError, match="group 'HR!'"):
        keys.create("carol", ["HR!"])
    assert [k.name for k in keys.list_keys()] == ["alice"] and keys.list_keys()[0].revoked
    assert keys.groups() == {"hr"}  # a revoked key's documents keep a valid label


def test_an_uploader_labels_only_with_its_own_groups() -> None:
    alice = Principal("alice", frozenset({"hr"}))
    alice.check_groups(["hr", PUBLIC], "access")
    with pytest.raises(AccessDeniedError, match="access: 'alice' is not in group\\(s\\) finance"):
        alice.check_groups(["hr", "finance"], "access")
    Principal.local().check_groups(["finance"], "access")
    assert Principal.anonymous().cache_scope() == PUBLIC and Principal.local().cache_scope() == "*"
    assert alice.cache_scope() == "hr,public" and not alice.can_see({"text": "no access field"})


# -- document access at ingest -------------------------------------------------------------------------------
def _rules(tmp_path: Path, groups: list[str]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"rules": [{"pattern": "hr/*", "groups": groups}]}), encoding="utf-8")
    return path


def test_rules_naming_an_unknown_group_stop_the_ingest_with_the_file_and_the_group(
    tmp_path: Path, make_settings: Any
) -> None:
    settings = make_settings()
    # No keys and no access.groups: no registry, any well-formed name is accepted.
    assert document_access(settings, ["hr"], _rules(tmp_path, ["payroll"])).groups_for("/x/hr/a.md") == (
        "hr",
        "payroll",
    )
    KeyStore(settings.keys_path).create("alice", ["hr"])
    with pytest.raises(ConfigError, match=r"rules\.yaml: rules\[0\] \('hr/\*'\) names unknown group 'hr-typo'"):
        document_access(settings, (), _rules(tmp_path, ["hr-typo"]))
    with pytest.raises(UsageError, match="--access finance: unknown group"):
        document_access(settings, ["finance"])
    configured = make_settings("access.groups=[finance]")
    assert document_access(configured, ["finance", PUBLIC]).groups == ("finance", PUBLIC)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - pattern: 'hr/*'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: rules\[0\] \('hr/\*'\): needs 'groups'"):
        document_access(settings, (), bad)


def test_a_rule_matches_the_end_of_the_path_and_groups_add_up(tmp_path: Path, make_settings: Any) -> None:
    access = document_access(make_settings(), ["staff"], _rules(tmp_path, ["hr"]))
    assert access.groups_for("/data/docs/hr/handbook.md") == ("hr", "staff")
    assert access.groups_for("/data/docs/hr/sub/pay.xlsx#row-3") == ("hr", "staff")  # a JSONL record: its file
    assert access.groups_for("/data/docs/it/policy.txt") == ("staff",)
    assert document_access(make_settings()).payload_groups("/any/file.md") == [PUBLIC]


# -- the store view, on every backend -----------------------------------------------------------------------------
def _labelled_points() -> list[PointRecord]:
    rows = [("hr-doc", ["hr"], [1.0, 0, 0, 0]), ("it-doc", ["it"], [0, 1.0, 0, 0]), ("faq", [PUBLIC], [0, 0, 1.0, 0])]
    return [
        PointRecord(
            str(uuid.uuid5(uuid.NAMESPACE_URL, doc)),
            vec,
            SparseVector((i + 1,), (1.0,)),
            {"document_id": doc, ACCESS_FIELD: groups, "text": doc, "chunk_index": 0},
        )
        for i, (doc, groups, vec) in enumerate(rows)
    ]


@pytest.fixture(params=["edge", "local"])
def labelled_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    store = _store(request.param, tmp_path)
    store.create_collection("c", 4, {"schema_version": 1})
    store.upsert("c", _labelled_points())
    store.flush("c")
    yield store
    store.close()


def test_every_read_of_the_view_is_filtered_and_writes_need_an_admin(labelled_store: VectorStore) -> None:
    bob = scope_store(labelled_store, Principal("bob", frozenset({"it"})))
    ids = [p.id for p in _labelled_points()]
    hr_id = ids[0]
    query = {"dense": [1.0, 0, 0, 0], "sparse": SparseVector((1,), (1.0,))}  # both point at the hr chunk
    for mode in ("dense", "sparse", "hybrid"):
        hits = bob.search("c", SearchRequest(limit=10, mode=mode, **query))  # type: ignore[arg-type]
        assert {p.payload["document_id"] for p in hits} <= {"it-doc", "faq"}, mode
    assert sorted(p["document_id"] for _, p in bob.scroll("c")) == ["faq", "it-doc"]
    assert bob.count("c") == 2 and bob.count("c", Filter((Condition("document_id", "hr-doc"),))) == 0
    assert bob.retrieve("c", ids) == [p for p in labelled_store.retrieve("c", ids) if p.id != hr_id]
    assert set(bob.dense_vectors("c", ids)) == set(ids[1:])
    with pytest.raises(AccessDeniedError, match="'bob' may not delete documents"):
        bob.delete("c", Filter((Condition("document_id", "it-doc"),)))
    with pytest.raises(AccessDeniedError):
        bob.set_payload("c", Filter((Condition("document_id", "hr-doc"),)), {ACCESS_FIELD: ["it"]})
    assert labelled_store.count("c") == 3
    anonymous = scope_store(bob, Principal.anonymous())  # re-scoping a view never widens or stacks
    assert [p["document_id"] for _, p in anonymous.scroll("c")] == ["faq"]
    assert scope_store(bob, Principal.local()).count("c") == 3


def test_set_payload_changes_the_groups_without_touching_the_vectors(labelled_store: VectorStore) -> None:
    hr_id = _labelled_points()[0].id
    labelled_store.create_keyword_index("c", ACCESS_FIELD)  # exists already: a no-op on every backend
    before = labelled_store.dense_vectors("c", [hr_id])
    labelled_store.set_payload("c", Filter((Condition("document_id", "hr-doc"),)), {ACCESS_FIELD: ["it"]})
    labelled_store.flush("c")
    (point,) = labelled_store.retrieve("c", [hr_id])
    assert point.payload[ACCESS_FIELD] == ["it"] and point.payload["text"] == "hr-doc"
    assert labelled_store.dense_vectors("c", [hr_id]) == before
    bob = scope_store(labelled_store, Principal("bob", frozenset({"it"})))
    assert bob.count("c") == 3


# -- two tenants over real documents -----------------------------------------------------------------------------
@dataclass
class Tenants:
    settings: Any
    store: VectorStore
    embedder: Any
    docs: Path
    rules: Path
    alice: Principal
    bob: Principal
    hr_documents: frozenset[str]


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Tenants]:
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store

    root = tmp_path_factory.mktemp("tenants")
    docs = root / "docs"
    for folder, name in (("hr", "employee-handbook.md"), ("it", "security-policy.txt"), (".", "product-faq.html")):
        (docs / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / name, docs / folder / name)
    rules = root / "rules.yaml"
    rules.write_text(
        "rules:\n  - pattern: 'hr/*'\n    groups: [hr]\n  - pattern: 'it/*'\n    groups: [it]\n", encoding="utf-8"
    )
    settings = load_settings(
        "test", [f"data_dir={root / 'data'}", "answer.min_evidence=null", "answer.min_answerability=null"]
    )
    keys = KeyStore(settings.keys_path)
    alice = keys.authenticate(keys.create("alice", ["hr"])[0])
    bob = keys.authenticate(keys.create("bob", ["it"])[0])
    store = build_store(settings)
    report = ingest_paths([docs], settings, store, embedder, access=document_access(settings, (), rules))
    assert report.files_failed == 0 and report.documents_ingested == 3
    labels = {p["source_name"]: (p["document_id"], p[ACCESS_FIELD]) for _, p in store.scroll("documents")}
    assert {k: v[1] for k, v in labels.items()} == {
        "employee-handbook.md": ["hr"],
        "security-policy.txt": ["it"],
        "product-faq.html": [PUBLIC],
    }
    yield Tenants(settings, store, embedder, docs, rules, alice, bob, frozenset({labels["employee-handbook.md"][0]}))
    store.close()


def _pipeline(t: Tenants, principal: Principal, *replies: str, mode: str = "extract") -> Any:
    from rag.factory import build_pipeline

    settings = t.settings.model_copy(update={"answer": t.settings.answer.model_copy(update={"mode": mode})})
    return build_pipeline(
        settings, t.store, embedder=t.embedder, generator=ScriptedGenerator(*replies), rerank=False, principal=principal
    )


def probe(t: Tenants, principal: Principal) -> list[str]:
    """Every document id `principal` reaches through the library's read paths (one entry per chunk or row)."""
    from rag.answering import Turn
    from rag.collections import describe_collection, neighbour_chunks
    from rag.retrieval import parse_filters

    seen: list[str] = []
    pipeline = _pipeline(t, principal)
    retriever = pipeline.retriever
    questions = [
        "What does the Northwind Tools employee handbook say about paid leave?",  # names the document
        HANDBOOK_SENTENCE,  # quotes it exactly
        "employee-handbook.md",
    ]
    for question in questions:
        for mode in ("hybrid", "dense", "sparse"):
            seen += [c.document_id for c in retriever.retrieve(question, top_k=10, mode=mode).chunks]  # type: ignore[arg-type]
    # A filter naming the handbook: nothing, or "no chunk matches", never its chunks.
    hr_doc = next(iter(t.hr_documents))
    named = parse_filters([f"document_id={hr_doc}"], retriever.handle.payload_fields)
    try:
        seen += [c.document_id for c in retriever.retrieve("paid leave", filters=named).chunks]
    except UsageError as e:
        assert "no chunk" in str(e)
    # A chat follow-up whose history names the handbook (quoted answers condense by joining the questions).
    history = [Turn("What does the employee handbook say about paid leave?", "I cannot see that document.")]
    answer = pipeline.ask("And how many days can be carried over?", history=history)
    seen += [c.document_id for c in answer.retrieved] + [c.chunk.document_id for c in answer.chunks]
    seen += [c.document_id for c in answer.citations]
    # The documents list, "show in context", and evidence vectors by chunk id.
    described = describe_collection(t.store, "documents", principal=principal)
    seen += [d["document_id"] for d in described["document_list"]]
    seen += [str(p["document_id"]) for p in neighbour_chunks(t.store, "documents", hr_doc, 0, 5, principal=principal)]
    hr_ids = [i for i, p in t.store.scroll("documents") if p["document_id"] in t.hr_documents]
    view = retriever.handle.store
    seen += [p.payload["document_id"] for p in view.retrieve("documents", hr_ids)]
    seen += [hr_doc for _ in view.dense_vectors("documents", hr_ids)]
    return seen


def leaked(t: Tenants, seen: list[str]) -> list[str]:
    """The leak detector: handbook chunks among what bob reached, judged by document id alone."""
    return [d for d in seen if d in t.hr_documents]


def test_a_key_of_another_group_reaches_no_chunk_of_the_hr_document(tenants: Tenants) -> None:
    seen = probe(tenants, tenants.bob)
    assert seen and not leaked(tenants, seen), leaked(tenants, seen)
    assert {"security-policy.txt", "product-faq.html"} <= {Path(d).name for d in seen}  # bob's own and public
    # alice, local and an admin do reach it through the same paths (so the probe can find it at all).
    for who in (tenants.alice, Principal("root", frozenset(), admin=True)):
        assert leaked(tenants, probe(tenants, who)), who.name


def test_the_probe_catches_the_leak_when_the_filter_is_removed(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Principal, "filter_condition", lambda self: None)
    monkeypatch.setattr(Principal, "can_see", lambda self, payload: True)
    assert len(leaked(tenants, probe(tenants, tenants.bob))) >= 10


def test_the_answer_cache_never_serves_another_groups_answer(tenants: Tenants) -> None:
    question = "How many days of paid leave does a full-time employee get?"
    first = _pipeline(tenants, tenants.alice, ALICE_SECRET_ANSWER, mode="generate").ask(question)
    again = _pipeline(tenants, tenants.alice, "never generated", mode="generate").ask(question)
    assert not first.cached and again.cached and again.text == ALICE_SECRET_ANSWER  # the cache works for alice
    bobs = _pipeline(tenants, tenants.bob, "I do not know.", mode="generate").ask(question)
    assert not bobs.cached and "28 days" not in bobs.text
    assert not leaked(tenants, [c.document_id for c in bobs.retrieved])


def test_without_the_cache_scope_bob_would_be_served_alices_answer(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    question = "What is the paid leave of a full-time employee, in days?"
    monkeypatch.setattr(Principal, "cache_scope", lambda self: "*")
    _pipeline(tenants, tenants.alice, ALICE_SECRET_ANSWER, mode="generate").ask(question)
    bobs = _pipeline(tenants, tenants.bob, "I do not know.", mode="generate").ask(question)
    assert bobs.cached and "28 days" in bobs.text  # the leak the cache key's access part prevents


def test_a_collection_limited_to_groups_refuses_other_keys_whole(tenants: Tenants) -> None:
    from rag.collections import describe_collection, set_collection_access

    set_collection_access(tenants.store, "documents", ["hr"])
    try:
        with pytest.raises(AccessDeniedError, match="limited to group\\(s\\) hr, and 'bob' is in none"):
            _pipeline(tenants, tenants.bob)
        with pytest.raises(AccessDeniedError):
            describe_collection(tenants.store, "documents", principal=tenants.bob)
        assert _pipeline(tenants, tenants.alice).principal == tenants.alice
    finally:
        set_collection_access(tenants.store, "documents", [])


def test_default_principal_none_refuses_an_entry_point_that_names_no_caller(tenants: Tenants) -> None:
    from rag.collections import open_collection

    strict = tenants.settings.model_copy(
        update={"access": tenants.settings.access.model_copy(update={"default_principal": "none"})}
    )
    with pytest.raises(AccessDeniedError, match="default_principal=none"):
        open_collection(tenants.store, "documents", strict, tenants.embedder)
    public = strict.model_copy(update={"access": strict.access.model_copy(update={"default_principal": "public"})})
    handle = open_collection(tenants.store, "documents", public, tenants.embedder)
    assert {Path(p["source"]).name for _, p in handle.store.scroll("documents")} == {"product-faq.html"}


def _folder_with(tmp_path: Path, sample: str) -> Path:
    """A folder holding one of the sample documents, to ingest on its own."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLES / sample, docs)
    return docs


@contextmanager
def _ingested(tmp_path: Path, settings: Any, embedder: Any, sample: str) -> Iterator[tuple[Path, VectorStore]]:
    """A store with one sample document ingested into `documents`: (the document's folder, the open store)."""
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    docs = _folder_with(tmp_path, sample)
    with build_store(settings) as store:
        ingest_paths([docs], settings, store, embedder)
        yield docs, store


def test_new_groups_are_a_metadata_update_and_unlabelled_documents_are_refused_by_policy(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    docs = _folder_with(tmp_path, "employee-handbook.md")
    strict = make_settings("access.require_groups=true", "access.groups=[hr,finance]")
    with build_store(strict) as store:
        refused = ingest_paths([docs], strict, store, embedder, access=document_access(strict))
        assert refused.documents_ingested == 0 and len(refused.failures) == 1
        assert refused.failures[0].path.endswith("employee-handbook.md")
        assert "no access group (access.require_groups is on): pass --access GROUP" in refused.failures[0].reason

        first = ingest_paths([docs], strict, store, embedder, access=document_access(strict, ["hr"]))
        assert first.documents_ingested == 1 and first.chunks_written > 0
        ids = [i for i, _ in store.scroll("documents")]
        vectors = store.dense_vectors("documents", ids)
        version = store.get_metadata("documents")["index_version"]

        # A run without --access keeps the stored groups (and, under the policy, is not refused).
        same = ingest_paths([docs], strict, store, embedder, access=document_access(strict))
        assert same.failures == () and same.documents_relabelled == 0

        moved = ingest_paths([docs], strict, store, embedder, access=document_access(strict, ["finance"]))
        assert moved.chunks_written == 0 and moved.documents_relabelled == 1 and moved.failures == ()
        assert {tuple(p[ACCESS_FIELD]) for _, p in store.scroll("documents")} == {("finance",)}
        assert store.dense_vectors("documents", ids) == vectors  # not re-embedded
        assert store.get_metadata("documents")["index_version"] > version  # cached answers expire


# -- the command line ------------------------------------------------------------------------------------------
def test_keys_commands_print_the_key_once_and_ingest_names_an_unknown_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli import main

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "create", "--name", "alice", "--groups", "hr,finance", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["groups"] == ["finance", "hr"] and not created["admin"]
    assert KeyStore(tmp_path / "data" / "keys.json").authenticate(created["key"]).name == "alice"
    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["alice"] and "key" not in listed[0] and "hash" not in listed[0]
    assert main(["keys", "revoke", "alice"]) == 0 and "revoked the key of alice" in capsys.readouterr().out
    assert main(["keys", "revoke", "alice"]) == 2
    assert "no active key named 'alice'" in capsys.readouterr().err
    rules = _rules(tmp_path, ["payrol"])
    assert main(["ingest", str(SAMPLES), "--access-rules", str(rules)]) == 2  # before any model is loaded
    err = capsys.readouterr().err
    assert "rules.yaml: rules[0] ('hr/*') names unknown group 'payrol' (known: finance, hr, public)" in err
    assert main(["ingest", str(SAMPLES), "--access", "Finance!"]) == 2
    assert "--access: group 'Finance!' is invalid" in capsys.readouterr().err


def test_a_plain_ingest_labels_documents_from_before_access_control_public(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    from ingest.pipeline import ingest_paths

    settings = make_settings()
    with _ingested(tmp_path, settings, embedder, "security-policy.txt") as (docs, store):
        everything = Filter((Condition("document_id", str(docs / "security-policy.txt")),))
        store.set_payload("documents", everything, {ACCESS_FIELD: None})  # as a collection from before access control
        reader = scope_store(store, Principal("bob", frozenset({"it"})))
        assert reader.count("documents") == 0  # no label: admins only (fail closed)
        again = ingest_paths([docs], settings, store, embedder)
        assert again.chunks_written == 0 and again.documents_relabelled == 1
        assert reader.count("documents") == store.count("documents") > 0


def test_an_eval_run_as_bob_sees_only_bobs_documents(tenants: Tenants, tmp_path: Path) -> None:
    from eval.runconfig import RunSpec
    from eval.runner import run_eval
    from tests.eval.conftest import KeyedGenerator

    rows = [
        {"id": "leave", "question": "How many days of paid leave do full-time employees get?", "answer": "28 days",
         "gold_documents": ["employee-handbook.md"]},
        {"id": "password", "question": "How long must passwords be?", "answer": "at least 14 characters",
         "gold_documents": ["security-policy.txt"]},
    ]  # fmt: skip
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = RunSpec(dataset=dataset, collection="documents", perplexity=False)
    generator = KeyedGenerator({}, default="I do not know.")
    result = run_eval(
        spec, tenants.settings, tenants.store, output=tmp_path / "run", embedder=tenants.embedder,
        generator=generator, progress="none", principal=tenants.bob,
    )  # fmt: skip
    lines = (result.run_dir / "per_question.jsonl").read_text(encoding="utf-8").splitlines()
    seen = [r["document_id"] for line in lines for r in json.loads(line)["retrieved"]]
    assert any(d.endswith("security-policy.txt") for d in seen) and not leaked(tenants, seen)
    assert not any("employee-handbook" in str(m.content) for call in generator.calls for m in call)


def test_ingest_indexes_the_access_field_of_a_collection_from_before_access_control(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    import qdrant_edge

    from ingest.pipeline import ingest_paths

    settings = make_settings()
    with _ingested(tmp_path, settings, embedder, "security-policy.txt") as (docs, store):
        # As built before access control: no `access` index, and the field unknown to the collection's record.
        shard = store._shard("documents")  # type: ignore[attr-defined]
        shard.update(qdrant_edge.UpdateOperation.delete_field_index(ACCESS_FIELD))
        metadata = store.get_metadata("documents")
        store.set_metadata(
            "documents", {**metadata, "payload_fields": [f for f in metadata["payload_fields"] if f != ACCESS_FIELD]}
        )
        assert ACCESS_FIELD not in shard.info().payload_schema
        ingest_paths([docs], settings, store, embedder)
        assert ACCESS_FIELD in shard.info().payload_schema
