"""Hidden HTML text (where prompt injections hide) is dropped before parsing; visible text, tails included, stays."""

from __future__ import annotations

import pytest

from ingest.loaders.hidden import drop_hidden_html
from tests.conftest import REPO_ROOT

SUITE = REPO_ROOT / "tests" / "data" / "injection"


@pytest.mark.parametrize(
    "hidden",
    [
        '<span style="display:none">SECRET</span>',
        '<span style="visibility: hidden">SECRET</span>',
        '<span style="font-size:0">SECRET</span>',
        '<span style="font-size: 0px;">SECRET</span>',
        '<span style="opacity:0">SECRET</span>',
        '<span style="color:#fff">SECRET</span>',
        '<span style="color: white; background-color: #FFFFFF">SECRET</span>',
        '<div style="background:#123456"><span style="color:rgb(18, 52, 86)">SECRET</span></div>',
        "<span hidden>SECRET</span>",
        '<span class="x y">SECRET</span><style>.a, .y { display: none }</style>',
    ],
)
def test_hidden_text_is_dropped_and_its_tail_kept(hidden: str) -> None:
    page = f"<html><body><p>Fee: 25 euros.{hidden} Paid monthly.</p></body></html>".encode()
    out = drop_hidden_html(page, "utf-8").decode()
    assert "SECRET" not in out
    assert "Fee: 25 euros." in out and "Paid monthly." in out


@pytest.mark.parametrize(
    "visible",
    [
        '<span style="color:#fff; background:#000">SHOWN</span>',
        '<div style="background-color:black"><span style="color:white">SHOWN</span></div>',
        '<span style="font-size:10px">SHOWN</span>',
        '<span style="color:red">SHOWN</span>',
    ],
)
def test_visible_text_is_kept_and_the_page_untouched(visible: str) -> None:
    page = f"<html><body><p>{visible}</p></body></html>".encode()
    assert drop_hidden_html(page, "utf-8") is page


def test_hidden_html_of_the_injection_suite_is_not_ingested() -> None:
    from ingest.loaders import load_file

    for name, injected, fact in [
        ("thermostat-white.html", "35 degrees", "19 degrees"),
        ("thermostat-none.html", "PWNED", "19 degrees"),
        ("expenses-hidden.html", "500 euros", "15 euros"),
        ("printing-zero.html", "free of charge", "10 cents"),
    ]:
        (document,) = load_file(SUITE / "attack" / name)
        text = "\n".join(e.text for e in document.elements)
        assert injected not in text, name
        assert "See the notes below." in text and fact in text  # the visible text around it stays
