"""The caller of a request: a name, the groups it belongs to, and whether it sees every document.

A document's payload field `access` lists its groups; a caller sees the document when one of them is one of its
groups or `public`. The check is a Qdrant keyword condition (`access` any of the caller's groups), ANDed into every
read of the store by `rag.access.scoped.AccessScopedStore`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rag.config import Settings
from rag.errors import AccessDeniedError, UsageError
from rag.store.base import Condition

# The payload field holding a document's groups (a keyword list with a payload index).
ACCESS_FIELD = "access"
# The group every caller is in: a document labelled public (or given no group at ingest) is visible to all.
PUBLIC = "public"
_GROUP = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def check_group(name: str, where: str) -> str:
    """A valid group name (lower-case letters, digits, '_', '-', '.'; up to 64), else a UsageError naming `where`."""
    if not _GROUP.match(name):
        raise UsageError(
            f"{where}: group {name!r} is invalid: use lower-case letters, digits, '_', '-', '.' (up to 64, "
            "starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class Principal:
    """Who is asking. `admin` sees (and may change) every document; anyone else sees its groups and `public`."""

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False

    @classmethod
    def local(cls) -> Principal:
        """The single user of a laptop install: sees every document (the embedded default)."""
        return cls("local", frozenset(), admin=True)

    @classmethod
    def anonymous(cls) -> Principal:
        """A caller with no key: sees only public documents."""
        return cls("anonymous", frozenset())

    @property
    def visible_groups(self) -> frozenset[str]:
        return self.groups | {PUBLIC}

    def filter_condition(self) -> Condition | None:
        """The must-condition every read of the store carries for this caller; None when it sees everything."""
        if self.admin:
            return None
        return Condition(ACCESS_FIELD, any_of=tuple(sorted(self.visible_groups)))

    def can_see(self, payload: dict[str, Any]) -> bool:
        """The same rule on a payload already read: a chunk without an `access` field is visible to admins only."""
        if self.admin:
            return True
        groups = payload.get(ACCESS_FIELD)
        if not isinstance(groups, list):
            return False
        return bool(self.visible_groups & {str(g) for g in groups})

    def cache_scope(self) -> str:
        """What part of an answer-cache key this caller contributes: callers seeing the same documents share it."""
        return "*" if self.admin else ",".join(sorted(self.visible_groups))

    def check_groups(self, groups: list[str] | tuple[str, ...], where: str) -> None:
        """An upload's groups must be the uploader's own (or public): a caller cannot label for others."""
        if self.admin:
            return
        foreign = sorted(set(groups) - self.visible_groups)
        if foreign:
            raise AccessDeniedError(
                f"{where}: {self.name!r} is not in group(s) {', '.join(foreign)}: label documents with your own "
                f"groups ({', '.join(sorted(self.visible_groups))})"
            )


def resolve_principal(principal: Principal | None, settings: Settings) -> Principal:
    """The caller an entry point named, else `access.default_principal`: local, public-only, or a refusal."""
    if principal is not None:
        return principal
    default = settings.access.default_principal
    if default == "local":
        return Principal.local()
    if default == "public":
        return Principal.anonymous()
    raise AccessDeniedError(
        "no caller was given for this request and access.default_principal=none: the entry point must pass the "
        "caller's Principal (an API key's, or Principal.local() for a single user)"
    )
