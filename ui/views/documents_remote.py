"""Documents page through a server (RAG_SERVER_URL): list, upload (an ingest job on the server, its progress polled),
delete. The server holds the store and ingests; the app sends the files and shows what the server says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from rag.errors import RagError
from ui.collection_controls import collection_controls, files_to_index
from ui.remote import connect, on_server, server_problem
from ui.session import current_context

ctx = current_context()
assert ctx.server is not None  # ui/app.py shows this page only with a server configured
server: str = ctx.server
collection = ctx.collection

st.title("Documents")
st.caption(f"Collection **{collection}** · held by the server at {server}")


def _notice(kind: str, text: str) -> None:
    st.session_state["documents_notice"] = (kind, text)


def on_server_quiet(call: Any) -> Any:
    """A server call whose error the page shows in its own place (a callback cannot st.stop()): RagError raised."""
    with connect(ctx.settings, ctx.api_key) as client:
        return call(client)


def _create_collection() -> None:
    name = str(st.session_state.get("new_collection_name", "")).strip()
    try:
        on_server_quiet(lambda client: client.create_collection(name))
    except RagError as e:
        _notice("error", server_problem(server, e))
        return
    st.session_state["collection"] = name  # the sidebar's selectbox: this run's sidebar has not been drawn yet
    st.session_state["new_collection_name"] = ""
    _notice("info", f"Collection {name!r} is created on the server and selected: add files to it below.")


can_write = ctx.principal.admin  # as in the embedded app: adding, deleting and creating need an admin key
collection_controls(can_write, _create_collection)


def job_text(job: dict[str, Any]) -> str:
    """'queued' or '2 of 5 files · 34 chunks · notes.md', as the server reports the job."""
    if job.get("state") == "queued":
        return "Queued on the server…"
    parts = [f"{job.get('files_done', 0)} of {job.get('files_total', 0)} files", f"{job.get('chunks', 0)} chunks"]
    if job.get("current"):
        parts.append(str(job["current"]))
    return " · ".join(parts)


def job_results(job: dict[str, Any]) -> list[dict[str, str]]:
    errors = job.get("errors") or {}
    rows = [{"file": str(f), "result": "failed", "detail": str(errors[f])} for f in sorted(errors)]
    rows += [{"file": str(f), "result": "indexed", "detail": ""} for f in job.get("files") or [] if f not in errors]
    return rows


# -- upload and index -------------------------------------------------------------------------------
if files := files_to_index(can_write):
    payload = [(f.name, f.getvalue()) for f in files]
    bar = st.progress(0.0, text=f"Sending {len(payload)} file(s) to the server…")

    def on_progress(job: dict[str, Any]) -> None:
        total = int(job.get("files_total") or 0)
        bar.progress(min(int(job.get("files_done") or 0) / total, 1.0) if total else 0.0, text=job_text(job))

    try:
        queued = on_server_quiet(lambda client: client.upload_files(collection, payload))
        job = on_server_quiet(lambda client: client.wait(str(queued["id"]), on_progress))
    except RagError as e:
        st.session_state["ingest_result"] = (f"Indexing failed: {server_problem(server, e)}", [])
    else:
        if job.get("state") == "failed":
            summary = f"Indexing failed on the server (job {job.get('id')}): {job.get('error')}"
        else:
            summary = (
                f"{job.get('files_ingested', 0)} ingested, {job.get('files_unchanged', 0)} unchanged, "
                f"{len(job.get('errors') or {})} failed · {job.get('chunks', 0)} chunks written (job {job.get('id')})"
            )
        st.session_state["ingest_result"] = (summary, job_results(job))
        st.session_state["uploader_round"] = st.session_state.get("uploader_round", 0) + 1  # empties the uploader
    st.rerun()

last = st.session_state.get("ingest_result")
if last is not None:
    summary, results = last
    (st.success if results and all(r["result"] != "failed" for r in results) else st.warning)(summary)
    if results:
        st.dataframe(results, hide_index=True)

# -- what is indexed --------------------------------------------------------------------------------
st.subheader("Indexed documents")
known = on_server(ctx, lambda client: {str(c["name"]): c for c in client.collections()})
if collection not in known:
    st.info(f"Collection **{collection}** does not exist on the server yet: create it above.")
    st.stop()
docs = on_server(ctx, lambda client: client.documents(collection))
left, right = st.columns(2)
left.metric("Documents", sum(1 for d in docs if d.get("indexed")))
right.metric("Chunks", sum(int(d.get("chunks") or 0) for d in docs))
if not docs:
    st.info("No documents in this collection yet: add files above.")
    st.stop()


def _doc_key(d: dict[str, Any]) -> str:
    """What the server's delete takes: an upload's file name (so the uploaded file goes too), else the document id."""
    name, document_id = str(d.get("name") or ""), d.get("document_id")
    if document_id is None or (name and name != document_id and "/" not in name and "#" not in name):
        return name
    return str(document_id)


names = {_doc_key(d): Path(str(d.get("name") or d.get("source") or "")).name or _doc_key(d) for d in docs}
st.dataframe(
    [
        {
            "document": names[_doc_key(d)],
            "chunks": d.get("chunks", 0),
            "indexed": "yes" if d.get("indexed") else "not yet",
            "source": d.get("source"),
        }
        for d in docs
    ],
    hide_index=True,
)

with st.form("delete_document"):
    st.markdown("**Delete a document** from the index (an uploaded file is deleted too).")
    doomed = st.selectbox("Document", list(names), format_func=lambda d: names.get(d, d))
    if st.form_submit_button("Delete", icon=":material/delete:", disabled=not can_write) and doomed and can_write:
        try:
            removed = on_server_quiet(lambda client: client.delete_document(collection, doomed))
        except RagError as e:
            _notice("error", server_problem(server, e))
        else:
            _notice("success", f"Deleted {names[doomed]} ({removed.get('chunks_deleted', 0)} chunks).")
        st.rerun()
