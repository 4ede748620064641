"""Who is calling `rag serve`: `Authorization: Bearer <key>` turned into a `Principal`, as a FastAPI dependency.

`access.auth` decides when a key is needed: `auto` (the default) once any key exists (`rag keys create`), before
that every request is the local single user; `required` always; `off` never. A missing, unknown or revoked key is
a 401. The dependency guards every /v1 route and leaves the caller on `request.state.principal`; routes pass it to
the library (`Service.pipeline(..., principal)`, `scope_store`), which filters every read. A route that forgot it
gets `caller(request)` failing closed, never a view of every document.
"""

from __future__ import annotations

from fastapi import Request

from rag.access.keys import KeyStore
from rag.access.principal import Principal
from rag.access.scoped import scope_store
from rag.collections import check_collection_access
from rag.config import Settings
from rag.errors import AccessDeniedError, AuthenticationError
from rag.service.core import ApiError
from rag.store.base import VectorStore


def unauthorized(message: str) -> ApiError:
    """OpenAI's answer to a bad key: 401, invalid_request_error, code invalid_api_key."""
    return ApiError(401, message, "invalid_request_error", None, "invalid_api_key")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, "permission_error", None, "forbidden")


class KeyAuth:
    """The FastAPI dependency: `Depends(KeyAuth(settings))` on a router puts the caller on `request.state`."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.access.auth
        self.keys = KeyStore(settings.keys_path)

    def required(self) -> bool:
        """Whether a request must carry a key now (auto: once a key exists; the key file is re-read on change)."""
        return self.mode == "required" or (self.mode == "auto" and self.keys.has_keys())

    def principal(self, authorization: str | None) -> Principal:
        if not self.required():
            return Principal.local()
        scheme, _, token = (authorization or "").partition(" ")
        if not authorization:
            raise unauthorized("no API key: send 'Authorization: Bearer <key>' (`rag keys create` makes one)")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <key>'")
        try:
            return self.keys.authenticate(token.strip())
        except AuthenticationError as e:
            raise unauthorized(str(e)) from e

    async def __call__(self, request: Request) -> Principal:
        principal = self.principal(request.headers.get("authorization"))
        request.state.principal = principal
        return principal


def caller(request: Request) -> Principal:
    """The principal KeyAuth set for this request; a route mounted without KeyAuth is refused (fail closed)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise AccessDeniedError(f"{request.url.path} runs without the API key check: the server is misconfigured")
    return principal


def admin_only(request: Request) -> Principal:
    """A route dependency: collection management, uploads, deletes and jobs need an admin key (403 otherwise)."""
    principal = caller(request)
    if not principal.admin:
        raise forbidden(f"{request.method} {request.url.path} needs an admin key ({principal.name!r} is not an admin)")
    return principal


def caller_store(request: Request, store: VectorStore, collection: str | None = None) -> VectorStore:
    """`store` as this request's caller sees it; 403 (AccessDeniedError) for a collection limited to other groups."""
    principal = caller(request)
    if collection is not None and store.collection_exists(collection):
        check_collection_access(collection, store.get_metadata(collection), principal)
    return scope_store(store, principal)


def may_open(store: VectorStore, collection: str, request: Request) -> bool:
    """Whether the caller may use `collection` at all: lists leave out the collections it would get a 403 for."""
    try:
        caller_store(request, store, collection)
    except AccessDeniedError:
        return False
    return True


def error_status(exc: Exception) -> int | None:
    """The HTTP status of an access error raised by the library (401, 403), None for any other error."""
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, AccessDeniedError):
        return 403
    return None
