"""Glossaries: a question's terms expanded into the words documents print, and bad glossary files refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import load_settings
from rag.errors import ConfigError
from rag.glossary import Glossary


@pytest.fixture(scope="module")
def finance() -> Glossary:
    return Glossary.load(["finance"])


def test_the_finance_glossary_names_the_statement_line_items(finance: Glossary) -> None:
    e = finance.expand("What is the FY2018 capital expenditure amount for 3M, from the cash flow statement?")
    assert [found for found, _ in e.matches] == ["capital expenditure", "cash flow statement"]
    assert "purchases of property, plant and equipment" in e.terms
    assert "consolidated statements of cash flows" in e.terms
    assert e.text.startswith(e.query + " (purchases of property")
    assert "'capital expenditure' -> purchases of property" in e.describe()


def test_case_plurals_hyphens_and_whole_words(finance: Glossary) -> None:
    assert finance.expand("Is 3M capital-intensive?").matches[0][0] == "capital-intensive"
    assert finance.expand("Capital Expenditures rose").matches[0][0] == "Capital Expenditures"
    assert finance.expand("ROA of Coca Cola").terms == ("net income", "total assets")
    assert finance.expand("R&D and SG&A costs").terms == (
        "selling, general and administrative expenses",
        "research and development",
    )
    # "roa" inside "road", "eps" inside "steps", "ppe" inside "stopped": no match.
    for text in ("the road ahead", "next steps", "we stopped", "How many days of paid leave do employees get?"):
        e = finance.expand(text)
        assert e.matches == () and e.text == text
        assert e.describe() == "glossary: no term of the query is in a glossary"


def test_a_meaning_two_entries_share_is_searched_once(finance: Glossary) -> None:
    e = finance.expand("capex and free cash flow")
    assert len(e.terms) == len(set(e.terms))
    assert e.to_dict()["searched"] == e.text


def test_a_company_glossary_adds_its_own_terms(tmp_path: Path) -> None:
    own = tmp_path / "acme.yaml"
    own.write_text(
        "entries:\n"
        "  - terms: PTO; time off\n"
        "    means: paid leave; annual leave; vacation days\n"
        "  - terms: [Project Falcon]\n"
        "    means: [the 2025 ERP migration]\n",
        encoding="utf-8",
    )
    g = Glossary.load(["finance", str(own)])
    assert g.expand("How much PTO do I get?").terms == ("paid leave", "annual leave", "vacation days")
    assert g.expand("status of project falcon").terms == ("the 2025 ERP migration",)
    assert g.expand("capex").matches  # the shipped one still applies


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entries: [", "cannot read this glossary"),
        ("terms: capex\n", "a list `entries:`"),
        ("entries:\n  - terms: capex\n", "entry 1: each entry has exactly `terms` and `means`"),
        ("entries:\n  - terms: capex\n    means: ''\n", "entry 1, means: expected phrases"),
        ("entries:\n  - terms: a\n    means: b\n  - terms: c\n    means: d\n    note: x\n", "entry 2"),
    ],
)
def test_a_bad_glossary_file_is_refused_naming_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Glossary.load([str(path)])
    assert str(path) in str(err.value) and message in str(err.value)


def test_an_unknown_glossary_name_says_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"'legal' is neither a shipped glossary \(finance\) nor a YAML file"):
        Glossary.load(["legal"])


def test_settings_default_to_finance_and_can_turn_it_off() -> None:
    assert load_settings(None).retrieval.glossaries == ["finance"]
    off = load_settings(None, ["retrieval.glossaries=[]"]).retrieval.glossaries
    assert off == [] and Glossary.load(off).expand("capex").text == "capex"
