"""Conversations kept in server memory under an id carried in the page URL (`?c=<id>`).

Streamlit's session state dies with a page reload; the URL survives it, so a reload finds its conversation
again for as long as the server runs. Nothing is written to disk: a restart starts every conversation anew.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from rag.types import Answer, Turn


@dataclass(frozen=True)
class Exchange:
    """One question and what came of it: an answer, or the one-line error that stopped it."""

    id: str
    question: str
    collection: str
    answer: Answer | None = None
    error: str | None = None


class ConversationStore:
    """Conversations by id, the least recently used dropped beyond `capacity` (memory stays bounded)."""

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self._conversations: OrderedDict[str, list[Exchange]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def get(self, conversation_id: str) -> list[Exchange]:
        with self._lock:
            exchanges = self._conversations.get(conversation_id)
            if exchanges is None:
                return []
            self._conversations.move_to_end(conversation_id)
            return list(exchanges)

    def exists(self, conversation_id: str) -> bool:
        with self._lock:
            return conversation_id in self._conversations

    def append(self, conversation_id: str, exchange: Exchange) -> None:
        with self._lock:
            self._conversations.setdefault(conversation_id, []).append(exchange)
            self._conversations.move_to_end(conversation_id)
            while len(self._conversations) > self.capacity:
                self._conversations.popitem(last=False)


def history(exchanges: list[Exchange], collection: str) -> list[Turn]:
    """The turns a follow-up to `collection` is condensed against: its answered exchanges, oldest first.

    One history per collection: after a switch, a follow-up is never rewritten with another collection's answers.
    """
    return [Turn(e.question, e.answer.text) for e in exchanges if e.answer is not None and e.collection == collection]
