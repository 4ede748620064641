"""Which groups a document gets at ingest: `--access` groups for every file, and a rules file of path patterns.

A rules file (YAML) lists patterns and groups; a document gets the `--access` groups plus those of every rule its
path matches, or `public` when that is none (refused instead under `access.require_groups`):

    rules:
      - pattern: "hr/*"              # a relative pattern matches the end of the path: any folder named hr
        groups: [hr]
      - pattern: "*/finance/*.xlsx"
        groups: [finance, board]

`*` also crosses '/', as in fnmatch. Group names are checked against the known groups when there are any: the
groups of existing keys, `access.groups` and `public` (`known_groups`); a name outside them is a typo that would
hide the documents from everyone, so ingest stops before reading any file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml

from rag.access.keys import KeyStore
from rag.access.principal import PUBLIC, check_group
from rag.config import Settings
from rag.errors import ConfigError, UsageError


@dataclass(frozen=True)
class AccessRule:
    pattern: str
    groups: tuple[str, ...]

    def matches(self, path: str) -> bool:
        if fnmatch.fnmatchcase(path, self.pattern):
            return True
        return not self.pattern.startswith("/") and fnmatch.fnmatchcase(path, "*/" + self.pattern)


@dataclass(frozen=True)
class DocumentAccess:
    """The groups ingest gives each document: `groups` for all, plus the matching `rules`; `require` refuses none."""

    groups: tuple[str, ...] = ()
    rules: tuple[AccessRule, ...] = ()
    rules_file: str | None = None
    require: bool = False

    @property
    def given(self) -> bool:
        """Whether the run names any groups: without, documents already in the store keep theirs."""
        return bool(self.groups or self.rules)

    def groups_for(self, source: str) -> tuple[str, ...]:
        """The sorted groups of a document from `source` (a JSONL record's source is its file's); () for none."""
        path = source.split("#", 1)[0]
        found = set(self.groups)
        for rule in self.rules:
            if rule.matches(path):
                found.update(rule.groups)
        return tuple(sorted(found))

    def payload_groups(self, source: str) -> list[str]:
        """What the chunk payload's `access` field holds: the groups, or [public] when none (the caller checks
        `require` first with `missing`)."""
        return list(self.groups_for(source)) or [PUBLIC]

    def missing(self, source: str) -> str | None:
        """The refusal reason when the policy requires groups and this document gets none, else None."""
        if self.require and not self.groups_for(source):
            where = f" and no rule of {self.rules_file} matches it" if self.rules_file else ""
            return f"no access group (access.require_groups is on): pass --access GROUP{where}, or add a rule for it"
        return None


def load_rules(path: Path) -> tuple[AccessRule, ...]:
    """Read a rules file; ConfigError naming the file and the entry for anything malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"--access-rules {path}: cannot read it ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--access-rules {path}: not valid YAML ({e})") from e
    entries = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"--access-rules {path}: expected a 'rules:' list of {{pattern, groups}} entries")
    rules = []
    for i, entry in enumerate(entries):
        where = f"--access-rules {path}: rules[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str) or not entry["pattern"]:
            raise ConfigError(f"{where}: needs a 'pattern' (a path glob such as 'hr/*')")
        groups = entry.get("groups")
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"{where} ({entry['pattern']!r}): needs 'groups', a list of group names")
        try:
            checked = tuple(sorted({check_group(g, where) for g in groups}))
        except UsageError as e:
            raise ConfigError(str(e)) from e
        rules.append(AccessRule(entry["pattern"], checked))
    return tuple(rules)


def known_groups(settings: Settings) -> set[str] | None:
    """The group registry: groups of existing keys, `access.groups` and public; None when there is neither."""
    groups = KeyStore(settings.keys_path).groups() | set(settings.access.groups)
    return groups | {PUBLIC} if groups else None


def document_access(
    settings: Settings, groups: list[str] | tuple[str, ...] = (), rules_file: Path | None = None
) -> DocumentAccess:
    """The access of one ingest run, every group checked against the known groups before any file is read."""
    given = tuple(sorted({check_group(g.strip(), "--access") for g in groups if g.strip()}))
    rules = load_rules(rules_file) if rules_file is not None else ()
    known = known_groups(settings)
    if known is not None:
        listing = ", ".join(sorted(known))
        for g in given:
            if g not in known:
                raise UsageError(
                    f"--access {g}: unknown group (known: {listing}); create a key in it "
                    "(`rag keys create --groups ...`) or add it to access.groups"
                )
        for i, rule in enumerate(rules):
            for g in rule.groups:
                if g not in known:
                    raise ConfigError(
                        f"--access-rules {rules_file}: rules[{i}] ({rule.pattern!r}) names unknown group {g!r} "
                        f"(known: {listing}); fix the name, create a key in it, or add it to access.groups"
                    )
    return DocumentAccess(given, rules, str(rules_file) if rules_file else None, settings.access.require_groups)
