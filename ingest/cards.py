"""The document card: title, organisation, period and type of a document, built at ingest without a model.

Look-alike documents (the same report every quarter, one template per customer) differ
only in who issued them and when; the card says so, goes in front of every chunk's
embedded text and becomes filterable payload fields. Sources, most trusted first: what
the file carries (PDF info dictionary and XMP, DOCX/PPTX core and app properties,
e-mail headers, HTML <title>/meta), the file name, then the first page's salient lines.
"""

from __future__ import annotations

import calendar
import contextlib
import email
import email.policy
import logging
import re
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from ingest.documents import DocumentCard, ParsedDocument
from rag.facets import organisation_key

log = logging.getLogger(__name__)

FIRST_PAGE_LINES = 60
_TITLE_MAX_CHARS = 140
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m} | {
    m.lower(): i for i, m in enumerate(calendar.month_abbr) if m
}
_MONTH_RE = "|".join(calendar.month_name[1:])
_YEAR = r"(?:19[5-9]\d|20\d\d)"
_DATE = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}),?\s+({_YEAR})\b", re.IGNORECASE)
_ISO_DATE = re.compile(rf"\b({_YEAR})-(\d\d)-(\d\d)\b")
# "for the fiscal year ended June 30, 2023", "quarterly period ended July 29, 2023", "six months ended ..."
_PERIOD_END = re.compile(
    rf"\b(?:year|quarter|period|months|weeks)\s+(?:ended|ending)\s+(?:on\s+)?(({_MONTH_RE})\.?\s+\d{{1,2}},?\s+{_YEAR})",
    re.IGNORECASE,
)
_FISCAL_YEAR = re.compile(rf"\b(?:fiscal(?:\s+year)?|FY)\s*'?({_YEAR}|\d\d)\b", re.IGNORECASE)
_ORDINAL_QUARTER = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_QUARTER = re.compile(
    rf"\b(?:Q([1-4])|([1-4])Q|(first|second|third|fourth|1st|2nd|3rd|4th)[\s-]+quarter)\b(?:\s+(?:of\s+)?(?:fiscal\s+)?({_YEAR}))?",
    re.IGNORECASE,
)
_HEADING_WORDS = 12  # a first-page line this short reads as a title or heading, not a sentence
_FILE_PERIOD = re.compile(rf"(?<![0-9])({_YEAR})(?:[\s_-]*Q([1-4]))?(?![0-9])", re.IGNORECASE)
_FILE_QUARTER = re.compile(r"(?<![A-Za-z0-9])(?:Q([1-4])|([1-4])Q)(?![0-9])", re.IGNORECASE)
# "Form 10-K", "FORM 8-K", "Form 1040", "Form W-2": a form number is a document type in any organisation.
_FORM = re.compile(r"^\s*form\s+([0-9A-Z]{1,4}(?:-[0-9A-Z]{1,4})?)\s*$", re.IGNORECASE)
_LEGAL_SUFFIX = (
    r"Inc|Incorporated|Corp|Corporation|Company|Co|plc|PLC|Ltd|Limited|LLC|LLP|L\.P|LP|GmbH|AG|SA|S\.A|NV|N\.V|BV|B\.V"
    r"|SE|SpA|S\.p\.A|AB|ASA|Oyj|KK|Pty|Group|Holdings"
)
_ORG = re.compile(
    rf"(?<![\w-])((?:[A-Z][\w&'.-]*|\d+[A-Za-z][\w&'.-]*|&)(?:[ ,]+(?:[A-Z][\w&'.-]*|&|of|and|the)){{0,5}}),?\s+"
    rf"(?i:{_LEGAL_SUFFIX})\b\.?"
    r"(?:,?\s+(?i:Inc|Ltd|LLC)\b\.?)?"
)
# Document types named by their own words; the first pattern found on the first page wins.
_TYPE_PATTERNS = (
    ("earnings release", re.compile(r"\b(?:reports?|reported|announces?|announced)\b[^.\n]{0,80}\bresults\b", re.I)),
    ("annual report", re.compile(r"\bannual\s+report\b", re.I)),
    ("quarterly report", re.compile(r"\bquarterly\s+report\b", re.I)),
    ("proxy statement", re.compile(r"\bproxy\s+statement\b", re.I)),
    ("press release", re.compile(r"\b(?:press\s+release|for\s+immediate\s+release)\b", re.I)),
    ("minutes", re.compile(r"\bminutes\s+of\b", re.I)),
    ("invoice", re.compile(r"\binvoice\s+(?:no|number|#)", re.I)),
    ("contract", re.compile(r"\b(?:this\s+)?(?:agreement|contract)\s+(?:is\s+)?(?:made|entered)\b", re.I)),
    ("policy", re.compile(r"^\s*[\w ,&-]{0,60}\bpolicy\s*$", re.I | re.M)),
    ("memo", re.compile(r"^\s*(?:memo|memorandum)\b", re.I | re.M)),
)
_FILE_TYPES = (
    ("earnings release", re.compile(r"earnings|results", re.I)),
    ("annual report", re.compile(r"annual[\s_-]*report|(?<![a-z])(?:10[\s_-]?k|ar)(?![a-z])", re.I)),
    ("quarterly report", re.compile(r"quarterly|(?<![a-z])10[\s_-]?q(?![a-z])", re.I)),
    ("current report", re.compile(r"(?<![a-z0-9])8[\s_-]?k(?![a-z])", re.I)),
    ("contract", re.compile(r"contract|agreement", re.I)),
    ("policy", re.compile(r"policy", re.I)),
    ("minutes", re.compile(r"minutes", re.I)),
    ("invoice", re.compile(r"invoice", re.I)),
)
_FORM_TYPES = {"10-K": "annual report", "10-Q": "quarterly report", "8-K": "current report", "20-F": "annual report"}
_EXT_TYPES = {".eml": "email", ".msg": "email", ".pptx": "presentation", ".ppt": "presentation"}

# Words that name no particular document or issuer: a first-page line made only of these is
# cover-page boilerplate ("UNITED STATES", "CONFIDENTIAL", "TABLE OF CONTENTS", "FOR IMMEDIATE RELEASE").
_GENERIC_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "for",
        "to",
        "in",
        "on",
        "at",
        "by",
        "or",
        "with",
        "from",
        "as",
        "is",
        "are",
        "be",
        "this",
        "that",
        "these",
        "united",
        "states",
        "kingdom",
        "america",
        "american",
        "government",
        "national",
        "federal",
        "state",
        "securities",
        "exchange",
        "commission",
        "washington",
        "dc",
        "d",
        "c",
        "department",
        "office",
        "agency",
        "board",
        "ministry",
        "republic",
        "table",
        "contents",
        "index",
        "page",
        "pages",
        "confidential",
        "draft",
        "final",
        "version",
        "copy",
        "private",
        "internal",
        "only",
        "restricted",
        "strictly",
        "proprietary",
        "public",
        "release",
        "immediate",
        "press",
        "news",
        "notice",
        "for",
        "information",
        "purposes",
        "form",
        "report",
        "annual",
        "quarterly",
        "current",
        "interim",
        "transition",
        "pursuant",
        "section",
        "act",
        "rule",
        "mark",
        "one",
        "no",
        "number",
        "file",
        "commission",
        "registrant",
        "exact",
        "name",
        "specified",
        "charter",
        "as",
        "document",
        "documents",
        "appendix",
        "exhibit",
        "schedule",
        "attachment",
        "annex",
        "period",
        "fiscal",
        "year",
        "ended",
        "ending",
    ]
)
# Author / organisation values that are a tool's or template's, not an issuer.
_JUNK_AUTHORS = re.compile(
    r"^(?:anonymous|admin|administrator|user|owner|unknown|author|default|microsoft|windows user|none|n/?a|"
    r".*\bedgar\b.*|.*\bdonnelley\b.*|.*\bworkiva\b.*|.*\bconverter\b.*)$",
    re.IGNORECASE,
)
_FILE_WORDS = frozenset(
    [
        "report",
        "annual",
        "quarterly",
        "final",
        "draft",
        "copy",
        "scan",
        "scanned",
        "document",
        "doc",
        "file",
        "version",
        "v",
        "rev",
        "revised",
        "earnings",
        "results",
        "exhibit",
        "form",
        "dated",
        "contract",
        "agreement",
        "policy",
        "minutes",
        "invoice",
        "statement",
        "presentation",
        "deck",
        "slides",
        "memo",
        "letter",
        "notes",
        "summary",
        "q",
        "k",
        "fy",
        "new",
        "old",
        "signed",
        "handbook",
        "manual",
        "guide",
        "datasheet",
        "brochure",
        "book",
        "paper",
        "sample",
        "example",
        "fake",
        "test",
        "template",
        "p",
    ]
)


# -- file-level metadata --------------------------------------------------------------------
def read_file_metadata(path: Path) -> dict[str, str]:
    """What the file itself says about its title, author, organisation, subject and dates.

    Keys (all optional): title, author, organisation, subject, keywords, created, modified (ISO dates).
    A file whose metadata cannot be read gives {} and a logged warning naming the file.
    """
    ext = path.suffix.lower()
    try:
        if ext == ".pdf":
            return _pdf_metadata(path)
        if ext in (".docx", ".pptx", ".xlsx"):
            return _office_metadata(path)
        if ext in (".eml",):
            return _email_metadata(path)
        if ext in (".html", ".htm", ".xhtml"):
            return _html_metadata(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, ElementTree.ParseError) as e:
        log.warning("%s: file metadata not read (%s); the card uses the text and the file name", path, e)
    except Exception as e:  # a parser's own error class (pypdf's) must not fail ingest of the text
        log.warning("%s: file metadata not read (%s: %s)", path, type(e).__name__, e)
    return {}


def _pdf_date(value: Any) -> str | None:
    m = re.match(r"D?:?(\d{4})(\d\d)?(\d\d)?", str(value or ""))
    if not m:
        return None
    return "-".join(g for g in (m.group(1), m.group(2) or "01", m.group(3) or "01"))


def _pdf_metadata(path: Path) -> dict[str, str]:
    import pypdf

    reader = pypdf.PdfReader(str(path), strict=False)
    info: Any = reader.metadata or {}
    out: dict[str, str] = {}
    for key, name in (
        ("/Title", "title"),
        ("/Author", "author"),
        ("/Subject", "subject"),
        ("/Keywords", "keywords"),
        ("/Company", "organisation"),
    ):
        value = info.get(key)
        if value:
            out[name] = " ".join(str(value).split())
    for key, name in (("/CreationDate", "created"), ("/ModDate", "modified")):
        date = _pdf_date(info.get(key))
        if date:
            out[name] = date
    try:
        xmp = reader.xmp_metadata
    except Exception as e:  # malformed XMP is common; the info dictionary is still used
        log.warning("%s: XMP metadata unreadable (%s)", path, e)
        xmp = None
    if xmp is not None:
        title = (xmp.dc_title or {}).get("x-default") if isinstance(xmp.dc_title, dict) else None
        if title and "title" not in out:
            out["title"] = " ".join(str(title).split())
        creators = xmp.dc_creator or []
        if creators and "author" not in out:
            out["author"] = ", ".join(str(c) for c in creators)
    return out


_OFFICE_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cp": "http://schemas.openxmlformats.org/package/2006/metadata/core-properties",
    "dcterms": "http://purl.org/dc/terms/",
    "ep": "http://schemas.openxmlformats.org/officeDocument/2006/extended-properties",
}


def _office_metadata(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        if "docProps/core.xml" in names:
            core = ElementTree.fromstring(z.read("docProps/core.xml"))
            for tag, name in (
                ("dc:title", "title"),
                ("dc:creator", "author"),
                ("dc:subject", "subject"),
                ("cp:keywords", "keywords"),
                ("dcterms:created", "created"),
                ("dcterms:modified", "modified"),
            ):
                el = core.find(tag, _OFFICE_NS)
                if el is not None and el.text and el.text.strip():
                    value = " ".join(el.text.split())
                    out[name] = value[:10] if name in ("created", "modified") else value
        if "docProps/app.xml" in names:
            app = ElementTree.fromstring(z.read("docProps/app.xml"))
            el = app.find("ep:Company", _OFFICE_NS)
            if el is not None and el.text and el.text.strip():
                out["organisation"] = " ".join(el.text.split())
    return out


def _email_metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    out: dict[str, str] = {}
    if msg["subject"]:
        out["title"] = " ".join(str(msg["subject"]).split())
    sender = msg["from"]
    if sender:
        out["author"] = str(sender)
        domain = re.search(r"@([\w.-]+)", str(sender))
        if domain:
            out["sender_domain"] = domain.group(1).lower()
    if msg["date"]:
        # An unparseable Date header: the card simply has no date from it.
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            out["created"] = msg["date"].datetime.date().isoformat()
    return out


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_META = re.compile(r"<meta\s+[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _html_metadata(path: Path) -> dict[str, str]:
    import html

    text = path.read_bytes()[:200_000].decode("utf-8", errors="replace")
    out: dict[str, str] = {}
    m = _HTML_TITLE.search(text)
    if m and m.group(1).strip():
        out["title"] = " ".join(html.unescape(m.group(1)).split())
    wanted = {
        "author": "author",
        "dc.creator": "author",
        "dc.title": "title",
        "og:title": "title",
        "og:site_name": "organisation",
        "dc.publisher": "organisation",
        "publisher": "organisation",
        "dc.date": "created",
        "date": "created",
        "article:published_time": "created",
        "description": "subject",
    }
    for tag in _HTML_META.findall(text):
        attrs = {k.lower(): (v1 or v2) for k, v1, v2 in _ATTR.findall(tag)}
        key = (attrs.get("name") or attrs.get("property") or "").lower()
        if key in wanted and attrs.get("content") and wanted[key] not in out:
            value = " ".join(html.unescape(attrs["content"]).split())
            out[wanted[key]] = value[:10] if wanted[key] == "created" else value
    return out


# -- first-page lines ---------------------------------------------------------------------
def first_page_lines(doc: ParsedDocument, limit: int = FIRST_PAGE_LINES, min_words: int = 20) -> list[str]:
    """The first page's non-empty lines in reading order (the first `limit` lines where pages are unknown).

    A first page of fewer than `min_words` words (a cover sheet that says only "FORM 10-K", a logo page) is no
    cover: the lines go on into the next pages until there are that many words. Nike's FY2023 10-K names its issuer
    on page 2 only.
    """
    pages = sorted({el.page_number for el in doc.elements if el.page_number is not None})
    allowed = set(pages[:1])
    lines: list[str] = []
    for el in doc.elements:
        if pages and el.page_number is not None and el.page_number not in allowed:
            if el.page_number < max(allowed):
                continue
            if sum(len(line.split()) for line in lines) >= min_words:
                break
            allowed.add(el.page_number)
        for line in el.text.split("\n"):
            line = " ".join(line.split())
            if line:
                lines.append(line)
        if len(lines) >= limit:
            break
    return lines[:limit]


def line_signature(line: str) -> str:
    """A line compared across documents: lowercase letters only, digits masked."""
    return re.sub(r"[^a-z#]+", " ", re.sub(r"\d+", "#", line.lower())).strip()


def _words(line: str) -> list[str]:
    return re.findall(r"[a-z]+", line.lower())


def is_generic_line(line: str) -> bool:
    """Whether a line names nothing particular: only generic cover-page words, or no words at all."""
    words = _words(line)
    return not words or all(w in _GENERIC_WORDS or len(w) == 1 for w in words)


_CHECKBOX = re.compile(r"^[\s☐☑☒■□▪●•◦\uf0a8\uf0fe\uf06fxo]\s+(?=[A-Z])|^[☐☑☒■□\uf0a8\uf0fe]")
_ADDRESS = re.compile(
    r"^\d+\s+\w+.*\b(?:road|street|st|avenue|ave|boulevard|blvd|drive|dr|lane|way|place|square|plaza|parkway)\b"
    r"|\b\d{5}(?:-\d{4})?$|\b[A-Z]{1,2}\d{1,2}[A-Z]?\s*\d[A-Z]{2}$|\(\d{3}\)\s*\d{3}-\d{4}|\+\d[\d ]{7,}",
    re.IGNORECASE,
)


def _salient(line: str, boilerplate: frozenset[str]) -> bool:
    if len(line) < 4 or len(line) > _TITLE_MAX_CHARS:
        return False
    if line_signature(line) in boilerplate or is_generic_line(line):
        return False
    if line.startswith(("(", "•", "-", "*", "·")) or _CHECKBOX.match(line):
        return False  # captions "(Exact name of ...)", bullets, check boxes
    letters = sum(ch.isalpha() for ch in line)
    if letters < 0.6 * len(line.replace(" ", "")):
        return False  # numbers, ids, table rows
    if _ADDRESS.search(line) or "@" in line or "http" in line.lower() or "www." in line.lower():
        return False
    return not (_PERIOD_END.search(line) or _DATE.fullmatch(line.strip(" .")))


# -- fields -----------------------------------------------------------------------------------
def _meaningful_title(value: str | None, stem: str) -> bool:
    if not value:
        return False
    v = value.strip()
    words = _words(v)
    if len(words) < 2 or len(v) > 200:
        return False
    letters = sum(ch.isalpha() for ch in v)
    if letters < 0.5 * len(v.replace(" ", "")):
        return False  # "0000789570-23-000019"
    low = v.lower()
    if low.startswith(("microsoft word", "microsoft powerpoint", "untitled", "document", "presentation")):
        return False
    if re.search(r"\.(?:docx?|pptx?|xlsx?|pdf|indd|rtf)\b", low) or low == stem.lower():
        return False
    return not is_generic_line(v)


def _clean_org(name: str) -> str:
    name = " ".join(name.split()).strip(" ,.;:")
    if name.isupper() and len(name) > 4:
        keep = {"PLC", "LLC", "LLP", "AG", "SA", "NV", "BV", "SE", "AB", "ASA", "KK", "LP", "&", "USA", "US", "UK"}
        # Short all-consonant words are acronyms ("MGM"); other words get a capital and lowercase.
        name = " ".join(
            w if w.strip(",.") in keep or (len(w) <= 4 and not re.search(r"[AEIOU]", w)) else w.capitalize()
            for w in name.split()
        )
    return name


def _file_name_organisation(stem: str, text: str) -> str | None:
    """The file name's leading words ("JOHNSON_JOHNSON_2022_10K" -> "Johnson & Johnson") where the text names them."""
    # Leading words up to the first year or period ("3M_2018_10K" -> 3M; "AMCOR_2023Q2_10Q" -> AMCOR).
    tokens = []
    for token in (t for t in re.split(r"[_ .&-]+", stem) if t):
        if re.match(r"(?:19|20)\d\d", token) or not re.search(r"[A-Za-z]", token):
            break
        tokens.append(token)
    while tokens and tokens[-1].lower() in _FILE_WORDS:
        tokens.pop()
    if not tokens or all(t.lower() in _FILE_WORDS or t.lower() in _GENERIC_WORDS for t in tokens):
        return None
    letters = "".join(tokens)
    if len(letters) < 3 and not (len(letters) == 2 and re.search(r"\d", letters)):  # "3M", not "AB"
        return None
    # Letters in order, with spaces or punctuation allowed between any two: "BESTBUY" finds "Best Buy".
    gap = r"(?:[\s.,'&-]{0,4}(?:and\s+)?)"
    pattern = re.compile(r"\b" + gap.join(re.escape(ch) for ch in letters) + r"\b", re.IGNORECASE)
    found = Counter(" ".join(x.group(0).split()) for x in pattern.finditer(text))
    if not found:
        return None
    # Prefer the mixed-case spelling a sentence uses over an all-caps cover line.
    return max(found, key=lambda s: (not s.isupper(), found[s], len(s)))


def _legal_organisation(text: str, key: str | None) -> str | None:
    """The issuer named with a legal suffix ("Ulta Beauty, Inc."), matching the file-name name if one was found."""
    found: Counter[str] = Counter()
    for m in _ORG.finditer(text):
        name = " ".join(m.group(0).split()).strip(" ,.")
        if is_generic_line(m.group(1)) or len(name) > 80:
            continue
        found[name] += 1
    if key:
        matches = [n for n in found if organisation_key(n).replace(" ", "") == key.replace(" ", "")]
        return max(matches, key=lambda n: (not n.isupper(), found[n])) if matches else None
    return found.most_common(1)[0][0] if found else None


def _years_and_quarter(
    stem: str, lines: list[str], meta: dict[str, str], title: str | None
) -> tuple[list[int], int | None, str | None]:
    """Years the document is about, its quarter (when it names one) and the end of its period (ISO date)."""
    years: list[int] = []
    quarter: int | None = None
    for m in _FILE_PERIOD.finditer(stem):
        years.append(int(m.group(1)))
        if m.group(2):
            quarter = int(m.group(2))
    if quarter is None:
        q = _FILE_QUARTER.search(stem)
        if q:
            quarter = int(q.group(1) or q.group(2))
    text = "\n".join(([title] if title else []) + lines[:40])
    period_end = None
    m_end = _PERIOD_END.search(text) or _PERIOD_END.search(meta.get("subject", ""))
    if m_end:
        period_end = _iso(m_end.group(1))
    else:
        iso = re.search(rf"period ending ({_YEAR}-\d\d-\d\d)", meta.get("subject", ""))
        period_end = iso.group(1) if iso else None
    if period_end:
        years.append(int(period_end[:4]))
    fy = _FISCAL_YEAR.search(text)
    if fy:
        years.append(_full_year(fy.group(1)))
    # A quarter counts only where a title or a heading-like line names it ("Second Quarter 2023 Results"): an annual
    # report's cover says "...as of the last business day of the registrant's most recently completed second quarter".
    headings = ([title] if title else []) + [ln for ln in lines[:40] if len(ln.split()) <= _HEADING_WORDS]
    named = next((hit for ln in headings if (hit := _QUARTER.search(ln))), None)
    if named:
        if quarter is None:
            quarter = int(named.group(1) or named.group(2) or _ORDINAL_QUARTER[named.group(3).lower()])
        if named.group(4):
            years.append(int(named.group(4)))
    if not years and title:
        years += [int(y) for y in re.findall(rf"(?<!\d){_YEAR}(?!\d)", title)]
    if not years:
        date = meta.get("created") or meta.get("modified")
        if date and re.match(_YEAR, date):
            years.append(int(date[:4]))
    return sorted(dict.fromkeys(years))[:3], quarter, period_end


def _full_year(value: str) -> int:
    return int(value) if len(value) == 4 else 2000 + int(value)


def _iso(text: str) -> str | None:
    m = _DATE.search(text)
    if not m:
        return None
    month = _MONTHS.get(m.group(1).lower())
    return f"{m.group(3)}-{month:02d}-{int(m.group(2)):02d}" if month else None


def _doc_type(lines: list[str], stem: str, ext: str, meta: dict[str, str]) -> tuple[str | None, str | None]:
    """(type, form): a form number on the first page ("Form 10-K") wins, then the type's words, then the file name."""
    for line in lines[:20]:
        m = _FORM.match(line)
        if m:
            form = m.group(1).upper()
            return _FORM_TYPES.get(form, f"form {form}"), f"Form {form}"
    kw = re.search(r"(?:^|;\s*)(\d{1,2}-[A-Z])\s*$", meta.get("keywords", ""))
    if kw:
        return _FORM_TYPES.get(kw.group(1), f"form {kw.group(1)}"), f"Form {kw.group(1)}"
    if ext in _EXT_TYPES:
        return _EXT_TYPES[ext], None
    head = "\n".join(lines[:25])
    for name, pattern in _TYPE_PATTERNS:
        if pattern.search(head):
            return name, None
    for name, pattern in _FILE_TYPES:
        if pattern.search(stem):
            return name, None
    return None, None


_PERIOD_PHRASE = re.compile(
    rf"(?:\b[\w-]+\s+){{0,2}}(?:year|quarter|period|months|weeks)\s+(?:ended|ending)\s+(?:on\s+)?(?:{_MONTH_RE})\.?\s+\d{{1,2}},?\s+{_YEAR}",
    re.IGNORECASE,
)


def _form_title(form: str, lines: list[str]) -> str:
    """A form and its period: "Form 10-Q for the quarterly period ended July 29, 2023", "Form 8-K of July 1, 2022"."""
    for line in lines[:30]:
        m = _PERIOD_PHRASE.search(line)
        if m:
            phrase = m.group(0)
            phrase = re.sub(r"^(?:for\s+)?(?:the\s+)?", "", phrase, flags=re.IGNORECASE)
            return f"{form} for the {phrase[0].lower()}{phrase[1:]}"
    for line in lines[:20]:
        m = _DATE.search(line)
        if m:
            return f"{form} of {m.group(0)}"
    return form


def _period_label(years: list[int], quarter: int | None, period_end: str | None) -> str | None:
    """ "Q2 2024" or "2023": short, for the front of every chunk (the exact end date is the `doc_date` field)."""
    if not years and not period_end:
        return None
    year = max(years) if years else int(str(period_end)[:4])
    return f"Q{quarter} {year}" if quarter else str(year)


def build_card(
    doc: ParsedDocument, file_metadata: dict[str, str] | None = None, boilerplate: frozenset[str] = frozenset()
) -> DocumentCard:
    """The card of one cleaned document. `boilerplate` holds line signatures the collection repeats on many cover pages.

    `file_metadata` defaults to what `read_file_metadata` finds in the source file (records of a
    JSONL corpus use their own `metadata` fields instead).
    """
    source = Path(doc.source)
    stem = source.stem if doc.record_id is None else ""
    ext = source.suffix.lower()
    if file_metadata is None:
        file_metadata = read_file_metadata(source) if doc.record_id is None and source.is_file() else {}
    meta = dict(file_metadata)
    for key in ("title", "author", "organisation", "company", "publisher", "date", "year", "quarter", "doc_type"):
        value = doc.metadata.get(key)
        if isinstance(value, (str, int)) and str(value).strip():
            meta.setdefault("organisation" if key in ("company", "publisher") else key, str(value).strip())
    origin: dict[str, str] = {}
    lines = [] if doc.record_id is not None else first_page_lines(doc)
    head_text = "\n".join(lines)

    # Organisation: the file name's leading words found in the text, with its legal form when the text gives one;
    # else the file's own organisation field; else the most frequent legally-suffixed name on the first page.
    organisation: str | None = None
    named = _file_name_organisation(stem, head_text) if stem else None
    if named:
        organisation = _legal_organisation(head_text, organisation_key(named)) or named
        origin["organisation"] = "file name + first page"
    elif meta.get("organisation") and not _JUNK_AUTHORS.match(meta["organisation"]):
        organisation, origin["organisation"] = meta["organisation"], "file metadata"
    elif lines:
        found = _legal_organisation(head_text, None)
        if found:
            organisation, origin["organisation"] = found, "first page"
    organisation = _clean_org(organisation) if organisation else None

    author = meta.get("author")
    if author and _JUNK_AUTHORS.match(author):
        author = None

    doc_type, form = _doc_type(lines, stem, ext, meta)
    if meta.get("doc_type"):
        doc_type = meta["doc_type"]

    # Title: the file's title when it says something, else the first salient first-page line that is more than the
    # issuer's name, else "<form> <period line>" for a form, else the loader's title, else the file name.
    salient = [ln for ln in lines[:25] if _salient(ln, boilerplate)]
    org_key = organisation_key(organisation) if organisation else None
    salient = [ln for ln in salient if not (org_key and organisation_key(ln) == org_key) and not _FORM.match(ln)]
    keyworded = next((ln for ln in salient[:6] if _TYPE_PATTERNS[0][1].search(ln) or "report" in ln.lower()), None)
    title: str | None = None
    if doc.record_id is not None and doc.title:
        title, origin["title"] = doc.title, "record"
    elif form:
        title, origin["title"] = _form_title(form, lines), "form"
    elif keyworded:
        title, origin["title"] = keyworded, "first page"
    elif _meaningful_title(meta.get("title"), stem):
        title, origin["title"] = meta["title"], "file metadata"
    elif salient:
        title, origin["title"] = salient[0], "first page"
    elif doc.title and _salient(doc.title, boilerplate):
        title, origin["title"] = doc.title, "loader"
    elif stem:
        title, origin["title"] = " ".join(re.split(r"[_]+", stem)), "file name"

    if doc.record_id is None:
        years, quarter, period_end = _years_and_quarter(stem, lines, meta, title)
    else:  # a record's title and text are content: only its metadata says when it is from
        years, quarter, period_end = [], None, None
    if meta.get("year") and str(meta["year"]).isdigit():
        years = sorted({*years, int(meta["year"])})
    if meta.get("quarter"):
        qm = re.search(r"[1-4]", str(meta["quarter"]))
        quarter = int(qm.group(0)) if qm else quarter
    first_date = next((_iso(ln) for ln in lines[:20] if _DATE.search(ln)), None)
    date = period_end or meta.get("date") or first_date or meta.get("created")
    return DocumentCard(
        title=title,
        organisation=organisation,
        author=author,
        doc_type=doc_type,
        form=form,
        years=tuple(years),
        quarter=quarter,
        period=_period_label(years, quarter, period_end),
        date=date,
        origin=origin,
        first_lines=tuple(line_signature(ln)[:120] for ln in lines[:15] if line_signature(ln)),
    )


def attach_card(doc: ParsedDocument, boilerplate: frozenset[str] = frozenset()) -> ParsedDocument:
    """A copy of `doc` with its card, the card's title as the document title and its fields in the metadata."""
    card = build_card(doc, boilerplate=boilerplate)
    metadata = {**doc.metadata, **{k: v for k, v in card.payload().items() if k not in doc.metadata}}
    return replace(doc, card=card, title=card.title or doc.title, metadata=metadata)


def collection_boilerplate(first_lines: dict[str, int], documents: int, min_share: float = 0.3) -> frozenset[str]:
    """First-page line signatures found on at least `min_share` of a collection's documents (and on 3 or more)."""
    if documents < 3:
        return frozenset()
    return frozenset(sig for sig, n in first_lines.items() if n >= max(3, min_share * documents))


# Collection metadata key: how many documents' first pages were counted, and how often each line signature appeared.
FIRST_LINES_KEY = "card_first_lines"
_FIRST_LINES_KEPT = 5000


def boilerplate_of(metadata: dict[str, Any]) -> frozenset[str]:
    """The cover-page boilerplate a collection has learned (see `record_first_lines`)."""
    stats = metadata.get(FIRST_LINES_KEY) or {}
    return collection_boilerplate(dict(stats.get("lines", {})), int(stats.get("documents", 0)))


def record_first_lines(store: Any, collection: str, cards: list[DocumentCard | None]) -> None:
    """Count the first-page lines of newly ingested documents into the collection's metadata.

    A line found on many documents' first pages ("UNITED STATES", a template's header) is then
    skipped when later documents' titles are chosen; the documents of the run that taught it keep
    theirs until they are re-indexed.
    """
    counted = [c for c in cards if c is not None and c.first_lines]
    if not counted:
        return
    metadata = dict(store.get_metadata(collection))
    stats = metadata.get(FIRST_LINES_KEY) or {}
    lines: Counter[str] = Counter(dict(stats.get("lines", {})))
    for card in counted:
        lines.update(set(card.first_lines))
    metadata[FIRST_LINES_KEY] = {
        "documents": int(stats.get("documents", 0)) + len(counted),
        "lines": dict(lines.most_common(_FIRST_LINES_KEPT)),
    }
    store.set_metadata(collection, metadata)
