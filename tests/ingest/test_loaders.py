"""Loaders on real example documents (every file parses or fails with a reason) and on small generated files."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ingest.documents import TABLE, TITLE, ParsedDocument
from ingest.loaders import SUPPORTED_EXTENSIONS, OcrOptions, configure_unstructured, load_file
from ingest.loaders.ocr import available_engines
from rag.errors import ConfigError, DocumentError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
EXAMPLE_DOCS = SHARED_DATA / "unstructured-example-docs" / "docs"
SCIFACT_CORPUS = SHARED_DATA / "beir-scifact" / "corpus.jsonl"

needs_docs = pytest.mark.skipif(
    not EXAMPLE_DOCS.is_dir(), reason=f"example documents not found at {EXAMPLE_DOCS} (../shared/data beside the repo)"
)

# Files that cannot work on this machine, with a word the reason must contain. Everything
# else in the folder must yield text. .doc needs LibreOffice and the scans need an OCR engine:
# where those are installed the file moves to the "must work" side.
KNOWN_FAILURES = {
    "pdf/password.pdf": "password",
    "password_protected.xlsx": "password",
}
OCR_FILES = ["pdf/loremipsum-flat.pdf", "img/DA-1p.png"]
if not available_engines():
    KNOWN_FAILURES.update(dict.fromkeys(OCR_FILES, "OCR"))
if shutil.which("soffice") is None:
    KNOWN_FAILURES["fake.doc"] = "LibreOffice"

# One file per format that must yield text here.
MUST_WORK = [
    "pdf/layout-parser-paper-fast.pdf",
    "pdf/reliance.pdf",
    "pdf/korean-text-with-tables.pdf",
    "pdf/invalid-pdf-structure-pdfminer-one-page.pdf",
    "docx-tables.docx",
    "handbook-872p.docx",
    "sample-presentation.pptx",
    "vodafone.xlsx",
    "example-10k-1p.html",
    "fake-html-cp1252.html",
    "eml/fake-email-attachment.eml",
    "eml/email-no-utf8-2014-03-17.111517.eml",
    "fake-email.msg",
    "codeblock.md",
    "README.rst",
    "fake-doc.rtf",
    "fake.odt",
    "winter-sports.epub",
    "stanley-cups.csv",
    "norwich-city.txt",
    "factbook.xml",
    *([] if "img/DA-1p.png" in KNOWN_FAILURES else OCR_FILES),
]


def _example_files() -> list[str]:
    if not EXAMPLE_DOCS.is_dir():
        return []
    return sorted(str(p.relative_to(EXAMPLE_DOCS)) for p in EXAMPLE_DOCS.rglob("*") if p.is_file())


def _load_in_worker(path: str) -> tuple[str, Any]:
    """Runs in a spawned process; DocumentError does not survive pickling, so return its reason."""
    try:
        return "ok", load_file(Path(path))
    except DocumentError as e:
        return "error", e.reason


@pytest.fixture(scope="module")
def example_results() -> dict[str, tuple[str, Any]]:
    """Every example file loaded once with the defaults, in spawned workers.

    Spawned (not forked) workers also check that load_file configures unstructured by itself
    in a fresh process. Largest first: the 872-page DOCX alone takes ~27 s, so two workers
    bring the whole folder to about that.
    """
    if not EXAMPLE_DOCS.is_dir():
        pytest.skip(f"example documents not found at {EXAMPLE_DOCS}")
    files = sorted(_example_files(), key=lambda rel: -(EXAMPLE_DOCS / rel).stat().st_size)
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        results = pool.map(_load_in_worker, [str(EXAMPLE_DOCS / rel) for rel in files])
        return dict(zip(files, results, strict=True))


def _docs(example_results: dict[str, tuple[str, Any]], rel: str) -> list[ParsedDocument]:
    status, value = example_results[rel]
    assert status == "ok", f"{rel} failed: {value}"
    return list(value)


# --------------------------------------------------------------------------- real documents


@needs_docs
@pytest.mark.integration
@pytest.mark.parametrize("rel", _example_files() or ["(none)"])
def test_every_example_file_yields_text_or_a_reason(rel: str, example_results: dict[str, tuple[str, Any]]) -> None:
    status, value = example_results[rel]
    if status == "error":
        assert isinstance(value, str) and value.strip(), f"{rel}: empty reason"
        assert "\n" not in value, f"{rel}: reason must be one line: {value!r}"
        return
    docs = list(value)
    assert len(docs) == 1
    doc = docs[0]
    assert any(el.text.strip() for el in doc.elements)
    assert doc.document_id == doc.source == str((EXAMPLE_DOCS / rel).resolve())
    assert doc.file_type == Path(rel).suffix[1:].lower()
    assert doc.content_hash == hashlib.sha256((EXAMPLE_DOCS / rel).read_bytes()).hexdigest()
    assert all(el.text.strip() or el.category == "PageBreak" for el in doc.elements)


@needs_docs
@pytest.mark.integration
@pytest.mark.parametrize("rel", MUST_WORK)
def test_formats_that_work_here_yield_text(rel: str, example_results: dict[str, tuple[str, Any]]) -> None:
    doc = _docs(example_results, rel)[0]
    assert sum(len(el.text) for el in doc.elements) > 40


@needs_docs
@pytest.mark.integration
@pytest.mark.parametrize("rel", sorted(KNOWN_FAILURES))
def test_known_failures_say_why(rel: str, example_results: dict[str, tuple[str, Any]]) -> None:
    status, reason = example_results[rel]
    assert status == "error"
    assert KNOWN_FAILURES[rel].lower() in reason.lower(), reason


@needs_docs
@pytest.mark.integration
def test_encrypted_files_name_the_password(example_results: dict[str, tuple[str, Any]]) -> None:
    with pytest.raises(DocumentError, match=r"(?i)password|encrypt"):
        load_file(EXAMPLE_DOCS / "pdf" / "password.pdf", pdf_parser="unstructured")
    for rel in ("pdf/password.pdf", "password_protected.xlsx"):
        status, reason = example_results[rel]
        assert status == "error" and ("password" in reason or "encrypt" in reason), reason


@needs_docs
@pytest.mark.integration
def test_tables_are_markdown(example_results: dict[str, tuple[str, Any]]) -> None:
    docx_tables = [el.text for el in _docs(example_results, "docx-tables.docx")[0].elements if el.category == TABLE]
    assert docx_tables[0].splitlines() == [
        "| Header Col 1 | Header Col 2 |",
        "| --- | --- |",
        "| Lorem ipsum | A link example |",
    ]
    # The merged-cells table keeps its grid: every row has the same number of cells.
    merged = docx_tables[2].splitlines()
    assert len({line.count(" | ") for line in merged}) == 1

    (md_table,) = [el for el in _docs(example_results, "simple-table.md")[0].elements if el.category == TABLE]
    assert md_table.text.splitlines()[:3] == [
        "| Item | Price | # In stock |",
        "| --- | --- | --- |",
        "| Juicy Apples | 1.99 | 739 |",
    ]
    (csv_table,) = [el for el in _docs(example_results, "stanley-cups.csv")[0].elements if el.category == TABLE]
    assert "| --- | --- | --- |" in csv_table.text
    assert "| Maple Leafs | TOR | 13 |" in csv_table.text


@needs_docs
@pytest.mark.integration
@pytest.mark.parametrize("parser", ["auto", "pypdf", "pdfminer", "unstructured"])
def test_pdf_page_numbers(parser: str, example_results: dict[str, tuple[str, Any]]) -> None:
    def pages_of(rel: str, needle: str) -> set[int | None]:
        if parser == "auto":
            doc = _docs(example_results, rel)[0]
            assert doc.metadata["parser"] == "pypdfium2"
        else:
            doc = load_file(EXAMPLE_DOCS / rel, pdf_parser=parser)[0]
        assert doc.metadata["page_count"] >= 2
        return {el.page_number for el in doc.elements if needle in el.text}

    assert pages_of("pdf/multi-column-2p.pdf", "Open-domain question answering relies") == {1}
    assert pages_of("pdf/multi-column-2p.pdf", "Background") == {2}
    # Pages 2 and 3 of this file are blank; the second page of text is page 4.
    assert pages_of("pdf/layout-parser-paper-with-empty-pages.pdf", "Model Zoo") == {4}


@needs_docs
@pytest.mark.integration
@pytest.mark.parametrize("parser", ["auto", "pypdf"])
def test_pdf_structure_on_a_paper(parser: str, example_results: dict[str, tuple[str, Any]]) -> None:
    rel = "pdf/layout-parser-paper-fast.pdf"
    doc = _docs(example_results, rel)[0] if parser == "auto" else load_file(EXAMPLE_DOCS / rel, pdf_parser=parser)[0]
    assert doc.metadata["parser"] == ("pypdfium2" if parser == "auto" else parser)
    # PDFium expands the "fi" ligature; pypdf keeps the ligature character.
    assert unicodedata.normalize("NFKC", doc.title or "") == (
        "LayoutParser: A Unified Toolkit for Deep Learning Based Document Image Analysis"
    )
    titles = [el for el in doc.elements if el.category == TITLE]
    assert any(el.text == "1 Introduction" and el.depth == 0 and el.page_number == 1 for el in titles)
    items = [el.text for el in doc.elements if el.category == "ListItem"]
    assert any(text.startswith("2. A rich repository of pre-trained") for text in items)
    # Lines broken mid-sentence are joined; a line-end hyphen stays for the cleaner to judge.
    body = "\n".join(el.text for el in doc.elements)
    assert "Recent advances in document image analysis (DIA) have been primarily driven" in body
    assert "re-\ncent advances" in body
    assert "\x00" not in body


@needs_docs
@pytest.mark.integration
def test_cp1252_html_and_email_details(example_results: dict[str, tuple[str, Any]]) -> None:
    html_doc = _docs(example_results, "fake-html-cp1252.html")[0]
    text = "\n".join(el.text for el in html_doc.elements)
    assert "très chaud" in text and "El niño" in text and "15,50 €" in text
    assert html_doc.metadata["encoding"] == "cp1252"

    email = _docs(example_results, "eml/email-no-utf8-2014-03-17.111517.eml")[0]
    assert email.title == "Google Account password changed"
    assert "attachments_skipped" in email.metadata  # its image attachment needs OCR
    assert _docs(example_results, "fake-email.msg")[0].title == "Test Email"


@pytest.mark.skipif(not SCIFACT_CORPUS.is_file(), reason=f"SciFact corpus not found at {SCIFACT_CORPUS}")
def test_scifact_corpus_loads_fast() -> None:
    started = time.perf_counter()
    docs = load_file(SCIFACT_CORPUS)
    elapsed = time.perf_counter() - started
    assert len(docs) == 5183
    assert elapsed < 5.0, f"{elapsed:.1f} s for 5,183 records"
    assert len({d.document_id for d in docs}) == len(docs)
    first = docs[0]
    assert first.record_id == "4983"
    assert first.document_id == f"{SCIFACT_CORPUS.resolve()}#4983"
    assert first.elements[0].category == TITLE
    assert first.elements[0].text.startswith("Microstructural development of human newborn")


# --------------------------------------------------------------------------- generated files


def test_import_does_not_pull_heavy_dependencies() -> None:
    code = (
        "import sys, ingest.loaders\n"
        "heavy = [m for m in ('torch', 'unstructured', 'spacy', 'pypdf', 'pypdfium2', 'pdfminer', 'PIL',"
        " 'onnxruntime', 'rapidocr_onnxruntime', 'xlrd') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(ConfigError, match="pdf_parser"):
        load_file(path, pdf_parser="pymupdf")
    with pytest.raises(ConfigError, match="strategy"):
        load_file(path, strategy="best")
    with pytest.raises(ConfigError, match=r"ingest\.ocr\.engine"):
        load_file(path, ocr=OcrOptions(engine="paddle"))


def test_file_level_failures_have_clear_reasons(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError) as info:
        load_file(empty)
    assert info.value.reason == "empty file (0 bytes)"
    assert info.value.path == str(empty)

    odd = tmp_path / "notes.xyz"
    odd.write_text("hello")
    with pytest.raises(DocumentError, match=r"unsupported file type '\.xyz' \(supported: .*\.pdf"):
        load_file(odd)

    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(DocumentError, match=r"over ingest\.max_file_mb=0\.001: raise the limit or split the file"):
        load_file(big, max_file_mb=0.001)

    with pytest.raises(DocumentError, match="not found"):
        load_file(tmp_path / "missing.pdf")
    folder = tmp_path / "folder.md"
    folder.mkdir()
    with pytest.raises(DocumentError, match="directory"):
        load_file(folder)


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("garbage.pdf", b"%PDF-1.4 not really a pdf", "not a valid PDF"),
        ("text.docx", b"plain text, not a zip", "not a valid DOCX"),
        ("broken.xlsx", b"PK\x03\x04 truncated zip", "not a valid XLSX"),
        # Reported whether LibreOffice is installed ("could not convert") or not ("needs LibreOffice").
        ("legacy.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "LibreOffice"),
        ("legacy.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "not a valid XLS"),
    ],
)
def test_corrupt_files_are_document_errors(tmp_path: Path, name: str, data: bytes, needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentError, match=needle):
        load_file(path)


def test_text_file_ids_and_hash_follow_content(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("Quarterly Report\n\nRevenue grew by four percent over the last quarter.\n")
    first, again = load_file(path)[0], load_file(path)[0]
    assert first.document_id == first.source == str(path.resolve())
    assert first.file_type == "txt"
    assert first.content_hash == again.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "Revenue grew by four percent" in "\n".join(el.text for el in first.elements)

    path.write_text("Quarterly Report\n\nRevenue grew by five percent over the last quarter.\n")
    changed = load_file(path)[0]
    assert changed.document_id == first.document_id
    assert changed.content_hash != first.content_hash


def test_html_table_cells_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "prices.html"
    path.write_text(
        "<html><head><title>Price list</title></head><body>"
        "<table><tr><th>Item</th><th>Note</th></tr>"
        "<tr><td>a|b</td><td>line one<br>line two</td></tr></table></body></html>"
    )
    doc = load_file(path)[0]
    assert doc.title == "Price list"
    (table,) = [el for el in doc.elements if el.category == TABLE]
    assert table.text.splitlines() == ["| Item | Note |", "| --- | --- |", "| a\\|b | line one line two |"]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


RECORDS: list[dict[str, Any]] = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces fever.\n\nIt also thins the blood.", "metadata": {}},
    {"_id": "d2", "title": "", "text": "Ibuprofen is an anti-inflammatory drug."},
    {"id": 3, "title": "Paracetamol", "text": "Paracetamol treats pain.", "metadata": {"year": 2020}},
]


def test_jsonl_records_become_documents(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    _write_jsonl(path, RECORDS)
    docs = load_file(path)
    base = str(path.resolve())
    assert [d.document_id for d in docs] == [f"{base}#d1", f"{base}#d2", f"{base}#3"]
    assert [d.record_id for d in docs] == ["d1", "d2", "3"]
    assert all(d.source == base and d.file_type == "jsonl" for d in docs)
    first = docs[0]
    assert first.title == "Aspirin"
    assert [(el.category, el.text) for el in first.elements] == [
        (TITLE, "Aspirin"),
        ("NarrativeText", "Aspirin reduces fever."),
        ("NarrativeText", "It also thins the blood."),
    ]
    assert docs[1].title is None and [el.category for el in docs[1].elements] == ["NarrativeText"]
    assert docs[2].metadata == {"year": 2020}
    assert first.content_hash == hashlib.sha256(json.dumps(RECORDS[0], sort_keys=True).encode()).hexdigest()

    again = load_file(path)
    assert [(d.document_id, d.content_hash) for d in again] == [(d.document_id, d.content_hash) for d in docs]

    changed = [dict(r) for r in RECORDS]
    changed[1]["text"] = "Ibuprofen is a non-steroidal anti-inflammatory drug."
    _write_jsonl(path, changed)
    hashes = [d.content_hash for d in load_file(path)]
    assert hashes[0] == docs[0].content_hash and hashes[2] == docs[2].content_hash
    assert hashes[1] != docs[1].content_hash


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (['{"_id": "a", "text": "ok"}', '{"_id": "b", "text": '], "line 2: malformed JSON"),
        (['{"_id": "a", "body": "no text field"}'], "line 1: record has no 'text' field"),
        (['{"title": "t", "text": "no id"}'], "line 1: record has no '_id' or 'id' field"),
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], "line 2: record id 'a' repeats line 1"),
        (['["not", "an", "object"]'], "line 1: expected a JSON object"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, lines: list[str], needle: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DocumentError) as info:
        load_file(path)
    assert needle in info.value.reason


def test_configure_unstructured_is_idempotent() -> None:
    configure_unstructured()
    configure_unstructured()
    import unstructured.nlp.tokenize as tokenize

    assert os.environ["DO_NOT_TRACK"] and os.environ["UNSTRUCTURED_DISABLE_NOTICE"]
    model = str(tokenize._SPACY_MODEL_NAME)
    assert model == "en_core_web_sm" or (Path(model) / "config.cfg").is_file()


def test_supported_extensions_are_lowercase_with_dot() -> None:
    assert {".pdf", ".docx", ".jsonl", ".html", ".md", ".eml"} <= SUPPORTED_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in SUPPORTED_EXTENSIONS)
