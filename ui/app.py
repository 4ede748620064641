"""The Streamlit chat app's entry script (`rag ui`): settings, the sidebar, and the pages.

Run it with `rag ui [--config PROFILE] [--set section.key=value ...]`, or
`streamlit run ui/app.py -- [--config PROFILE] [--set=section.key=value ...]`; RAG_CONFIG and RAG_* are read too.
It renders only: models, the store, retrieval and ingest are library calls (ui/resources.py builds them once).
With a server configured (RAG_SERVER_URL or client.server_url) it opens neither: every page asks that `rag serve`
(ui/remote.py), and the key the user signs in with is the key sent to it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import streamlit as st

if importlib.util.find_spec("ui") is None:  # `streamlit run ui/app.py` from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.access.principal import Principal
from rag.collections import check_collection_access
from rag.errors import AccessDeniedError, RagError
from ui.eval_runs import has_eval_runs
from ui.remote import connect, server_problem, server_url
from ui.resources import get_reranker, get_store, needs_key, sign_in
from ui.session import set_context
from ui.settings import MODES, AppContext, ChatOptions, load_app_settings, store_location

st.set_page_config(page_title="Ask your documents", page_icon=":material/forum:", layout="wide")

try:
    settings = load_app_settings(sys.argv[1:])
except RagError as e:
    st.error(f"The app cannot start: {e}")
    st.stop()
server = server_url(settings)


def _server_principal(key: str | None) -> Principal:
    """Who `key` is on the server (GET /v1/me); None sends RAG_API_KEY, if set. Raises RagError (401, down)."""
    with connect(settings, key) as client:
        me = client.me()
    return Principal(str(me["name"]), frozenset(me.get("groups") or ()), bool(me.get("admin")))


def _sign_in_form(check: Callable[[str], Principal], hint: str) -> None:
    with st.form("sign_in"):
        st.markdown(f"**Sign in** with your API key ({hint}).")
        key = st.text_input("API key", type="password")
        if st.form_submit_button("Sign in"):
            try:
                st.session_state["principal"] = check(key)
            except RagError as e:
                st.error(server_problem(server, e) if server else str(e))
            else:
                if server is not None:
                    st.session_state["api_key"] = key
                st.rerun()
    st.stop()


api_key: str | None = None
answer_mode: str | None = None
signed_in: Principal | None
if server is not None:
    # Through the server: it owns the store and the models; the app asks it who the key is and what it holds.
    store = None
    api_key = st.session_state.get("api_key")
    signing_in = api_key is not None
    try:
        with connect(settings, api_key) as client:
            answer_mode = client.ready().get("answer_mode")
        signed_in = _server_principal(api_key)  # every run: a key revoked on the server stops working at once
    except AccessDeniedError as e:  # this server needs a key, and none was given or it does not know it
        if api_key is not None or settings.client.api_key is not None:
            st.warning(server_problem(server, e))
        st.session_state.pop("api_key", None)
        _sign_in_form(_server_principal, f"one the server at {server} knows: `rag keys create` where it runs")
    except RagError as e:
        st.error(server_problem(server, e), icon=":material/cloud_off:")
        st.stop()
else:
    try:
        store = get_store(settings)
        signing_in = needs_key(settings)
    except RagError as e:
        st.error(f"The app cannot start: {e}")
        st.stop()
    # Who is asking: the owner of the API key entered here, or the laptop's single user when no key exists
    # (access.auth=auto) or keys are off. Every page reads the documents as this principal.
    signed_in = st.session_state.get("principal") if signing_in else Principal.local()
    if signed_in is None:
        _sign_in_form(lambda key: sign_in(settings, key), "`rag keys create` makes one")
assert isinstance(signed_in, Principal)
principal: Principal = signed_in


def _may_open(name: str) -> bool:
    assert store is not None
    try:
        check_collection_access(name, store.get_metadata(name), principal)
    except AccessDeniedError:
        return False
    return True


if store is None:
    try:  # the server lists the collections this key may open
        with connect(settings, api_key) as client:
            collections = [str(c["name"]) for c in client.collections()]
    except RagError as e:
        st.error(server_problem(str(server), e), icon=":material/cloud_off:")
        st.stop()
else:
    collections = [name for name in store.list_collections() if _may_open(name)]

defaults = ChatOptions.from_settings(settings)
# Through a server, reranking is the server's (its rerank.model); the toggle asks for it, the server decides.
rerank_available = server is not None or settings.rerank.model is not None

with st.sidebar:
    known = set(collections) | set(st.session_state.get("pending_collections", [])) | {settings.store.collection}
    if st.session_state.get("collection") not in known:
        st.session_state["collection"] = settings.store.collection
    collection = st.selectbox("Collection", sorted(known), key="collection")

    st.subheader("Answer settings")
    mode = st.selectbox("Retrieval mode", MODES, index=MODES.index(defaults.mode), key="opt_mode")
    max_chunks = st.slider(
        "Top-k (chunks in the prompt)",
        1,
        max(20, defaults.max_chunks),
        defaults.max_chunks,
        key="opt_max_chunks",
        help="answer.max_chunks: the most retrieved chunks put in the prompt."
        + (" Through a server this is the server's setting." if server else ""),
        disabled=server is not None,
    )
    rerank = st.toggle(
        "Reranking",
        value=defaults.rerank,
        disabled=not rerank_available,
        key="opt_rerank",
        help="Rescore the retrieved chunks with the cross-encoder."
        if rerank_available
        else "No reranker is configured: set rerank.model.",
    )
    temperature = st.slider(
        "Temperature", 0.0, 2.0, float(defaults.temperature), 0.05, key="opt_temperature", help="0 = greedy."
    )
    max_new_tokens = st.number_input(
        "Max tokens", 1, 8192, int(defaults.max_new_tokens), key="opt_max_new_tokens", help="Longest answer."
    )
    min_evidence = st.number_input(
        "Refusal threshold",
        value=defaults.min_evidence,
        step=0.05,
        format="%.2f",
        key="opt_min_evidence",
        placeholder="never refuse on score",
        help=f"answer.min_evidence: refuse without asking the model when the best chunk's {settings.answer.evidence} "
        "score is below this. Empty = never." + (" Through a server this is the server's setting." if server else ""),
        disabled=server is not None,
    )

    if signing_in:
        groups = ", ".join(sorted(principal.groups)) or "public documents only"
        st.caption(f"Signed in as **{principal.name}** ({'admin' if principal.admin else groups})")
        if st.button("Sign out"):
            st.session_state.pop("principal", None)
            st.session_state.pop("api_key", None)
            st.rerun()
    elif server is not None:
        st.caption(f"Using the server as **{principal.name}**{' (admin)' if principal.admin else ''}")
    st.divider()
    if server is not None:
        how = "quoted from the documents" if answer_mode == "extract" else "generated by its model"
        st.caption(f"**Server:** {server}  \n**Answers:** {how}  \nThe server holds the index and the models.")
    else:
        reranker = get_reranker(settings) if rerank_available else None
        st.caption(
            f"**Model:** {settings.generator.model} ({settings.generator.kind})  \n"
            f"**Embedder:** {settings.embedder.model}  \n"
            f"**Reranker:** {settings.rerank.model or 'none'}"
            f"{f' (its share of the final score: {reranker.blend:g})' if reranker is not None else ''}  \n"
            f"**Store:** {store_location(settings)}"
        )

options = ChatOptions(
    mode=mode,
    max_chunks=int(max_chunks),
    rerank=bool(rerank and rerank_available),
    temperature=float(temperature),
    max_new_tokens=int(max_new_tokens),
    min_evidence=None if min_evidence is None else float(min_evidence),
)
set_context(AppContext(settings, options, str(collection), principal, api_key, answer_mode))

documents_page = "views/documents_remote.py" if server is not None else "views/documents.py"
pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
    st.Page(documents_page, title="Documents", icon=":material/description:", url_path="documents"),
    st.Page("views/monitoring.py", title="Monitoring", icon=":material/speed:"),
]
if has_eval_runs(settings.data_dir):
    pages.append(st.Page("views/evaluation.py", title="Evaluation runs", icon=":material/monitoring:"))
st.navigation(pages).run()
