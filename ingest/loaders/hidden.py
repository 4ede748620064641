"""HTML text a reader cannot see (display:none, visibility:hidden, zero font size or opacity, text the colour of its
background, the `hidden` attribute) is dropped before parsing: it is where prompt injections hide (issue 14)."""

from __future__ import annotations

import re

_HIDING = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|font-size\s*:\s*0*\.?0+(?:px|pt|em|rem|%)?\s*(?:;|!|$)|"
    r"opacity\s*:\s*0*\.?0+\s*(?:;|!|$)",
    re.I,
)
_DECLARATION = re.compile(r"(?:^|;)\s*(color|background-color|background)\s*:\s*([^;!]+)", re.I)
_CLASS_RULE = re.compile(r"((?:\s*\.[\w-]+\s*,?)+)\{([^}]*)\}")
_NAMED = {"white": "#ffffff", "black": "#000000"}


def _colour(value: str) -> str | None:
    v = value.strip().lower()
    v = v.replace(" ", "") if v.startswith("rgb") else (v.split() or [""])[0]
    v = _NAMED.get(v, v)
    if re.fullmatch(r"#[0-9a-f]{3}", v):
        return "#" + "".join(c * 2 for c in v[1:])
    m = re.fullmatch(r"rgba?\((\d+),(\d+),(\d+)(?:,[\d.]+)?\)", v)
    if m:
        return "#" + "".join(f"{int(x):02x}" for x in m.groups())
    return v if re.fullmatch(r"#[0-9a-f]{6}", v) else None


def drop_hidden_html(data: bytes, encoding: str | None) -> bytes:
    """`data` without the elements a browser would not show; `data` itself (the same object) when none is hidden.

    Inline styles and simple class rules of `<style>` blocks (".note { display: none }") are read; text whose
    colour equals the nearest declared background (white when none is) counts as hidden. Other CSS (ids,
    external sheets, positioning off-screen) is not evaluated.
    """
    if not re.search(rb"style|hidden", data, re.I):
        return data
    import lxml.html

    text = data.decode(encoding or "utf-8", errors="replace")
    # lxml refuses a str that still carries an XML encoding declaration (XHTML such as example-10k-1p.html).
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
    root = lxml.html.document_fromstring(text)
    hidden_classes = {
        name.strip().lstrip(".")
        for style in root.iter("style")
        for selectors, body in _CLASS_RULE.findall(style.text or "")
        if _HIDING.search(body)
        for name in selectors.split(",")
    }
    doomed = []
    for el in root.iter():
        if not isinstance(el.tag, str) or el.tag in ("html", "head", "body", "style"):
            continue
        style = el.get("style") or ""
        classes = set((el.get("class") or "").split())
        if el.get("hidden") is not None or _HIDING.search(style) or classes & hidden_classes:
            doomed.append(el)
            continue
        colours = {k.lower(): _colour(v) for k, v in _DECLARATION.findall(style)}
        if colours.get("color") is None:
            continue
        background = "#ffffff"
        for node in [el, *el.iterancestors()]:
            declared = {k.lower(): _colour(v) for k, v in _DECLARATION.findall(node.get("style") or "")}
            found = declared.get("background-color") or declared.get("background")
            if found is not None:
                background = found
                break
        if colours["color"] == background:
            doomed.append(el)
    if not doomed:
        return data
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()  # keeps the element's tail: the visible text that follows it
    html = lxml.html.tostring(root, encoding="unicode", method="html")
    return html.encode(encoding or "utf-8", errors="xmlcharrefreplace")
