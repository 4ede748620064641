"""Documents page: upload and index files with live progress, see what is indexed, delete, pick a collection."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ingest.pipeline import ProgressEvent, ingest_paths
from rag.collections import delete_document, describe_collection
from rag.errors import RagError
from rag.store.base import validate_collection_name
from ui.collection_controls import collection_controls, files_to_index
from ui.resources import get_embedder, get_store, ingest_lock
from ui.session import current_context
from ui.settings import store_location
from ui.uploads import file_results, is_upload, progress_text, save_upload, uploads_dir

ctx = current_context()
settings = ctx.settings
store = get_store(settings)
collection = ctx.collection

st.title("Documents")
st.caption(f"Collection **{collection}** · {store_location(settings)}")


def _create_collection() -> None:
    name = str(st.session_state.get("new_collection_name", "")).strip()
    try:
        validate_collection_name(name)
    except RagError as e:
        st.session_state["documents_notice"] = ("error", str(e))
        return
    pending = list(st.session_state.get("pending_collections", []))
    if name not in pending:
        pending.append(name)
    st.session_state["pending_collections"] = pending
    st.session_state["collection"] = name  # the sidebar's selectbox: this run's sidebar has not been drawn yet
    st.session_state["new_collection_name"] = ""
    st.session_state["documents_notice"] = (
        "info",
        f"Collection {name!r} is selected; it is created when you index the first files into it.",
    )


can_write = ctx.principal.admin  # as on the API: adding, deleting and creating need an admin key
collection_controls(can_write, _create_collection)

# -- upload and index -------------------------------------------------------------------------------
if files := files_to_index(can_write):
    lock = ingest_lock(str(settings.index_dir))
    if not lock.acquire(blocking=False):
        st.warning("Another upload is being indexed right now: try again when it has finished.")
    else:
        try:
            folder = uploads_dir(settings.data_dir, collection)
            saved = [save_upload(folder, f.name, f.getvalue()) for f in files]
            bar = st.progress(0.0, text=f"Indexing {len(saved)} file(s)…")

            def on_progress(event: ProgressEvent) -> None:
                done = event.files_done / event.files_total if event.files_total else 1.0
                bar.progress(min(done, 1.0), text=progress_text(event))

            report = ingest_paths(
                saved, settings, store, get_embedder(settings), collection=collection, progress=on_progress
            )
        except RagError as e:
            st.session_state["ingest_result"] = (f"Indexing failed: {e}", [])
        else:
            results = file_results(saved, report)
            summary = (
                f"{report.files_ingested} ingested, {report.files_unchanged} unchanged, "
                f"{report.files_duplicate} duplicate, {report.files_failed} failed · "
                f"{report.chunks_written} chunks written in {report.seconds_total:.1f} s"
            )
            st.session_state["ingest_result"] = (summary, results)
            st.session_state["uploader_round"] = st.session_state.get("uploader_round", 0) + 1  # empties the uploader
        finally:
            lock.release()
        st.rerun()

last = st.session_state.get("ingest_result")
if last is not None:
    summary, results = last
    (st.success if results and all(r.status != "failed" for r in results) else st.warning)(summary)
    if results:
        st.dataframe(
            [{"file": r.name, "result": r.status, "detail": r.detail} for r in results],
            hide_index=True,
        )

# -- what is indexed --------------------------------------------------------------------------------
st.subheader("Indexed documents")
if not store.collection_exists(collection):
    st.info(f"Collection **{collection}** is empty: add files above.")
    st.stop()
try:
    described = describe_collection(store, collection, principal=ctx.principal)
except RagError as e:
    st.error(str(e))
    st.stop()
docs = described["document_list"]
left, right = st.columns(2)
left.metric("Documents", described["documents"])
right.metric("Chunks", described["chunks"])
if not docs:
    st.info("No documents left in this collection: add files above.")
    st.stop()
names = {d["document_id"]: Path(d["source"]).name or d["document_id"] for d in docs}
st.dataframe(
    [{"document": names[d["document_id"]], "chunks": d["chunks"], "source": d["source"]} for d in docs],
    hide_index=True,
)

with st.form("delete_document"):
    st.markdown("**Delete a document** from the index (an uploaded file is deleted too).")
    doomed = st.selectbox("Document", [d["document_id"] for d in docs], format_func=lambda d: names.get(d, d))
    if st.form_submit_button("Delete", icon=":material/delete:", disabled=not can_write) and doomed and can_write:
        source = next(d["source"] for d in docs if d["document_id"] == doomed)
        try:
            removed = delete_document(store, collection, doomed, settings.cache_dir)
        except RagError as e:
            st.session_state["documents_notice"] = ("error", str(e))
        else:
            if is_upload(source, settings.data_dir, collection):
                Path(source).unlink(missing_ok=True)
            st.session_state["documents_notice"] = ("success", f"Deleted {names[doomed]} ({removed} chunks).")
        st.rerun()
