"""The Streamlit chat app's entry script (`rag ui`): settings, the sidebar, and the pages.

Run it with `rag ui [--config PROFILE] [--set section.key=value ...]`, or
`streamlit run ui/app.py -- [--config PROFILE] [--set=section.key=value ...]`; RAG_CONFIG and RAG_* are read too.
It renders only: models, the store, retrieval and ingest are library calls (ui/resources.py builds them once).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import streamlit as st

if importlib.util.find_spec("ui") is None:  # `streamlit run ui/app.py` from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.access.principal import Principal
from rag.collections import check_collection_access
from rag.errors import AccessDeniedError, RagError
from ui.eval_runs import has_eval_runs
from ui.resources import get_reranker, get_store, needs_key, sign_in
from ui.session import set_context
from ui.settings import MODES, AppContext, ChatOptions, load_app_settings, store_location

st.set_page_config(page_title="Ask your documents", page_icon=":material/forum:", layout="wide")

try:
    settings = load_app_settings(sys.argv[1:])
    store = get_store(settings)
    signing_in = needs_key(settings)
except RagError as e:
    st.error(f"The app cannot start: {e}")
    st.stop()

# Who is asking: the owner of the API key entered here, or the laptop's single user when no key exists
# (access.auth=auto) or keys are off. Every page reads the documents as this principal.
signed_in = st.session_state.get("principal") if signing_in else Principal.local()
if signed_in is None:
    with st.form("sign_in"):
        st.markdown("**Sign in** with your API key (`rag keys create` makes one).")
        key = st.text_input("API key", type="password")
        if st.form_submit_button("Sign in"):
            try:
                st.session_state["principal"] = sign_in(settings, key)
            except RagError as e:
                st.error(str(e))
            else:
                st.rerun()
    st.stop()
assert isinstance(signed_in, Principal)
principal: Principal = signed_in


def _may_open(name: str) -> bool:
    try:
        check_collection_access(name, store.get_metadata(name), principal)
    except AccessDeniedError:
        return False
    return True


collections = [name for name in store.list_collections() if _may_open(name)]

defaults = ChatOptions.from_settings(settings)
rerank_available = settings.rerank.model is not None

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
        help="answer.max_chunks: the most retrieved chunks put in the prompt.",
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
        "score is below this. Empty = never.",
    )

    if signing_in:
        groups = ", ".join(sorted(principal.groups)) or "public documents only"
        st.caption(f"Signed in as **{principal.name}** ({'admin' if principal.admin else groups})")
        if st.button("Sign out"):
            st.session_state.pop("principal", None)
            st.rerun()
    st.divider()
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
set_context(AppContext(settings, options, str(collection), principal))

pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
    st.Page("views/documents.py", title="Documents", icon=":material/description:"),
    st.Page("views/monitoring.py", title="Monitoring", icon=":material/speed:"),
]
if has_eval_runs(settings.data_dir):
    pages.append(st.Page("views/evaluation.py", title="Evaluation runs", icon=":material/monitoring:"))
st.navigation(pages).run()
