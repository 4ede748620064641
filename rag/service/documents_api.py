"""Routes for collections, documents and ingest jobs: create, list, describe, delete; upload, re-index, progress.

Uploads are checked (size: 413 naming service.max_upload_mb; type: 415 naming the supported extensions) before
anything is stored, then ingested by a background job (GET /v1/jobs/{id}); store work runs in the query pool,
ingest on the job runner's own low-priority thread.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from rag.access.principal import PUBLIC, Principal
from rag.collections import delete_collection, delete_document, describe_collection
from rag.config import Settings
from rag.errors import UsageError
from rag.service.auth import admin_only, caller, caller_store, forbidden, may_open
from rag.service.core import ApiError, Service
from rag.service.documents import Library, UploadError, check_file_name, find_document, list_documents
from rag.service.jobs import Job, JobRunner
from rag.service.streaming import BoundedStreamingResponse, stream_job
from rag.store.base import validate_collection_name

_MAX_FILES = 1000  # parts in one upload request


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="letters, digits, '_', '-', '.'; starting with a letter or digit")


class Reindex(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rebuild: bool = Field(
        False,
        description="delete the collection's chunks first and embed every uploaded file again (after an embedder "
        "or chunking change); false = ingest what changed or is missing",
    )


def _not_found(what: str, message: str, param: str) -> ApiError:
    return ApiError(404, message, "not_found_error", param, f"{what}_not_found")


def _conflict(message: str, param: str | None = None) -> ApiError:
    return ApiError(409, message, "conflict_error", param, "busy")


def upload_groups(principal: Principal, values: Sequence[Any], settings: Settings) -> list[str]:
    """The groups an upload is labelled with: the `access` form parts (comma-separated names allowed), checked
    against the known groups and the uploader's own; a non-admin naming none gets all of its groups."""
    from rag.access.rules import document_access

    requested = sorted({g.strip() for v in values if isinstance(v, str) for g in v.split(",") if g.strip()})
    if not requested and not principal.admin:
        requested = sorted(principal.groups)
    principal.check_groups(requested, "access")
    try:
        return list(document_access(settings, requested).groups)
    except UsageError as e:
        raise ApiError(400, f"access: {e}", "invalid_request_error", "access") from e


def build_router(service: Service, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The /v1 collections, documents and jobs routes over `service` (its library and job runner)."""
    router = APIRouter(dependencies=list(dependencies))
    store = service.store
    settings = service.settings
    library = service.library
    assert library is not None, "the service's library is set by create_app"
    lib: Library = library

    def valid_name(name: str, param: str = "name") -> str:
        try:
            return validate_collection_name(name)
        except UsageError as e:
            raise ApiError(400, f"{param}: {e}", "invalid_request_error", param) from e

    def existing(name: str) -> str:
        valid_name(name)
        if not lib.exists(store, name):
            known = ", ".join(lib.names(store)) or "none"
            raise _not_found(
                "collection", f"collection {name!r} does not exist (collections: {known}; POST /v1/collections "
                "creates one)", "name",
            )  # fmt: skip
        return name

    def runner() -> JobRunner:
        if service.jobs is None or service.ingest is None:
            raise ApiError(
                501, "this server was started without an ingest runner (rag serve provides one): uploads are off",
                "server_error", None, "no_ingest",
            )  # fmt: skip
        return service.jobs

    def busy(name: str) -> None:
        jobs = service.jobs.book.active(name) if service.jobs is not None else []
        if jobs:
            raise _conflict(
                f"collection {name!r} has an ingest job in progress ({', '.join(j.id for j in jobs)}): wait until "
                "GET /v1/jobs/{id} says done or failed, then try again",
                "name",
            )

    def job_dict(job: Job) -> dict[str, Any]:
        return job.to_dict(lib.folder(job.collection))

    def summary(name: str, view: Any = store) -> dict[str, Any]:  # view: the caller's (auth.caller_store)
        declared = lib.declared().get(name, {})
        if not store.collection_exists(name):
            return {
                "name": name, "object": "collection", "chunks": 0, "documents": 0, "created_at": declared.get(
                    "created_at"), "embedder": service.embedder.identity(), "uploaded_files": len(lib.files(name)),
                "indexed": False,
            }  # fmt: skip
        meta = store.get_metadata(name)
        return {
            "name": name,
            "object": "collection",
            "chunks": view.count(name),
            "created_at": meta.get("created_at"),
            "updated_at": meta.get("updated_at"),
            "index_version": meta.get("index_version"),
            "embedder": meta.get("embedder"),
            "uploaded_files": len(lib.files(name)),
            "indexed": True,
        }

    # -- collections --------------------------------------------------------------------------------
    admin = [Depends(admin_only)]  # writes and jobs: collections are managed by admins (access control)

    @router.post("/v1/collections", status_code=201, dependencies=admin)
    async def create_collection(body: CreateCollection) -> dict[str, Any]:
        """Create an empty collection; its first upload builds the index."""
        name = valid_name(body.name)
        if await service.run(lib.exists, store, name):
            raise _conflict(f"name: collection {name!r} already exists", "name")
        await service.run(lib.declare, name)
        return await service.run(summary, name)

    @router.get("/v1/collections")
    async def list_collections(request: Request) -> dict[str, Any]:
        def rows() -> list[dict[str, Any]]:
            view = caller_store(request, store)
            return [summary(name, view) for name in lib.names(store) if may_open(store, name, request)]

        return {"object": "list", "data": await service.run(rows)}

    @router.get("/v1/collections/{name}")
    async def describe(name: str, request: Request) -> dict[str, Any]:
        """Counts (chunks, documents, by file type), the embedder and chunking it was built with, active jobs."""
        existing(name)

        def work() -> dict[str, Any]:
            view = caller_store(request, store, name)
            out = summary(name, view)
            if store.collection_exists(name):
                described = describe_collection(view, name)
                meta = described["metadata"]
                out.update(
                    documents=described["documents"],
                    chunks_by_file_type=described["chunks_by_file_type"],
                    chunking=meta.get("chunking"),
                    backend=described["backend"],
                )
            active = service.jobs.book.active(name) if service.jobs is not None else []
            out["jobs"] = [j.id for j in active]
            return out

        return await service.run(work)

    @router.delete("/v1/collections/{name}", dependencies=admin)
    async def delete(name: str) -> dict[str, Any]:
        """Delete the collection's chunks, cached answers and uploaded files."""
        existing(name)
        busy(name)

        def work() -> None:
            if store.collection_exists(name):
                delete_collection(store, name, settings.cache_dir)
            lib.forget(name)

        await service.run(work)
        return {"name": name, "object": "collection", "deleted": True}

    # -- documents ----------------------------------------------------------------------------------
    @router.post("/v1/collections/{name}/documents", status_code=202)
    async def upload(name: str, request: Request) -> dict[str, Any]:
        """multipart/form-data, one or more `files` parts (and optional `access` parts naming groups): stored under
        the data folder, ingested by a job. Anyone with a key may upload, labelling within their own groups (by
        default: all of them); only an admin may label for others or replace a file it cannot read."""
        jobs = runner()
        existing(name)
        principal = caller(request)
        caller_store(request, store, name)  # 403 for a collection limited to other groups
        assert service.ingest is not None
        limit = int(settings.service.max_upload_mb * 1024 * 1024)
        too_big = (
            f"the upload is over service.max_upload_mb={settings.service.max_upload_mb:g} MB: send fewer or smaller "
            "files per request, or raise the limit"
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"files: {too_big} ({int(length) / 2**20:.1f} MB sent)", "invalid_request_error",
                           "files", "too_large")  # fmt: skip
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(
                415, "send the files as multipart/form-data, one 'files' part each (curl -F files=@report.pdf)",
                "invalid_request_error", "files", "unsupported_media_type",
            )  # fmt: skip
        received = 0
        receive = request.receive
        timeout_s = settings.service.upload_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s

        async def counted() -> Any:  # a body without Content-Length (chunked) is cut off at the limit too
            nonlocal received
            try:  # and a body that trickles in is cut off at the deadline: it would hold the connection forever
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError as e:
                service.metrics.upload_timeouts.inc()
                raise ApiError(
                    408, f"files: the upload did not arrive within service.upload_timeout_s={timeout_s:g} s "
                    f"({received / 2**20:.1f} MB received): send it over a faster connection or raise the limit",
                    "invalid_request_error", "files", "request_timeout",
                ) from e  # fmt: skip
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, f"files: {too_big}", "invalid_request_error", "files", "too_large")
            return message

        form = await Request(request.scope, counted).form(max_files=_MAX_FILES)
        try:
            parts = [p for key in ("files", "file") for p in form.getlist(key) if isinstance(p, UploadFile)]
            if not parts:
                raise ApiError(400, "files: no file in the request: send one or more 'files' parts "
                               "(curl -F files=@report.pdf)", "invalid_request_error", "files")  # fmt: skip
            try:
                names = [check_file_name(p.filename, service.ingest.extensions) for p in parts]
            except UploadError as e:
                raise ApiError(e.status, str(e), "invalid_request_error", e.param,
                               "unsupported_file_type" if e.status == 415 else None) from e  # fmt: skip
            if len(set(names)) != len(names):
                raise ApiError(400, "files: two parts have the same file name", "invalid_request_error", "files")
            groups = upload_groups(principal, form.getlist("access"), settings)
            if not principal.admin:
                recorded = lib.groups(name)
                for file_name in names:
                    replaced = lib.folder(name) / file_name
                    mine = set(recorded.get(file_name, [])) - {PUBLIC}
                    if replaced.exists() and not (mine and mine <= principal.groups):
                        raise forbidden(
                            f"files: {file_name!r} exists in {name!r} and {principal.name!r} may not replace it "
                            "(only an admin, or a member of every group it was given)"
                        )

            def store_files() -> list[Path]:
                saved = []
                for part, file_name in zip(parts, names, strict=True):
                    part.file.seek(0)
                    with tempfile.NamedTemporaryFile(dir=lib.staging(), delete=False) as tmp:
                        shutil.copyfileobj(part.file, tmp)
                    saved.append(lib.save(name, file_name, Path(tmp.name)))
                return saved

            paths = await service.run(store_files)
            if groups:
                await service.run(lib.set_groups, name, names, groups)
        finally:
            await form.close()
        job = jobs.submit(name, paths)
        return {**job_dict(job), "object": "job", "url": f"/v1/jobs/{job.id}"}

    @router.get("/v1/collections/{name}/documents")
    async def documents(name: str, request: Request) -> dict[str, Any]:
        """The collection's documents with chunk counts; uploaded files not yet (or not) indexed show indexed=false."""
        existing(name)

        def rows() -> list[dict[str, Any]]:
            found = list_documents(caller_store(request, store, name), lib, name)
            # An upload not indexed yet has no groups: only admins see it (its name may say too much).
            return found if caller(request).admin else [r for r in found if r["indexed"]]

        return {"object": "list", "data": await service.run(rows)}

    @router.delete("/v1/collections/{name}/documents/{doc:path}", dependencies=admin)
    async def delete_doc(name: str, doc: str) -> dict[str, Any]:
        """Delete a document (an uploaded file's name, or a document id from the list) and its uploaded file."""
        existing(name)
        busy(name)

        def work() -> dict[str, Any]:
            ids, upload = find_document(store, lib, name, doc)
            if not ids and upload is None:
                raise _not_found(
                    "document", f"doc: {doc!r} is not a document of collection {name!r} (GET "
                    f"/v1/collections/{name}/documents lists them)", "doc",
                )  # fmt: skip
            chunks = sum(delete_document(store, name, i, settings.cache_dir) for i in ids)
            if upload is not None:
                upload.unlink()
            return {"document": doc, "document_ids": ids, "chunks_deleted": chunks, "deleted": True}

        return await service.run(work)

    @router.post("/v1/collections/{name}/reindex", status_code=202, dependencies=admin)
    async def reindex(name: str, body: Reindex | None = None) -> dict[str, Any]:
        """Ingest the collection's uploaded files again: what changed or is missing, or everything (rebuild)."""
        jobs = runner()
        existing(name)
        files = await service.run(lib.files, name)
        if not files:
            raise _conflict(
                f"collection {name!r} has no uploaded files to re-index (files ingested with `rag ingest` are "
                "re-indexed by running it again)", "name",
            )  # fmt: skip
        job = jobs.submit(name, files, kind="rebuild" if body is not None and body.rebuild else "reindex")
        return {**job_dict(job), "object": "job", "url": f"/v1/jobs/{job.id}"}

    # -- jobs -------------------------------------------------------------------------------------
    def get_job(job_id: str) -> Job:
        job = service.jobs.book.get(job_id) if service.jobs is not None else None
        if job is None:
            raise _not_found("job", f"job_id: no job {job_id!r} (GET /v1/jobs lists them)", "job_id")
        return job

    @router.get("/v1/jobs", dependencies=admin)
    async def list_jobs() -> dict[str, Any]:
        jobs = service.jobs.book.all() if service.jobs is not None else []
        return {"object": "list", "data": [job_dict(j) for j in jobs]}

    @router.get("/v1/jobs/{job_id}", dependencies=admin)
    async def job(job_id: str) -> dict[str, Any]:
        """State (queued, running, done, failed), progress (files done of total, chunks) and errors per file."""
        return {**job_dict(get_job(job_id)), "object": "job"}

    @router.get("/v1/jobs/{job_id}/events", dependencies=admin, response_model=None)
    async def job_events(job_id: str) -> BoundedStreamingResponse:
        """Server-sent events: the job now, then one event per progress change, named by its state (queued,
        running, done, failed, interrupted; data: the job as GET /v1/jobs/{id} shows it); the stream ends after the
        last. A `: keep-alive` comment every service.events_heartbeat_s keeps proxies from closing it."""
        get_job(job_id)
        book = runner().book
        metrics = service.metrics
        return BoundedStreamingResponse(
            stream_job(book, job_id, job_dict, settings.service.events_heartbeat_s),
            send_timeout_s=settings.service.stream_send_timeout_s,
            on_timeout=lambda: metrics.send_timeouts.labels("/v1/jobs/{job_id}/events").inc(),
        )

    @router.post("/v1/jobs/{job_id}/retry", status_code=202, dependencies=admin)
    async def retry(job_id: str) -> dict[str, Any]:
        """Run a failed job's files again (ingest skips what is already indexed)."""
        jobs = runner()
        old = get_job(job_id)
        if old.state != "failed":
            raise _conflict(f"job_id: job {job_id!r} is {old.state}, only a failed job can be retried", "job_id")
        job = jobs.submit(old.collection, [Path(f) for f in old.files], kind=old.kind, retry_of=old.id)
        return {**job_dict(job), "object": "job", "url": f"/v1/jobs/{job.id}"}

    return router
