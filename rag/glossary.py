"""Query expansion from glossaries: the words a question uses, mapped to the words the documents print.

A question says "capex" or "quick ratio"; a filing prints "Purchases of property, plant and equipment" and "Total
current assets". Neither BM25 nor a small embedder bridges that, so retrieval searches the question plus what its
glossary terms mean (`retrieval.glossaries`). A glossary is a YAML file of entries `terms` -> `means`; the finance
glossary ships in rag/glossaries/, and a company adds its own (acronyms, product code names, old names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

SHIPPED_DIR = Path(__file__).resolve().parent / "glossaries"


@dataclass(frozen=True)
class GlossaryEntry:
    terms: tuple[str, ...]  # what a question may say
    means: tuple[str, ...]  # what the documents print
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Expansion:
    """A query and the glossary entries it named: `text` is what retrieval searches."""

    query: str
    matches: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (the words as the query has them, their meanings)

    @property
    def text(self) -> str:
        if not self.matches:
            return self.query
        return f"{self.query} ({'; '.join(self.terms)})"

    @property
    def terms(self) -> tuple[str, ...]:
        """The meanings, phrase by phrase: the extra words a quoted answer may match."""
        return tuple(m for _, means in self.matches for m in means)

    def describe(self) -> str:
        if not self.matches:
            return "glossary: no term of the query is in a glossary"
        said = "; ".join(f"'{found}' -> {', '.join(means)}" for found, means in self.matches)
        return f"glossary: {said}"

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "searched": self.text, "matches": [[f, list(m)] for f, m in self.matches]}


def _phrases(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected phrases separated by ';' (or a list of them), got {value!r}")
    return tuple(p.strip() for p in value.split(";") if p.strip())


def _pattern(terms: Sequence[str]) -> re.Pattern[str]:
    """One regex for all of an entry's terms: case, a plural 's' and space/hyphen differences ignored; a term is
    matched as whole words ("roa" is not in "road", "r&d" is)."""
    alternatives = []
    for term in sorted(terms, key=len, reverse=True):
        words = [re.escape(w) for w in re.split(r"[\s-]+", term.strip())]
        alternatives.append(r"[\s-]+".join(words) + r"(?:s|es)?")
    return re.compile(r"(?<![\w&])(?:" + "|".join(alternatives) + r")(?![\w&])", re.IGNORECASE)


def _resolve(name: str) -> Path:
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if "/" not in name and not name.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_file():
        return path
    names = ", ".join(sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")))
    raise ConfigError(
        f"retrieval.glossaries: {name!r} is neither a shipped glossary ({names}) nor a YAML file: "
        "fix the path or remove it from the list"
    )


@lru_cache(maxsize=32)
def _load_file(path: Path, mtime: float) -> tuple[GlossaryEntry, ...]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read this glossary ({e}): fix the file or remove it") from e
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: a glossary is a mapping with a list `entries:` of {{terms, means}}")
    out = []
    for i, entry in enumerate(entries, 1):
        where = f"{path}, entry {i}"
        if not isinstance(entry, dict) or set(entry) != {"terms", "means"}:
            raise ConfigError(f"{where}: each entry has exactly `terms` and `means`, got {entry!r}")
        terms = _phrases(entry["terms"], f"{where}, terms")
        out.append(GlossaryEntry(terms, _phrases(entry["means"], f"{where}, means"), _pattern(terms)))
    return tuple(out)


class Glossary:
    """The entries of every configured glossary, in order; an entry is used once per query."""

    def __init__(self, entries: Sequence[GlossaryEntry] = ()) -> None:
        self.entries = tuple(entries)

    @classmethod
    def load(cls, names: Sequence[str]) -> Glossary:
        """Shipped names (`finance`) or paths to YAML files; a bad one raises ConfigError naming it."""
        entries: list[GlossaryEntry] = []
        for name in names:
            path = _resolve(name)
            entries.extend(_load_file(path.resolve(), path.stat().st_mtime))
        return cls(entries)

    def expand(self, query: str) -> Expansion:
        matches: list[tuple[str, tuple[str, ...]]] = []
        seen: set[str] = set()
        for entry in self.entries:
            found = entry.pattern.search(query)
            if found is None:
                continue
            # Two entries may mean the same thing ("capex" and "free cash flow" both name purchases of PP&E).
            means = tuple(m for m in entry.means if m.lower() not in seen)
            seen.update(m.lower() for m in means)
            if means:
                matches.append((found.group(0), means))
        return Expansion(query, tuple(matches))
