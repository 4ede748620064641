"""The one sentence splitter: offsets, abbreviations, lines, and text with no sentence boundary."""

from rag.text import MAX_SENTENCE_CHARS, content_tokens, lexical_support, sentence_spans, sentence_split


def test_spans_are_offsets_into_the_text() -> None:
    text = "  Employees get 28 days of paid leave. Dr. Smith approves it!\nNew line here"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Employees get 28 days of paid leave.",
        "Dr. Smith approves it!",
        "New line here",
    ]


def test_abbreviations_initials_and_decimals_do_not_end_a_sentence() -> None:
    assert sentence_split("In the U.S. Then J. K. Rowling wrote 3.5 books, e.g. Harry. Done.") == [
        "In the U.S. Then J. K. Rowling wrote 3.5 books, e.g. Harry.",
        "Done.",
    ]


def test_a_line_with_no_boundary_is_cut_into_readable_pieces() -> None:
    text = ", ".join(str(n) for n in range(2000))  # ~9,000 characters, no sentence end
    spans = sentence_spans(text)
    assert len(spans) > 10
    assert all(b - a <= MAX_SENTENCE_CHARS for a, b in spans)
    assert "".join(text[a:b] for a, b in spans).replace(" ", "") == text.replace(" ", "")


def test_cjk_full_stop_ends_a_sentence() -> None:
    assert sentence_split("年假为二十八天。病假另计。") == ["年假为二十八天。", "病假另计。"]


def test_lexical_support_uses_the_best_single_passage() -> None:
    assert content_tokens("How long is the paid leave?") == {"long", "paid", "leave"}
    assert lexical_support("28 days of paid leave", ["paid leave is 28 days", "nothing"]) == 1.0
    assert lexical_support("28 days of paid leave", ["28 days", "paid leave"]) == 0.5
