"""Monitoring page: drift signals of this app's answers (and of the API server's, when the app is pointed at one).

A recent window moving away from the since-start figures is the signal: more refusals, lower evidence, more
questions far from every chunk (the documents do not cover what people ask now), more thumbs down.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from rag.errors import RagError
from ui.resources import get_drift
from ui.session import current_context

SIGNALS = (
    ("answers", "Answers", "{:.0f}"),
    ("refusal_rate", "Refusal rate", "{:.1%}"),
    ("mean_evidence", "Mean evidence score", "{:.3f}"),
    ("far_query_share", "Questions far from every chunk", "{:.1%}"),
    ("unsupported_sentence_rate", "Unsupported generated sentences", "{:.1%}"),
)


def _fmt(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def show(snapshot: dict[str, Any]) -> None:
    recent, since = snapshot["recent"], snapshot["since_start"]
    rows = [
        {
            "signal": label,
            f"last {snapshot['window']}": _fmt(recent.get(key), fmt),
            "since start": _fmt(since.get(key), fmt),
        }
        for key, label, fmt in SIGNALS
    ]
    st.dataframe(rows, hide_index=True)
    feedback = snapshot["feedback"]
    rate = feedback.get("thumbs_down_rate")
    st.caption(
        f"Thumbs down: {_fmt(rate, '{:.1%}')} of the last {feedback.get('ratings', 0)} ratings "
        f"in {feedback.get('file')}. "
        f"A question is far from every chunk when its best evidence is below {snapshot['far_evidence_below']}."
    )


ctx = current_context()
st.title("Monitoring")
server = ctx.server
if server is None:
    st.subheader("This app")
    show(get_drift(ctx.settings).snapshot())
else:  # the app answers through the server, so the server's signals are the app's
    from ui.remote import connect, server_problem

    st.subheader(f"API server {server}")
    try:
        with connect(ctx.settings, ctx.api_key) as client:
            show(client.monitoring())
    except RagError as e:
        st.warning(server_problem(server, e))
