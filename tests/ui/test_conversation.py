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
    assert history([Exchange("1", "q", "docs", error="collection is empty")], "docs") == []


def test_a_follow_up_after_a_collection_switch_sees_only_that_collections_turns() -> None:
    from rag.answering import Answer, Turn

    def answer_with(text: str) -> Answer:
        return Answer("q?", "q?", text, False, None, (), (), (), 0.8, 0, {}, 10, 5, "m")

    exchanges = [
        Exchange("1", "How long is paid leave?", "hr", answer=answer_with("28 days [1].")),
        Exchange("2", "Which VPN client?", "it", answer=answer_with("WireGuard [1].")),
        Exchange("3", "And for part-timers?", "hr", answer=answer_with("A share [1].")),
    ]
    assert history(exchanges, "hr") == [
        Turn("How long is paid leave?", "28 days [1]."),
        Turn("And for part-timers?", "A share [1]."),
    ]
    assert history(exchanges, "it") == [Turn("Which VPN client?", "WireGuard [1].")]
    assert history(exchanges, "finance") == []
