"""How an answer's sources are shown: the cited sentences marked inside their chunk, citation links, scores.

Pure functions over text, so the highlighting is tested without a browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

from rag.text import sentence_spans

_WORD = re.compile(r"\w+")
_CITATION = re.compile(r"\[(\d{1,3})\]")
# Words too common to show that an answer sentence came from a chunk sentence.
_STOPWORD_TEXT = """a an and are as at be by can do does for from has have how in is it its of on or that the their them
there they this to was were what when where which who will with you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Dollar signs pair up into LaTeX in Streamlit markdown ("$150 ... $40" renders as a formula).
_MARKDOWN_DOLLAR = re.compile(r"(?<!\\)\$")


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())}


def citing_sentences(answer: str, number: int) -> list[str]:
    """The sentences of `answer` that carry the marker [number]."""
    marker = f"[{number}]"
    return [answer[s:e] for s, e in sentence_spans(answer) if marker in answer[s:e]]


def highlight_spans(chunk_text: str, claims: Sequence[str], min_shared: int = 2) -> list[tuple[int, int]]:
    """Spans of `chunk_text` that the `claims` (answer sentences citing it) were most likely drawn from.

    For each claim, the chunk sentence sharing the most content words with it, when it shares at least
    `min_shared` (or one number: "28 days" is specific enough on its own). Sorted, without duplicates.
    """
    sentences = sentence_spans(chunk_text)
    words = [_content_words(chunk_text[s:e]) for s, e in sentences]
    chosen: set[tuple[int, int]] = set()
    for claim in claims:
        wanted = _content_words(_CITATION.sub(" ", claim))
        best, best_score = None, 0.0
        for span, have in zip(sentences, words, strict=True):
            shared = wanted & have
            enough = len(shared) >= min_shared or any(w.isdigit() for w in shared)
            # Ties go to the sentence where the shared words are the larger part (the more specific one).
            score = len(shared) + len(shared) / (len(have) + 1)
            if enough and score > best_score:
                best, best_score = span, score
        if best is not None:
            chosen.add(best)
    return sorted(chosen)


def highlighted_html(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` as escaped HTML with `spans` in <mark>, line breaks kept."""
    parts, at = [], 0
    for start, end in sorted(spans):
        if start < at:
            continue  # overlapping spans: the first one wins
        parts.append(html.escape(text[at:start]))
        parts.append(f"<mark>{html.escape(text[start:end])}</mark>")
        at = end
    parts.append(html.escape(text[at:]))
    body = "".join(parts)
    return f'<div style="white-space: pre-wrap; line-height: 1.5">{body}</div>'


def link_citations(answer: str, anchors: Mapping[int, str]) -> str:
    """The answer as Markdown with each [n] that has an anchor turned into a link to it; `$` escaped."""
    text = _MARKDOWN_DOLLAR.sub(r"\\$", answer)

    def link(m: re.Match[str]) -> str:
        anchor = anchors.get(int(m.group(1)))
        return f"[\\[{m.group(1)}\\]](#{anchor})" if anchor else m.group(0)

    return _CITATION.sub(link, text)


def format_scores(stage_scores: Mapping[str, float]) -> str:
    """'fusion 1.606 · rerank 3.120': each stage's score in the order the stages ran."""
    order = {"dense": 0, "sparse": 1, "fusion": 2, "rerank": 3}
    items = sorted(stage_scores.items(), key=lambda kv: order.get(kv[0], 9))
    return " · ".join(f"{stage} {score:.3f}" for stage, score in items)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")


def escape_markdown(text: str) -> str:
    """Text shown literally in Markdown (file names with underscores, sections with '#', amounts with '$')."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
