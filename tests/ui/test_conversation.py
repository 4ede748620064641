"""Conversations kept across page reloads, and the history a follow-up gets (ui/conversation.py)."""

from __future__ import annotations

from ui.conversation import ConversationStore, Exchange, history


def test_conversations_are_kept_and_the_oldest_dropped_beyond_capacity() -> None:
    store = ConversationStore(capacity=2)
    store.append("a", Exchange("1", "q1", "docs", error="boom"))
    store.append("b", Exchange("2", "q2", "docs", error="boom"))
    store.get("a")  # used: now the most recent
    store.append("c", Exchange("3", "q3", "docs", error="boom"))
    assert store.exists("a") and store.exists("c") and not store.exists("b")
    assert [e.question for e in store.get("a")] == ["q1"]
    assert store.get("unknown") == []


def test_history_leaves_out_exchanges_that_failed() -> None:
    assert history([Exchange("1", "q", "docs", error="collection is empty")]) == []
