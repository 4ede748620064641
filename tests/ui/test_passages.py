"""Highlighting the cited sentence inside its chunk, citation links and escaping (ui/passages.py)."""

from __future__ import annotations

from ui.passages import (
    citing_sentences,
    escape_markdown,
    format_scores,
    highlight_spans,
    highlighted_html,
    link_citations,
    sentence_spans,
)

CHUNK = (
    "Paid leave\n\nEvery full-time employee gets 28 days of paid leave per calendar year, in addition to public "
    "holidays. Part-time employees get a pro-rata share. Up to five unused days can be carried over to the next "
    "year; they expire on 31 March."
)


def test_sentence_spans_cover_lines_and_sentences_without_surrounding_space() -> None:
    spans = [CHUNK[s:e] for s, e in sentence_spans(CHUNK)]
    assert spans[0] == "Paid leave"
    assert spans[1].startswith("Every full-time employee") and spans[1].endswith("public holidays.")
    assert spans[-1] == "Up to five unused days can be carried over to the next year; they expire on 31 March."


def test_citing_sentences_picks_the_sentences_with_the_marker() -> None:
    answer = "Employees get 28 days [1]. Sick leave needs a certificate [2]. Five days carry over [1]."
    assert citing_sentences(answer, 1) == ["Employees get 28 days [1].", "Five days carry over [1]."]
    assert citing_sentences(answer, 3) == []


def test_highlight_marks_the_chunk_sentence_each_claim_came_from() -> None:
    claims = ["Full-time employees get 28 days of paid leave a year [1].", "Five unused days can be carried over [1]."]
    marked = [CHUNK[s:e] for s, e in highlight_spans(CHUNK, claims)]
    assert marked == [
        "Every full-time employee gets 28 days of paid leave per calendar year, in addition to public holidays.",
        "Up to five unused days can be carried over to the next year; they expire on 31 March.",
    ]


def test_highlight_marks_nothing_for_an_unrelated_claim_or_none() -> None:
    assert highlight_spans(CHUNK, ["The torque wrench is calibrated yearly [1]."]) == []
    assert highlight_spans(CHUNK, []) == []


def test_a_shared_number_alone_is_enough() -> None:
    # "28" is one shared content word, but a number is specific: the sentence holding it is marked.
    [(start, end)] = highlight_spans(CHUNK, ["It is 28 [1]."])
    assert "28 days" in CHUNK[start:end]


def test_highlighted_html_escapes_text_and_marks_spans() -> None:
    text = "a <b> & c. Then d."
    html = highlighted_html(text, [(11, 18)])
    assert "a &lt;b&gt; &amp; c. <mark>Then d.</mark>" in html
    assert "<b>" not in html


def test_link_citations_links_known_numbers_and_escapes_dollars() -> None:
    text = link_citations("Hotels cost $150 and meals $40 [1][2]. See [3].", {1: "src-1", 2: "src-2"})
    assert text == "Hotels cost \\$150 and meals \\$40 [\\[1\\]](#src-1)[\\[2\\]](#src-2). See [3]."


def test_escape_markdown_keeps_names_literal() -> None:
    assert escape_markdown("my_file*v2*.md > [draft]") == "my\\_file\\*v2\\*.md \\> \\[draft\\]"


def test_format_scores_follows_the_stage_order() -> None:
    assert format_scores({"rerank": 3.12, "fusion": 1.6061}) == "fusion 1.606 · rerank 3.120"
