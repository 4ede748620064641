"""Queries that name a company, year or form: the inferred document constraint on a real two-filing collection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.facets import collect_facets, merge_spellings, organisation_key
from rag.retrieval import QdrantHybridRetriever
from rag.store.base import Condition, Filter
from tests.conftest import SHARED_DATA, require

PDFS = SHARED_DATA / "financebench" / "pdfs"
# Two 8-Ks: the same form, the same cover page, two issuers and two years.
PEPSI = "PEPSICO_2023_8K_dated-2023-05-05.pdf"
AMCOR = "AMCOR_2022_8K_dated-2022-07-01.pdf"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """Settings of a data folder holding the collection "filings" (the store closed again: the CLI opens it too)."""
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store

    settings = load_settings("test", [f"data_dir={tmp_path_factory.mktemp('facets')}"])
    paths = [require(PDFS / PEPSI), require(PDFS / AMCOR)]
    with build_store(settings) as store:
        report = ingest_paths(paths, settings, store, embedder, collection="filings")
    assert report.files_failed == 0
    return settings


@pytest.fixture
def collection(built: Any, embedder: Any) -> Iterator[tuple[Any, Any]]:
    from rag.collections import open_collection
    from rag.factory import build_store

    with build_store(built) as store:
        yield built, open_collection(store, "filings", built, embedder)


def _retriever(collection: tuple[Any, Any], embedder: Any, mode: str = "prefer") -> QdrantHybridRetriever:
    settings, handle = collection
    return QdrantHybridRetriever(handle, embedder, settings.retrieval.model_copy(update={"infer_filters": mode}))


def _stems(result: Any) -> list[str]:
    return [Path(str(c.payload["source"])).name for c in result.chunks]


def test_cards_are_payload_fields_and_the_prefix_is_not_stored(collection: tuple[Any, Any]) -> None:
    _, handle = collection
    facets = collect_facets(handle.store, handle.name)
    assert facets.documents == 2
    assert set(facets.organisations) == {"pepsico", "amcor"}
    assert facets.years == {2022, 2023} and facets.forms == {"Form 8-K"}
    for field in ("organisation", "year", "form", "doc_type"):
        assert field in handle.payload_fields
    for _, payload in handle.store.scroll(handle.name, fields=["text", "organisation", "title"]):
        assert payload["organisation"] in ("PepsiCo, Inc", "Amcor PLC")
        assert not payload["text"].startswith(payload["title"])  # the card line was embedded, not stored


def test_a_query_naming_company_and_year_is_constrained_to_that_filing(
    collection: tuple[Any, Any], embedder: Any
) -> None:
    retriever = _retriever(collection, embedder)
    result = retriever.retrieve("At the Pepsico AGM held on May 3, 2023, what was the outcome of the vote?", top_k=5)
    constraint = retriever.last_constraint
    assert constraint is not None and constraint.filter is not None
    assert constraint.filter.conditions[:2] == (
        Condition("organisation", any_of=("PepsiCo, Inc",)),
        Condition("year", any_of=(2023,)),
    )
    assert "'pepsico' names organisation PepsiCo, Inc" in constraint.describe()
    assert set(_stems(result)) == {PEPSI}

    result = retriever.retrieve("What was the key agenda of the AMCOR's 8k filing dated 1st July 2022?", top_k=5)
    conds = retriever.last_constraint.filter.conditions  # type: ignore[union-attr]
    assert {c.field for c in conds} == {"organisation", "year", "form"}
    assert set(_stems(result)) == {AMCOR}


def test_prefer_fills_up_with_other_documents_and_filter_does_not(collection: tuple[Any, Any], embedder: Any) -> None:
    _, handle = collection
    total = handle.store.count(handle.name)
    amcor = handle.store.count(handle.name, Filter((Condition("organisation", value="Amcor PLC"),)))
    prefer = _retriever(collection, embedder, "prefer").retrieve("Amcor board changes", top_k=total)
    stems = _stems(prefer)
    assert len(stems) == total and stems[:amcor] == [AMCOR] * amcor  # the named issuer's chunks first
    strict = _retriever(collection, embedder, "filter").retrieve("Amcor board changes", top_k=total)
    assert _stems(strict) == [AMCOR] * amcor
    off = _retriever(collection, embedder, "off")
    off.retrieve("Amcor board changes", top_k=3)
    assert off.last_constraint is None


def test_names_no_document_has_give_no_filter_and_say_so(collection: tuple[Any, Any], embedder: Any) -> None:
    retriever = _retriever(collection, embedder)
    retriever.retrieve("What were Apple's research and development costs in 2019?", top_k=3)
    constraint = retriever.last_constraint
    assert constraint is not None and constraint.filter is None
    text = constraint.describe()
    assert "no document constraint inferred" in text
    assert "'Apple' is no organisation" in text and "year 2019 named but no document is about it" in text

    # Amcor exists, 2023 exists, but no Amcor filing is from 2023: the year is dropped, and said so.
    retriever.retrieve("Amcor shareholder vote in 2023", top_k=3)
    constraint = retriever.last_constraint
    assert constraint is not None and constraint.filter is not None
    assert [c.field for c in constraint.filter.conditions] == ["organisation"]
    assert "no document has it together with the rest" in constraint.describe()


def test_an_explicit_filter_wins(collection: tuple[Any, Any], embedder: Any) -> None:
    retriever = _retriever(collection, embedder)
    explicit = Filter((Condition("organisation", value="PepsiCo, Inc"),))
    result = retriever.retrieve("Amcor 2022 8-K", top_k=3, filters=explicit)
    assert set(_stems(result)) == {PEPSI}
    assert retriever.last_constraint is not None and retriever.last_constraint.filter is None
    assert "explicit filter" in retriever.last_constraint.describe()


def test_rag_query_prints_the_constraint(built: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import main

    common = ["--config", "test", "--set", f"data_dir={built.data_dir}", "--collection", "filings"]
    assert main(["query", "Amcor 8-K", *common]) == 0
    out = capsys.readouterr().out
    assert "inferred document constraint: organisation=Amcor PLC, form=Form 8-K" in out
    assert main(["query", "Amcor 8-K", *common, "--set", "retrieval.infer_filters=off"]) == 0
    assert "constraint" not in capsys.readouterr().out


def test_organisation_keys() -> None:
    assert organisation_key("Best Buy Co., Inc.") == "best buy"
    assert organisation_key("Johnson & Johnson") == "johnson johnson"
    assert organisation_key("AMCOR PLC") == "amcor"


class _EveryCombination:
    """A store in which every combination of card values has documents (count only)."""

    def count(self, name: str, flt: Filter | None = None) -> int:
        return 1


def test_ampersand_names_and_question_words() -> None:
    from rag.facets import Facets, infer_constraint

    facets = Facets(
        {"johnson johnson": ("Johnson & Johnson",), "best buy": ("Best Buy Co., Inc",)},
        frozenset({2022, 2023}),
        frozenset({2, 4}),
        frozenset(),
        frozenset(),
        5,
    )
    store: Any = _EveryCombination()
    jnj = infer_constraint("Did JnJ's net earnings increase in Q2 of FY2023?", facets, store, "c")
    assert jnj.filter is not None
    assert [c.field for c in jnj.filter.conditions] == ["organisation", "year", "quarter"]
    assert "'jnj' names organisation Johnson & Johnson" in jnj.describe()
    # "Best" alone is too common a word to stand for Best Buy; "Did" is no part of a name.
    best = infer_constraint("Did Apple's best products sell in 2021?", facets, store, "c")
    assert best.filter is None
    assert "'Apple' is no organisation" in best.describe() and "year 2021 named" in best.describe()


def test_a_name_split_by_letter_spacing_is_the_same_organisation() -> None:
    # MGM's 2018 10-K cover reads "MGM R ESORTS" in the PDF's text; its 2020 and 2022 10-Ks read "MGM Resorts".
    orgs = {"mgm resorts": {"MGM Resorts"}, "mgm r esorts": {"MGM R Esorts"}, "mgm growth": {"MGM Growth"}}
    merged = merge_spellings(orgs, Counter({"mgm resorts": 2, "mgm r esorts": 1, "mgm growth": 1}))
    assert merged == {"mgm resorts": ("MGM R Esorts", "MGM Resorts"), "mgm growth": ("MGM Growth",)}
