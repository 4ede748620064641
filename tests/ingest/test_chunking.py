"""Structure-aware chunking with the embedder's own tokenizer: budgets, sections, tables, offsets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ingest.chunking import StructureChunker, build_document_text, split_sentences
from ingest.cleaning import clean_document, clean_text, find_running_lines
from ingest.documents import Element, ParsedDocument
from rag.config import ChunkingSettings


def _doc(*elements: Element) -> ParsedDocument:
    return ParsedDocument("doc", "/x/doc.txt", "txt", "hash", tuple(elements))


@pytest.fixture(scope="module")
def chunker(embedder: Any) -> StructureChunker:
    return StructureChunker(
        embedder.tokenizer, ChunkingSettings(chunk_tokens=128, overlap_tokens=16), embedder.max_tokens
    )


def _long_text(n: int) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(n))


def test_every_chunk_fits_and_points_into_the_document(chunker: StructureChunker, embedder: Any) -> None:
    doc = _doc(
        Element("Annual report", "Title", 1, 0),
        Element(_long_text(80), "NarrativeText", 1),
        Element("Risks", "Title", 2, 1),
        Element(_long_text(30), "NarrativeText", 2),
        Element("x" * 3000, "NarrativeText", 3),  # one unbreakable 'word' far over the window
    )
    chunks = chunker.chunk(doc)
    text, _ = build_document_text(doc.elements)
    assert len(chunks) > 5
    for c in chunks:
        # The budget holds with the model's own count, special tokens included.
        assert embedder.count_tokens(c.embed_text) <= 128 == chunker.limit
        assert c.token_count == embedder.count_tokens(c.embed_text)
        assert text[c.char_start : c.char_end] == c.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    risks = [c for c in chunks if c.section_path == ("Annual report", "Risks")]
    assert risks and all(2 in c.pages or 3 in c.pages for c in risks)
    # The section heading is prepended to the embedded text of chunks that do not contain it.
    later = [c for c in risks if not c.text.startswith("Risks")]
    assert later and all(c.embed_text.startswith("Annual report > Risks\n\n") for c in later)


def test_overlap_repeats_trailing_sentences(chunker: StructureChunker) -> None:
    chunks = chunker.chunk(_doc(Element(_long_text(60), "NarrativeText", 1)))
    assert len(chunks) >= 3
    for a, b in itertools.pairwise(chunks):
        assert b.char_start < a.char_end, "consecutive chunks of one section overlap"
        first_sentence = b.text[: b.text.index(".") + 1]
        assert first_sentence in a.text


def test_small_table_stays_whole_and_large_table_repeats_its_header(chunker: StructureChunker) -> None:
    small = "| Item | Limit |\n| --- | --- |\n| Hotel | 150 |\n| Meals | 40 |"
    rows = "\n".join(f"| product {i} | {i * 10} EUR |" for i in range(120))
    large = "| Product | Price |\n| --- | --- |\n" + rows
    chunks = chunker.chunk(
        _doc(Element("Intro text.", "NarrativeText", 1), Element(small, "Table", 1), Element(large, "Table", 2))
    )
    whole = [c for c in chunks if "Hotel" in c.text]
    assert len(whole) == 1 and small in whole[0].text
    parts = [c for c in chunks if "product" in c.text]
    assert len(parts) > 2
    for p in parts:
        assert p.text.startswith("| Product | Price |\n| --- | --- |\n")
        assert p.element_types == ("Table",)
    covered = "\n".join(p.text for p in parts)
    assert all(f"| product {i} |" in covered for i in range(120)), "no row lost"


def test_a_header_too_long_to_repeat_is_repeated_shortened(chunker: StructureChunker) -> None:
    # A statement whose title and units the PDF merged into the first header cell, over eight columns (Amcor's
    # reconciliation table): repeated whole it would leave no room for rows, and rows without it say nothing of
    # which figure is which quarter.
    title = "Three Months Ended June 30, 2022 Three Months Ended June 30, 2023 ($ million)"
    header = f"| {title} | EBITDA | EBIT | Net Income | EPS | EBITDA | EBIT | Net Income | EPS |\n" + "| --- " * 9 + "|"
    rows = "\n".join(
        f"| Adjustment {i} | {i} | {i} | {i} | 0.{i} | {i + 1} | {i + 1} | {i + 1} | 0.{i + 1} |" for i in range(40)
    )
    chunks = chunker.chunk(_doc(Element(header + "\n" + rows, "Table", 11)))
    parts = [c for c in chunks if "Adjustment" in c.text]
    assert len(parts) > 3
    for p in parts:
        first, rule = p.text.split("\n")[:2]
        assert first.startswith("| Three") and "… " in first and first.count("|") == 10, first
        assert rule == "|-|-|-|-|-|-|-|-|-|" and p.pages == (11,)
    assert any(title in c.text for c in chunks), "the full header stays in the document's text once"
    covered = "\n".join(p.text for p in parts)
    assert all(f"| Adjustment {i} |" in covered for i in range(40)), "no row lost"


def test_headings_alone_do_not_make_chunks(chunker: StructureChunker) -> None:
    chunks = chunker.chunk(
        _doc(
            Element("Part I", "Title", 1, 0),
            Element("Chapter 1", "Title", 1, 1),
            Element("Body text of chapter one.", "NarrativeText", 1),
        )
    )
    assert len(chunks) == 1
    assert chunks[0].text.startswith("Part I") and chunks[0].section_path == ("Part I", "Chapter 1")


def test_duplicate_chunks_in_a_document_are_dropped(chunker: StructureChunker) -> None:
    para = _long_text(3)
    chunks = chunker.chunk(
        _doc(
            Element("A", "Title", 1, 0),
            Element(para, "NarrativeText", 1),
            Element("A", "Title", 2, 0),
            Element(para, "NarrativeText", 2),
        )
    )
    assert len({c.text for c in chunks}) == len(chunks)


def test_split_sentences_offsets() -> None:
    text = 'He said "stop." Then left! Next line\nanother line'
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ['He said "stop."', "Then left!", "Next line", "another line"]


def test_clean_text_unicode_hyphens_and_spaces() -> None:
    assert clean_text("inter-\nnational\u00a0\u00a0trade\u200b ﬁnance") == "international trade finance"
    assert clean_text("the 1985\u00e2\u0080\u009386 season") == "the 1985\u201386 season"  # mojibake repaired
    assert clean_text("Anglo-\nSaxon") == "Anglo-\nSaxon"  # a capitalised continuation is a real hyphen


def test_running_headers_and_page_numbers_are_dropped() -> None:
    bodies = [
        "Revenue grew in the north.",
        "Costs fell slightly.",
        "Hiring paused.",
        "Outlook is stable.",
        "Appendix follows.",
    ]
    elements = []
    for page, body in enumerate(bodies, 1):
        elements += [
            Element("ACME Corp — Confidential", "UncategorizedText", page),
            Element(body, "NarrativeText", page),
            Element(f"Page {page} of 5", "UncategorizedText", page),
        ]
    doc = ParsedDocument("d", "/d.pdf", "pdf", "h", tuple(elements))
    assert len(find_running_lines(doc.elements)) == 2
    cleaned = clean_document(doc)
    assert [e.text for e in cleaned.elements] == bodies
