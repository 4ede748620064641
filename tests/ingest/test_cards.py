"""Document cards from real files: a title that is not cover-page boilerplate, issuer, period, type; bad metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.cards import attach_card, build_card, collection_boilerplate, is_generic_line, read_file_metadata
from ingest.chunking import StructureChunker, build_document_text
from ingest.cleaning import clean_document
from ingest.documents import Element, ParsedDocument
from rag.config import ChunkingSettings
from tests.conftest import EXAMPLE_DOCS, SHARED_DATA, require

FINANCEBENCH = SHARED_DATA / "financebench" / "pdfs"


def _card_of(path: Path) -> ParsedDocument:
    from ingest.loaders import load_file

    return attach_card(clean_document(load_file(require(path))[0]))


def test_sec_cover_page_gives_issuer_form_and_date_not_united_states() -> None:
    # An 8-K's first line is "UNITED STATES", the loader's title; the card must see past it.
    doc = _card_of(FINANCEBENCH / "PEPSICO_2023_8K_dated-2023-05-05.pdf")
    card = doc.card
    assert card is not None
    assert card.title is not None and "united states" not in card.title.lower()
    assert card.title == "Form 8-K of May 3, 2023"
    assert card.organisation == "PepsiCo, Inc"
    assert card.form == "Form 8-K" and card.years == (2023,)
    # The card's fields reach the document's metadata, hence the chunk payload, and its title the document title.
    assert doc.metadata["organisation"] == "PepsiCo, Inc" and doc.metadata["year"] == [2023]
    assert doc.title == card.title


def test_press_release_title_quarter_and_fiscal_year_from_its_own_words() -> None:
    card = _card_of(FINANCEBENCH / "ULTABEAUTY_2023Q4_EARNINGS.pdf").card
    assert card is not None
    assert card.title == "Ulta Beauty Announces Fourth Quarter Fiscal 2022 Results"
    assert card.organisation == "Ulta Beauty, Inc"
    assert card.doc_type == "earnings release"
    # File name says 2023 (the fiscal year ends in January 2023), the release says fiscal 2022: both are kept.
    assert card.quarter == 4 and set(card.years) == {2022, 2023}
    assert card.short_form() == "Ulta Beauty Announces Fourth Quarter Fiscal 2022 Results · Ulta Beauty, Inc · Q4 2023"


def test_an_annual_report_has_no_quarter_and_a_name_may_start_with_a_digit() -> None:
    # 3M's 10-K cover: "...the last business day of the registrant's most recently completed second quarter" is a
    # sentence, not the period (it made this card "Q2 2018"); the file name "3M_2018_10K" names the issuer.
    card = _card_of(FINANCEBENCH / "3M_2018_10K.pdf").card
    assert card is not None
    assert card.organisation == "3M"
    assert card.quarter is None and card.years == (2018,) and card.period == "2018"
    assert card.title == "Form 10-K for the fiscal year ended December 31, 2018"


def test_a_cover_sheet_of_two_words_is_read_on_into_the_next_page() -> None:
    # Nike's FY2023 10-K: page 1 says only "FORM 10-K"; the issuer and the fiscal year are on page 2. Its card had
    # no organisation, so "Nike ... FY2023" questions were sent to Nike's other 10-Ks.
    card = _card_of(FINANCEBENCH / "NIKE_2023_10K.pdf").card
    assert card is not None
    assert card.organisation == "NIKE, Inc" and card.form == "Form 10-K"
    assert card.years == (2023,) and card.title == "Form 10-K for the fISCAL YEAR ENDED MAY 31, 2023"


def test_office_and_email_metadata_are_read() -> None:
    docx = read_file_metadata(require(EXAMPLE_DOCS / "contains-pictures.docx"))
    assert docx["organisation"] == "Cisco Systems, Inc." and docx["author"] == "Steve Canny"
    assert docx["created"] == "2024-05-20"
    eml = _card_of(EXAMPLE_DOCS / "eml" / "fake-email-attachment.eml").card
    assert eml is not None
    assert eml.title == "Fake email with attachment" and eml.doc_type == "email"
    assert eml.author is not None and "mallori@unstructured.io" in eml.author and eml.date == "2022-12-23"


def _doc(name: str, *lines: str, metadata: dict[str, Any] | None = None) -> ParsedDocument:
    elements = tuple(Element(line, "NarrativeText", 1) for line in lines)
    return ParsedDocument(f"/nowhere/{name}", f"/nowhere/{name}", "txt", name, elements, metadata=metadata or {})


def test_a_document_without_metadata_still_gets_a_card() -> None:
    # No file on disk, no metadata: the card comes from the first page and the file name.
    card = build_card(_doc("minutes_2021-03.txt", "CONFIDENTIAL", "Minutes of the board meeting", "Present: A, B"))
    assert card.title == "Minutes of the board meeting"
    assert card.doc_type == "minutes" and card.years == (2021,)
    assert card.organisation is None and card.author is None
    empty = build_card(_doc("x.txt"))
    assert empty.title == "x" and empty.short_form() == "x"


def test_a_title_repeated_on_every_cover_page_is_skipped() -> None:
    # A template's first line and its author on every file: learned as boilerplate, not taken as title or author.
    docs = [
        _doc(f"offer-{name}.txt", "ACME TEMPLATE v3", f"Service agreement with {name}", metadata={"author": "admin"})
        for name in ("Globex", "Initech", "Umbrella", "Hooli")
    ]
    counts: dict[str, int] = {}
    for d in docs:
        for sig in build_card(d, {}).first_lines:
            counts[sig] = counts.get(sig, 0) + 1
    boilerplate = collection_boilerplate(counts, len(docs))
    assert "acme template v#" in boilerplate
    card = build_card(docs[1], {"author": "Administrator"}, boilerplate=boilerplate)
    assert card.title == "Service agreement with Initech"
    assert card.author is None
    # Without the collection's view the template line would have been the title.
    assert build_card(docs[1], {}).title == "ACME TEMPLATE v3"
    assert collection_boilerplate(counts, 2) == frozenset()  # too few documents to tell


def test_generic_lines() -> None:
    assert is_generic_line("UNITED STATES")
    assert is_generic_line("SECURITIES AND EXCHANGE COMMISSION")
    assert is_generic_line("FOR IMMEDIATE RELEASE")
    assert not is_generic_line("Amcor reports fiscal 2023 results")


@pytest.fixture(scope="module")
def chunker(embedder: Any) -> StructureChunker:
    return StructureChunker(
        embedder.tokenizer, ChunkingSettings(chunk_tokens=128, overlap_tokens=16), embedder.max_tokens
    )


def test_card_context_is_embedded_but_not_stored(chunker: StructureChunker, embedder: Any) -> None:
    doc = _card_of(FINANCEBENCH / "AMCOR_2022_8K_dated-2022-07-01.pdf")
    assert doc.card is not None
    line = doc.card.short_form()
    assert line.startswith("Form 8-K of July 1, 2022") and "Amcor PLC" in line
    chunks = chunker.chunk(doc)
    text, _ = build_document_text(doc.elements)
    assert chunks
    for c in chunks:
        assert c.embed_text.startswith(line + "\n")  # dense and BM25 both see who and when
        assert line not in c.text  # the stored, cited text is the document's own
        if c.char_end - c.char_start == len(c.text):
            assert c.text == text[c.char_start : c.char_end]
        assert c.token_count == embedder.count_tokens(c.embed_text) <= chunker.limit


def test_card_context_off_and_its_budget(embedder: Any) -> None:
    doc = _card_of(FINANCEBENCH / "AMCOR_2022_8K_dated-2022-07-01.pdf")
    off = StructureChunker(embedder.tokenizer, ChunkingSettings(chunk_tokens=128, card_tokens=0), embedder.max_tokens)
    assert not any("Amcor PLC" in c.embed_text.split("\n")[0] for c in off.chunk(doc))
    tight = StructureChunker(embedder.tokenizer, ChunkingSettings(chunk_tokens=128, card_tokens=8), embedder.max_tokens)
    for c in tight.chunk(doc):
        first = c.embed_text.split("\n")[0]
        # The title is cut first: organisation and period are what tell look-alikes apart.
        assert embedder.count_tokens(first) <= 8 and first.endswith("Amcor PLC · 2022")


def test_a_record_title_already_in_the_section_path_adds_nothing(chunker: StructureChunker) -> None:
    # JSONL records (BEIR) carry their title as a heading: the card must not change their embedded text.
    rec = ParsedDocument(
        "c.jsonl#1",
        "/x/c.jsonl",
        "jsonl",
        "h",
        (Element("A title", "Title", None, 0), Element("Some text about a finding in 2010.", "NarrativeText")),
        title="A title",
        record_id="1",
    )
    carded = attach_card(rec)
    assert carded.card is not None and carded.card.years == ()
    assert [c.embed_text for c in chunker.chunk(carded)] == [c.embed_text for c in chunker.chunk(rec)]


def test_ingest_learns_a_collections_cover_page_boilerplate(tmp_path: Path, make_settings: Any, embedder: Any) -> None:
    # Every offer starts with the template's header line. After one run has seen it on 3 of 3 first pages,
    # the next file's title skips it.
    from ingest.cards import FIRST_LINES_KEY
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    folder = tmp_path / "offers"
    folder.mkdir()
    for name in ("Globex", "Initech", "Umbrella", "Hooli"):
        (folder / f"offer-{name}.txt").write_text(
            f"ACME TEMPLATE v3\n\nService agreement with {name}\n\nThe parties agree on the delivery of {name} "
            "widgets at the prices in the annex, payable within thirty days.\n",
            encoding="utf-8",
        )
    settings = make_settings()
    first = sorted(folder.glob("*.txt"))[:3]
    with build_store(settings) as store:
        ingest_paths(first, settings, store, embedder, collection="offers")
        assert store.get_metadata("offers")[FIRST_LINES_KEY]["documents"] == 3
        ingest_paths([folder], settings, store, embedder, collection="offers")
        titles = {
            Path(str(p["source"])).stem: p["title"] for _, p in store.scroll("offers", fields=["source", "title"])
        }
    assert {titles[f"offer-{n}"] for n in ("Globex", "Hooli", "Initech")} == {"ACME TEMPLATE v3"}
    assert titles["offer-Umbrella"] == "Service agreement with Umbrella"


def test_a_collection_from_before_cards_needs_card_tokens_0_or_a_reindex() -> None:
    from rag.collections import check_chunking
    from rag.errors import ConfigError

    old = {"chunking": {"chunk_tokens": 200, "overlap_tokens": 32, "min_chunk_tokens": 32, "heading_tokens": 32}}
    with pytest.raises(ConfigError, match=r"chunking\.card_tokens"):
        check_chunking("old", old, ChunkingSettings())
    check_chunking("old", old, ChunkingSettings(card_tokens=0))  # how it was built: accepted
