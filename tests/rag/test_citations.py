"""Citation markers: valid ones kept and normalised, unknown ones dropped and counted, streaming-safe."""

from __future__ import annotations

import pytest

from rag.citations import CitationFilter, filter_citations


def test_valid_markers_are_kept_and_unknown_ones_dropped() -> None:
    text, cited, dropped = filter_citations("Leave is 28 days [1]. Sick notes after 3 days [2][7].", {1, 2, 3})
    assert text == "Leave is 28 days [1]. Sick notes after 3 days [2]."
    assert cited == [1, 2]
    assert dropped == 1


def test_lists_and_document_variants_are_normalised() -> None:
    text, cited, dropped = filter_citations("A [1, 3]. B [Document 2]. C [doc 9].", {1, 2, 3})
    assert text == "A [1][3]. B [2]. C ."
    assert cited == [1, 3, 2]
    assert dropped == 1


def test_brackets_that_are_not_citations_pass_through() -> None:
    text, cited, dropped = filter_citations("Use the [Settings] menu; see [a].", {1})
    assert text == "Use the [Settings] menu; see [a]."
    assert (cited, dropped) == ([], 0)


@pytest.mark.parametrize("cut", range(1, 30))
def test_streaming_gives_the_same_text_wherever_the_deltas_split(cut: int) -> None:
    """A marker split across deltas ('[1' + '2]') must be judged whole, exactly as on the full text."""
    full = "Twenty-eight days [1]. Not [12] nor [2, 12]."
    f = CitationFilter(frozenset({1, 2}))
    streamed = "".join(f.filter([full[:cut], full[cut:]]))
    expected, cited, dropped = filter_citations(full, {1, 2})
    assert streamed == expected == "Twenty-eight days [1]. Not  nor [2]."
    assert (f.cited, f.dropped) == (cited, dropped) == ([1, 2], 2)


def test_an_unclosed_bracket_at_the_end_is_flushed() -> None:
    f = CitationFilter(frozenset({1}))
    assert "".join(f.filter(["see [1", " and [x"])) == "see [1 and [x"
