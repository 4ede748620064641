"""API keys: created once and shown once, stored only as salted SHA-256 hashes in one JSON file.

A key is `rag_<id>_<secret>`: `id` (8 hex characters) finds the record, `secret` is 32 random bytes. A slow
password hash (scrypt, bcrypt) protects low-entropy passwords from guessing; a 256-bit random secret cannot be
guessed, so SHA-256 is as safe here and costs ~1 µs per request where scrypt would cost ~50 ms (and hand a
client a cheap way to burn the server's CPU). The per-key salt keeps two stores' hashes of a leaked key apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.access.principal import Principal, check_group
from rag.errors import AuthenticationError, ConfigError, UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TOKEN = re.compile(r"^rag_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ApiKey:
    """One key's record as stored (no secret in it)."""

    key_id: str
    name: str
    groups: tuple[str, ...]
    admin: bool
    created: str
    revoked: str | None
    salt: str
    hash: str

    @property
    def active(self) -> bool:
        return self.revoked is None

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.groups), admin=self.admin)

    def describe(self) -> dict[str, Any]:
        """What `rag keys list` shows: everything but the salt and hash."""
        return {k: v for k, v in asdict(self).items() if k not in ("salt", "hash")} | {"groups": list(self.groups)}


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class KeyStore:
    """The key file (`settings.keys_path`); writes are atomic and serialised by a file lock, reads follow its mtime."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cache: tuple[int, int, dict[str, ApiKey]] | None = None
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------------------
    def _load(self) -> dict[str, ApiKey]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._cache is not None and self._cache[:2] == (stat.st_mtime_ns, stat.st_size):
                return self._cache[2]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            keys = {r["key_id"]: ApiKey(**{**r, "groups": tuple(r["groups"])}) for r in data["keys"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{self.path}: not a readable key store ({e}); restore it from a backup") from e
        with self._lock:
            self._cache = (stat.st_mtime_ns, stat.st_size, keys)
        return keys

    def list_keys(self, *, include_revoked: bool = True) -> list[ApiKey]:
        keys = sorted(self._load().values(), key=lambda k: (k.name, k.created))
        return [k for k in keys if include_revoked or k.active]

    def has_keys(self) -> bool:
        """Whether any key is active: `access.auth=auto` asks for keys from then on."""
        return any(k.active for k in self._load().values())

    def groups(self) -> set[str]:
        """Every group some key (active or revoked) belongs to: a revoked key's documents keep a valid label."""
        return {g for k in self._load().values() for g in k.groups}

    def authenticate(self, token: str | None) -> Principal:
        """The principal of an active key; AuthenticationError for a missing, malformed, unknown or revoked one."""
        if not token:
            raise AuthenticationError("no API key: send 'Authorization: Bearer <key>' (`rag keys create` makes one)")
        match = _TOKEN.match(token.strip())
        key = self._load().get(match.group(1)) if match else None
        if key is None or match is None or not hmac.compare_digest(key.hash, _digest(key.salt, match.group(2))):
            raise AuthenticationError("the API key is not valid: check it, or ask an admin for a new one")
        if not key.active:
            raise AuthenticationError(f"the API key of {key.name!r} was revoked on {key.revoked}: ask for a new one")
        return key.principal()

    # -- writing -----------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("a+", encoding="utf-8") as lock:
            try:
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except ImportError:  # Windows: one writer at a time is the operator's care
                pass
            keys = dict(self._load())
            yield keys
            tmp = self.path.with_suffix(".tmp")
            body = {"keys": [asdict(k) for k in sorted(keys.values(), key=lambda k: (k.name, k.created))]}
            tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
            os.chmod(tmp, 0o600)  # hashes only, but still nobody else's business
            os.replace(tmp, self.path)

    def create(self, name: str, groups: list[str] | tuple[str, ...] = (), *, admin: bool = False) -> tuple[str, ApiKey]:
        """A new key for `name`: returns the key itself (shown once, never stored) and its record."""
        if not _NAME.match(name):
            raise UsageError(
                f"key name {name!r} is invalid: use letters, digits, '_', '.', '@', '-' (up to 64, starting with a "
                "letter or digit)"
            )
        clean = tuple(sorted({check_group(g.strip(), "--groups") for g in groups if g.strip()}))
        with self._locked() as keys:
            if any(k.name == name and k.active for k in keys.values()):
                raise UsageError(f"an active key named {name!r} exists: revoke it first (`rag keys revoke {name}`)")
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)  # 32 random bytes -> 43 characters
            salt = secrets.token_hex(16)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            record = ApiKey(key_id, name, clean, admin, created, None, salt, _digest(salt, secret))
            keys[key_id] = record
        return f"rag_{key_id}_{secret}", record

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key named `name` (its record stays, marked with the time)."""
        with self._locked() as keys:
            active = [k for k in keys.values() if k.name == name and k.active]
            if not active:
                known = ", ".join(sorted({k.name for k in keys.values() if k.active})) or "none"
                raise UsageError(f"no active key named {name!r} (active keys: {known})")
            revoked = ApiKey(**{**asdict(active[0]), "revoked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            keys[revoked.key_id] = revoked
        return revoked
