"""The encoding to decode a plain-text file with (BOM, declared charset, UTF-8, then a guess)."""

from __future__ import annotations

import codecs
import re
from importlib.util import find_spec

from ingest.loaders.formats import HTML_EXTENSIONS

_DECLARED_CHARSET = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Single-byte Latin code pages a detector cannot tell apart on short text.
_LATIN_FAMILY = frozenset({"cp1250", "cp1252", "iso8859-1", "iso8859-2", "iso8859-15", "cp1254", "cp1257"})


def text_encoding(data: bytes, ext: str) -> str:
    """The encoding to decode a text file with: BOM, declared charset, UTF-8, then a guess.

    unstructured's own guess read fake-html-cp1252.html as windows-1250 ("trčs" for "très").
    Among the Latin code pages a detector cannot separate, prefer windows-1252: it is by far
    the most common legacy encoding, and WHATWG decodes "latin-1" pages as windows-1252 too.
    """
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if ext in HTML_EXTENSIONS or ext == ".xml":
        declared = _DECLARED_CHARSET.search(data[:4096])
        if declared is not None:
            name = declared.group(1).decode("ascii", errors="ignore")
            if _decodes(data, name):
                return codecs.lookup(name).name
    if _decodes(data, "utf-8"):
        return "utf-8"
    guess: str | None = None
    if find_spec("charset_normalizer") is not None:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:1_000_000]).best()
        guess = codecs.lookup(best.encoding).name if best is not None else None
    if (guess is None or guess in _LATIN_FAMILY) and _decodes(data, "cp1252"):
        return "cp1252"
    return guess or "latin-1"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True
