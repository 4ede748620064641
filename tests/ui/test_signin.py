"""The chat app with API keys: it asks for a key, and each user reads only the documents of their groups.

The employee handbook is ingested for group `hr` (alice), the rest is public; bob (group `it`) signs in and asks the
paid-leave question: no handbook passage reaches him, not in the answer and not among the sources. Alice asks the
same and gets the handbook's 28 days. Real stack: the bundled embedder, quoted answers, the embedded store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import SAMPLES
from tests.ui.test_app import APP, LEAVE, TIMEOUT, _close_app_store, assistant_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, app_environment: dict[str, str]
) -> Iterator[dict[str, str]]:
    """A data folder with keys for alice (hr) and bob (it); yields their keys, the app pointed at the folder."""
    from ingest.pipeline import ingest_paths
    from rag.access.keys import KeyStore
    from rag.access.rules import document_access
    from rag.config import load_settings
    from rag.factory import build_store

    data = tmp_path_factory.mktemp("signin") / "data"
    settings = load_settings("test", [f"data_dir={data}"])
    keys = KeyStore(settings.keys_path)
    alice, _ = keys.create("alice", ["hr"])
    bob, _ = keys.create("bob", ["it"])
    with build_store(settings) as store:
        ingest_paths(
            [SAMPLES / "employee-handbook.md"], settings, store, embedder, access=document_access(settings, ["hr"])
        )
        ingest_paths([SAMPLES / "product-faq.html", SAMPLES / "security-policy.txt"], settings, store, embedder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_DATA_DIR", str(data))
        for name, value in app_environment.items():
            mp.setenv(name, value)
        yield {"alice": alice, "bob": bob}
        _close_app_store(data)


def signed_in(key: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert not at.chat_input, "the chat is shown before signing in"
    at.text_input[0].input(key)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def test_the_app_asks_for_a_key_and_refuses_a_wrong_one(tenants: dict[str, str]) -> None:
    at = signed_in("rag_00000000_" + "x" * 43)
    assert at.error and "key" in at.error[0].value.lower()
    assert not at.chat_input


def test_a_user_never_reads_another_groups_document(tenants: dict[str, str]) -> None:
    bob = signed_in(tenants["bob"])
    assert any("Signed in as **bob**" in c.value for c in bob.sidebar.caption)
    bob.chat_input[0].set_value(LEAVE).run()
    [reply] = assistant_messages(bob)
    shown = " ".join(m.value for m in reply.markdown) + " ".join(e.label for e in reply.expander)
    shown += " ".join(h.value for h in reply.get("html"))
    assert "28 days" not in shown and "employee-handbook" not in shown, shown

    alice = signed_in(tenants["alice"])
    alice.chat_input[0].set_value(LEAVE).run()
    [reply] = assistant_messages(alice)
    assert "28 days of paid leave" in reply.markdown[0].value
    assert any("employee-handbook.md" in e.label for e in reply.expander)


def test_a_non_admin_cannot_add_or_delete_documents(tenants: dict[str, str]) -> None:
    at = signed_in(tenants["bob"])
    at.switch_page("views/documents.py").run()
    assert not at.exception, at.exception
    assert any("needs an admin key" in i.value for i in at.info)
    listed = at.dataframe[0].value
    assert not any("employee-handbook" in str(s) for s in listed["source"])  # bob's list lacks alice's document
