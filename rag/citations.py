"""Citation markers [n] in generated text: kept when n names a chunk that was in the prompt, dropped and counted
otherwise, and tracked incrementally so the mapping survives streaming.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# "[1]", "[2, 3]", "[1][2]" and the "[Document 2]" / "[doc 2]" variants small models write.
CITATION = re.compile(
    r"\[(?:(?:document|doc|source)\s*)?(\d{1,3}(?:\s*,\s*(?:(?:document|doc|source)\s*)?\d{1,3})*)\]", re.I
)
# Longest text that could still turn out to be a marker: hold it back while streaming.
_OPEN_TAIL = re.compile(r"\[[^\[\]]{0,40}$")


@dataclass
class CitationFilter:
    """Rewrites streamed text: valid markers pass (normalised to [n]), markers to unknown chunks are removed.

    `cited` lists valid chunk numbers in order of first citation; `dropped` counts removed references.
    """

    valid: frozenset[int]
    cited: list[int] = field(default_factory=list)
    dropped: int = 0
    _pending: str = ""

    def _rewrite(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
            kept = [n for n in numbers if n in self.valid]
            self.dropped += len(numbers) - len(kept)
            for n in kept:
                if n not in self.cited:
                    self.cited.append(n)
            return "".join(f"[{n}]" for n in kept)

        return CITATION.sub(one, text)

    def feed(self, delta: str) -> str:
        """Text safe to show now; a trailing '[...' that may become a marker waits for the next delta."""
        text = self._pending + delta
        tail = _OPEN_TAIL.search(text)
        if tail:
            self._pending, text = text[tail.start() :], text[: tail.start()]
        else:
            self._pending = ""
        return self._rewrite(text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self._rewrite(text)

    def filter(self, deltas: Iterable[str]) -> Iterator[str]:
        for delta in deltas:
            out = self.feed(delta)
            if out:
                yield out
        rest = self.flush()
        if rest:
            yield rest


def filter_citations(text: str, valid: Iterable[int]) -> tuple[str, list[int], int]:
    """The whole-text form: (cleaned text, cited numbers in order, number of dropped references)."""
    f = CitationFilter(frozenset(valid))
    cleaned = f.feed(text) + f.flush()
    return cleaned, f.cited, f.dropped
