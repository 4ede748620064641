"""The Documents page's controls, embedded or through a server: who may write, "New collection", the last notice,
and the file uploader with its "Index files" button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def files_to_index(can_write: bool) -> list[Any]:
    """The "Add documents" uploader: the uploaded files once "Index files" is pressed (with write rights), else []."""
    st.subheader("Add documents")
    uploader_key = f"uploader-{st.session_state.get('uploader_round', 0)}"
    files = st.file_uploader(
        "Drop files here (PDF, Word, HTML, Markdown, text, JSONL…)",
        accept_multiple_files=True,
        key=uploader_key,
        disabled=not can_write,
    )
    label, icon = "Index files", ":material/upload_file:"
    pressed = st.button(label, type="primary", icon=icon, disabled=not files or not can_write)
    return list(files or []) if pressed and can_write else []
