"""The one error hierarchy: every failure the user can act on is a RagError subclass."""

from __future__ import annotations

import importlib.util


class RagError(Exception):
    """Base class. The message is one line that names the file, field or setting and what to do."""

    exit_code = 1


class ConfigError(RagError):
    """A setting is missing, malformed or contradicts another (exit code 2)."""

    exit_code = 2


class UsageError(RagError):
    """The command line or a query is invalid (exit code 2)."""

    exit_code = 2


class MissingDependencyError(ConfigError):
    """An optional extra is not installed; the message carries the exact pip line."""


def require_extra(module: str, extra: str, needed_by: str) -> None:
    """Raise MissingDependencyError with the one pip line for `extra` when `module` cannot be imported.

    Checked when the component is built, not at import time, so `rag --help` works without any extra.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{needed_by} needs {module}, from the {extra} extra: pip install 'rag-framework[{extra}]'"
        )


class DocumentError(RagError):
    """One input file could not be turned into text; ingest records it and goes on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StoreError(RagError):
    """The vector store refused an operation or is unreachable."""


class CollectionNotFoundError(StoreError):
    """The named collection does not exist."""


class EmbedderMismatchError(StoreError):
    """The collection was built with another embedder or vector size (exit code 2)."""

    exit_code = 2


class GenerationError(RagError):
    """The generator failed at run time (a server error, an out-of-memory, a broken stream)."""


class AuthenticationError(RagError):
    """An API key is missing, unknown or revoked (HTTP 401)."""


class AccessDeniedError(RagError):
    """The caller may not do this: change documents, label them for other groups, use a collection (HTTP 403)."""
