"""Per-browser-session state: the page context the entry script sets, and the current conversation's id."""

from __future__ import annotations

import streamlit as st

from ui.resources import conversations
from ui.settings import AppContext

_CONTEXT = "app_context"
_CONVERSATION = "conversation_id"
_QUERY_PARAM = "c"


def set_context(context: AppContext) -> None:
    st.session_state[_CONTEXT] = context


def current_context() -> AppContext:
    """The context of this run; the entry script (ui/app.py) sets it before any page runs."""
    context = st.session_state.get(_CONTEXT)
    if not isinstance(context, AppContext):
        st.error("Start the app with `rag ui` (or `streamlit run ui/app.py`), not a page script on its own.")
        st.stop()
    return context


def conversation_id() -> str:
    """This session's conversation, as the conversation store keys it: the one named in the URL if the server still
    has it for this user, else a new one. The key carries the signed-in user's name, so a URL shared with (or
    guessed by) another user opens a new conversation for them, never the owner's questions and answers."""
    owner = current_context().principal.name
    current = st.session_state.get(_CONVERSATION)
    if isinstance(current, str):
        return f"{owner}/{current}"
    from_url = st.query_params.get(_QUERY_PARAM)
    known = isinstance(from_url, str) and conversations().exists(f"{owner}/{from_url}")
    current = str(from_url) if known else conversations().new_id()
    st.session_state[_CONVERSATION] = current
    st.query_params[_QUERY_PARAM] = current
    return f"{owner}/{current}"


def start_new_conversation() -> None:
    new = conversations().new_id()
    st.session_state[_CONVERSATION] = new
    st.query_params[_QUERY_PARAM] = new
