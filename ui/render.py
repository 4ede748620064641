"""Rendering of one answer: its text with linked citations, a refusal as a refusal, the sources, feedback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from rag.collections import neighbour_chunks
from rag.errors import RagError
from rag.types import Answer, PromptChunk, RetrievedChunk, source_label
from ui.conversation import Exchange
from ui.feedback import FEEDBACK_FILE, append_feedback, feedback_record
from ui.passages import (
    citing_sentences,
    escape_markdown,
    format_scores,
    highlight_spans,
    highlighted_html,
    link_citations,
)
from ui.resources import get_feedback_redactor, get_store
from ui.settings import AppContext

REFUSAL_REASONS = {
    "evidence": "The closest passages match the question too weakly, so the model was not asked.",
    "model": "The model found no answer in the passages it was given.",
    "no-documents": "No passage in the collection matched the question.",
    "answerability": "No sentence of the closest passages answers the question well enough to quote it.",
}


def anchor(conversation: str, exchange: Exchange, number: int) -> str:
    return f"src-{conversation}-{exchange.id}-{number}"


def answer_markdown(answer: Answer, conversation: str, exchange: Exchange) -> str:
    """The answer with linked citations; a sentence the checker could not support ends in a warning sign."""
    anchors = {c.number: anchor(conversation, exchange, c.number) for c in answer.chunks}
    text = answer.text
    for s in sorted(answer.unsupported, key=lambda x: x.start, reverse=True):
        text = text[: s.end] + " ⚠️" + text[s.end :]
    return link_citations(text, anchors)


def render_answer(ctx: AppContext, conversation: str, exchange: Exchange) -> None:
    """Everything shown under the assistant's avatar for one exchange."""
    if exchange.error is not None:
        st.error(exchange.error)
        return
    answer = exchange.answer
    assert answer is not None
    if answer.refused:
        reason = REFUSAL_REASONS.get(answer.refusal_reason or "", "")
        st.warning(f"**{escape_markdown(answer.text)}** {reason}", icon=":material/block:")
    else:
        st.markdown(answer_markdown(answer, conversation, exchange))
        for s in answer.unsupported:
            st.caption(escape_markdown(f"⚠️ Not supported by the sources: “{s.text}” ({s.reason})."))
    for s in answer.removed:
        st.caption(escape_markdown(f"Removed, not supported by the sources: “{s.text}” ({s.reason})."))
    render_details(answer)
    render_sources(ctx, conversation, exchange)
    render_feedback(ctx, conversation, exchange)


def render_details(answer: Answer) -> None:
    total_s = sum(v for k, v in answer.timings_ms.items() if k != "ttft") / 1000
    how = "quoted from the sources, no AI model" if answer.mode == "extract" else answer.model
    parts = [how, f"{total_s:.1f} s"]
    if answer.evidence is not None:
        parts.append(f"evidence {answer.evidence:.2f}")
    if answer.query != answer.question:
        parts.append(f"searched for: “{answer.query}”")
    if answer.cached:
        parts.append("cached answer")
    if answer.dropped_citations:
        parts.append(f"{answer.dropped_citations} citation(s) to passages not in the prompt removed")
    st.caption(escape_markdown(" · ".join(parts)))


def render_sources(ctx: AppContext, conversation: str, exchange: Exchange) -> None:
    answer = exchange.answer
    assert answer is not None
    cited = {c.number for c in answer.citations}
    if answer.chunks:
        st.markdown("**Closest passages found**" if answer.refused else "**Sources**")
        for pc in answer.chunks:
            claims = citing_sentences(answer.text, pc.number) if pc.number in cited else []
            quoted = [(q.start, q.end) for q in answer.quotes if q.number == pc.number]
            checked = [s.span for s in answer.support if s.source == pc.number and s.span and s.supported]
            spans = quoted or checked or None
            render_source(ctx, conversation, exchange, pc.chunk, pc.number, pc.number in cited, claims, pc, spans)
    elif answer.retrieved:
        st.markdown("**Closest passages found**")
        for i, chunk in enumerate(answer.retrieved[: ctx.options.max_chunks], start=1):
            render_source(ctx, conversation, exchange, chunk, i, False, [], None)


def render_source(
    ctx: AppContext,
    conversation: str,
    exchange: Exchange,
    chunk: RetrievedChunk,
    number: int,
    is_cited: bool,
    claims: Sequence[str],
    prompt_chunk: PromptChunk | None,
    spans: Sequence[tuple[int, int]] | None = None,
) -> None:
    """One source: an anchor the answer's [n] links to, and an expander with the chunk and its details.

    `spans` are exact character ranges to highlight (a quoted answer's quotes, the checker's supporting sentences);
    without them the cited sentences are found by shared words.
    """
    st.markdown(f'<div id="{anchor(conversation, exchange, number)}"></div>', unsafe_allow_html=True)
    label = f"[{number}] {source_label(chunk)}" + (" — cited" if is_cited else "")
    with st.expander(escape_markdown(label), icon=":material/description:" if is_cited else None):
        p = chunk.payload
        facts = [f"**Document:** {escape_markdown(str(p.get('source_name') or Path(str(p.get('source', ''))).name))}"]
        pages = p.get("pages") or []
        if pages:
            facts.append(f"**Page:** {', '.join(str(x) for x in pages)}")
        section = " > ".join(str(s) for s in p.get("section_path") or [])
        if section:
            facts.append(f"**Section:** {escape_markdown(section)}")
        facts.append(f"**Scores:** {format_scores(chunk.stage_scores)}")
        st.markdown("  \n".join(facts))
        if prompt_chunk is not None and prompt_chunk.truncated:
            st.caption("Only the start of this passage fitted in the prompt.")
        marked = list(spans) if spans is not None else highlight_spans(chunk.text, claims)
        st.html(highlighted_html(chunk.text, marked))
        source = str(p.get("source", ""))
        if source:
            st.caption(escape_markdown(source))
        key = f"context-{conversation}-{exchange.id}-{number}"
        if ctx.server is not None:  # the neighbouring chunks are read from the store, which the server holds
            return
        if st.toggle("Show in context", key=key, help="The chunks just before and after this one in its document."):
            render_context(ctx, exchange.collection, chunk, claims)


def render_context(ctx: AppContext, collection: str, chunk: RetrievedChunk, claims: Sequence[str]) -> None:
    index = chunk.payload.get("chunk_index")
    if not isinstance(index, int):
        st.caption("This chunk has no position in its document.")
        return
    try:
        neighbours = neighbour_chunks(
            get_store(ctx.settings), collection, chunk.document_id, index, principal=ctx.principal
        )
    except RagError as e:
        st.error(str(e))
        return
    count = chunk.payload.get("chunk_count")
    for payload in neighbours:
        i = int(payload.get("chunk_index", -1))
        text = str(payload.get("text", ""))
        here = i == index
        st.caption(f"Chunk {i + 1}" + (f" of {count}" if count else "") + (" — this source" if here else ""))
        spans = highlight_spans(text, claims) if here else []
        body = highlighted_html(text, spans)
        if here:
            body = f'<div style="border-left: 3px solid #f0b429; padding-left: 0.6em">{body}</div>'
        st.html(body)


def _record_feedback(ctx: AppContext, key: str, answer: Answer, collection: str) -> None:
    value = st.session_state.get(key)
    if value is None:  # a thumb taken back: nothing to store
        return
    rating = "up" if value == 1 else "down"
    record = feedback_record(answer, rating, collection, redact=get_feedback_redactor(ctx.settings))
    append_feedback(ctx.settings.data_dir / FEEDBACK_FILE, record)
    st.toast("Thanks: your feedback was saved.", icon=":material/check:")


def render_feedback(ctx: AppContext, conversation: str, exchange: Exchange) -> None:
    key = f"feedback-{conversation}-{exchange.id}"
    args: tuple[Any, ...] = (ctx, key, exchange.answer, exchange.collection)
    st.feedback("thumbs", key=key, on_change=_record_feedback, args=args)
