"""The top of the Documents page, embedded or through a server: who may write, "New collection", the last notice."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st


def collection_controls(can_write: bool, on_create: Callable[[], None]) -> None:
    """Draw the write-rights note, the "New collection" form (its name in `new_collection_name`) and the notice a
    callback left in `documents_notice` as (kind, text)."""
    if not can_write:
        st.info("Adding and deleting documents needs an admin key (`rag keys create --admin`); you can read the list.")
    with st.expander("New collection", icon=":material/create_new_folder:"):
        st.text_input("Name", key="new_collection_name", placeholder="e.g. contracts-2025", disabled=not can_write)
        st.button("Create", on_click=on_create, disabled=not can_write)

    notice = st.session_state.pop("documents_notice", None)
    if notice is not None:
        kind, text = notice
        (st.error if kind == "error" else st.success if kind == "success" else st.info)(text)
