"""Personal data redaction (rag/privacy.py) with the real Presidio recognizers and the bundled spaCy model: what is
replaced, what must survive (invoice numbers, dates, amounts, company names), and where it is applied by default:
log records, uvicorn's access log, the feedback file, metric labels, and chunks at ingest (ingest.redact_pii)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag.errors import ConfigError, MissingDependencyError
from rag.privacy import PresidioRedactor, RedactingFilter, install_log_redaction

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "tests" / "data" / "pii" / "labelled.jsonl"


@pytest.fixture(scope="module")
def redactor() -> PresidioRedactor:
    """Identifiers and names, as the defaults configure it (spaCy loads once for the module)."""
    return PresidioRedactor().warm_up()


@pytest.fixture(scope="module")
def identifiers() -> PresidioRedactor:
    return PresidioRedactor(names=False).warm_up()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Please send the contract to Maria Gonzalez at maria.gonzalez@example.com by Friday.",
            "Please send the contract to <PERSON> at <EMAIL> by Friday.",
        ),
        ("Call our London office on +44 20 7946 0958.", "Call our London office on <PHONE>."),
        ("Uploaded cv-jo.smith@example.co.uk.pdf to /hr.", "Uploaded <EMAIL>.pdf to /hr."),
        ("Reach the New York desk at (212) 555-0147 today.", "Reach the New York desk at <PHONE> today."),
        ("Pay to IBAN DE89 3704 0044 0532 0130 00 (Commerzbank).", "Pay to IBAN <IBAN> (Commerzbank)."),
        ("Pay to GB82WEST12345698765432 now.", "Pay to <IBAN> now."),
        (
            "The customer paid with card 4111 1111 1111 1111, expiry 09/27.",
            "The customer paid with card <CARD>, expiry 09/27.",
        ),
        ("Employee SSN 536-22-8124 is on file.", "Employee SSN <NATIONAL_ID> is on file."),
        ("Her National Insurance number is AB 12 34 56 C.", "Her National Insurance number is <NATIONAL_ID>."),
        ("The contractor's NIF is 12345678Z.", "The contractor's NIF is <NATIONAL_ID>."),
        ("Her PESEL is 44051401359.", "Her PESEL is <NATIONAL_ID>."),
        ("Codice fiscale RSSMRA85T10A562S on file.", "Codice fiscale <NATIONAL_ID> on file."),
    ],
)
def test_personal_data_is_replaced_by_its_placeholder(redactor: PresidioRedactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Invoice INV-2024-00042 for EUR 12,500.00 is due on 2024-03-15.",
        "The purchase order PO-4500012345 covers 1,200 units of part XJ-4411-2200.",
        "Shipment 7734-5521-09 left the warehouse on 3 June 2024.",
        "Order 55-2093-118 was shipped by DHL with tracking number JD014600006281230.",
        "Our VAT number is DE123456789 and our company registration is HRB 86891.",
        "Card 4111 1111 1111 1112 has a wrong check digit, so it is no card number.",
        "Johnson & Johnson signed the supply agreement with Ford Motor Company last quarter.",
        "Marks & Spencer reported like-for-like sales growth of 4.5 percent.",
        "Procter & Gamble is our largest customer by revenue in the EMEA region.",
        "Policy number 7781-220-9934 covers property damage up to 2 million.",
    ],
)
def test_business_numbers_and_company_names_survive(redactor: PresidioRedactor, text: str) -> None:
    assert redactor.redact(text) == text


def _labelled() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


def test_no_labelled_identifier_leaks_and_no_hard_negative_is_touched(identifiers: PresidioRedactor) -> None:
    """The identifier pass over tests/data/pii/labelled.jsonl (bench/pii.py measures it): every gold e-mail,
    phone, IBAN, card and national id is fully covered, and sentences with only names or nothing to find come out
    unchanged (32 of them are hard negatives: invoice, order and serial numbers, dates, amounts)."""
    rows = _labelled()
    assert len(rows) >= 60
    for row in rows:
        spans = identifiers.find(row["text"])
        for gold in row["spans"]:
            if gold["kind"] == "person":
                continue
            covered = all(any(s.start <= i < s.end for s in spans) for i in range(gold["start"], gold["end"]))
            assert covered, f"{gold['kind']} {gold['text']!r} leaks in: {row['text']}"
        if all(g["kind"] == "person" for g in row["spans"]):
            assert spans == [], f"false positive in: {row['text']}"


def test_names_are_found_by_the_spacy_pass_only_when_asked(redactor: PresidioRedactor) -> None:
    text = "Emily Clarke and Oliver Bennett reviewed the draft policy."
    assert redactor.redact(text) == "<PERSON> and <PERSON> reviewed the draft policy."
    assert PresidioRedactor(names=False).redact(text) == text
    assert redactor.redact("Maria asked for the March report.") == "<PERSON> asked for the March report."


def test_unknown_entity_is_a_config_error_naming_the_setting() -> None:
    from rag.config import load_settings

    with pytest.raises(ConfigError, match=r"privacy\.entities"):
        load_settings(None, ["privacy.entities=[email,passport]"])
    with pytest.raises(ConfigError, match="passport"):
        PresidioRedactor(["email", "passport"])


def test_missing_presidio_fails_with_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "presidio_analyzer" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="pip install presidio-analyzer"):
        PresidioRedactor(names=True)


# -- logs ----------------------------------------------------------------------------------------------------
def _logger(name: str, redactor: PresidioRedactor) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    install_log_redaction(redactor, [logger])
    return logger, out


def test_log_filter_redacts_message_arguments_and_traceback(redactor: PresidioRedactor) -> None:
    logger, out = _logger("tests.privacy.filter", redactor)
    logger.warning("question from %s: %r (%d chunks)", "maria.gonzalez@example.com", "call +44 20 7946 0958", 3)
    try:
        raise ValueError("no answer for Thomas Müller, card 4111 1111 1111 1111")
    except ValueError:
        logger.exception("answer failed")
    text = out.getvalue()
    assert "maria.gonzalez@example.com" not in text and "7946" not in text and "4111" not in text
    assert "Thomas Müller" not in text
    assert "question from <EMAIL>: 'call <PHONE>' (3 chunks)" in text
    assert "ValueError: no answer for <PERSON>, card <CARD>" in text


def test_log_filter_passes_records_logged_while_redacting() -> None:
    """Presidio and spaCy log through `logging` too: a record logged inside the filter must not loop."""
    seen: list[str] = []

    def noisy(text: str) -> str:
        seen.append(text)
        logging.getLogger("tests.privacy.loop").warning("redacting %s", text)
        return text.replace("secret", "<X>")

    out = io.StringIO()
    logger = logging.getLogger("tests.privacy.loop")
    logger.handlers.clear()
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(out))
    logger.handlers[0].addFilter(RedactingFilter(noisy))
    logger.warning("a secret")
    assert "a <X>" in out.getvalue().splitlines()
    assert seen[0] == "a secret"


@pytest.mark.slow  # a fresh interpreter imports Presidio
def test_cli_logging_setup_redacts_the_root_handler(tmp_path: Path) -> None:
    """configure_logging as the CLI runs it, in a fresh interpreter: a library's warning reaches stderr redacted."""
    code = (
        "import logging; from rag.config import load_settings; from rag.privacy import configure_logging;"
        "configure_logging(load_settings().privacy);"
        "logging.getLogger('some.library').warning('cannot parse mail from %s', 'anna.schmidt@firma.de')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cannot parse mail from <EMAIL>" in proc.stderr
    assert "anna.schmidt" not in proc.stderr


def test_serve_logs_json_lines_without_the_address(capsys: pytest.CaptureFixture[str]) -> None:
    """rag serve's logging (rag.service.telemetry, JSON lines) with the filter `rag serve` adds: the request
    line's path, passed as an argument and as an `extra=` field, and an exception's traceback are redacted."""
    from rag.config import PrivacySettings
    from rag.privacy import redact_logs
    from rag.service.telemetry import configure_logging

    names = ("rag", "uvicorn", "uvicorn.error")
    try:
        configure_logging()
        assert redact_logs(PrivacySettings(redact_names=False), names, warm=True) is not None
        access = logging.getLogger("rag.service.access")
        path = "/v1/documents/jo@example.com"
        access.info("%s %s %d", "GET", path, 404, extra={"method": "GET", "path": path, "status": 404})
        try:
            raise KeyError("no document for jo@example.com")
        except KeyError:
            logging.getLogger("rag.service").exception("lookup failed")
    finally:
        for name in names:
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    err = capsys.readouterr().err
    request, failure = (json.loads(line) for line in err.splitlines())
    assert (request["message"], request["path"], request["status"]) == (
        "GET /v1/documents/<EMAIL> 404",
        "/v1/documents/<EMAIL>",
        404,
    )
    assert "KeyError: 'no document for <EMAIL>'" in failure["exception"]
    assert "jo@example.com" not in err
    assert redact_logs(PrivacySettings(redact_logs=False), names) is None


def test_a_line_logged_while_the_redactor_loads_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Presidio logs while it loads; that line reaches the filter of the redactor that is loading, on the same
    thread, which holds the loading lock. It must pass through, not wait on the lock for ever."""
    import threading

    import rag.privacy

    real = rag.privacy._pattern_recognizers
    logger = logging.getLogger("tests.privacy.loading")
    logger.handlers.clear()
    logger.propagate = False
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))

    def logging_load(kinds: Any) -> Any:
        logger.warning("loading recognizers")
        return real(kinds)

    monkeypatch.setattr(rag.privacy, "_pattern_recognizers", logging_load)
    redactor = PresidioRedactor(["email"], names=False)
    install_log_redaction(redactor, [logger])
    worker = threading.Thread(target=redactor.warm_up, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "warm_up deadlocked on a line logged while loading"
    assert out.getvalue() == "loading recognizers\n"
    assert redactor.redact("mail jo@example.com") == "mail <EMAIL>"


def test_trace_spans_carry_no_question_and_a_failed_jobs_message_is_redacted() -> None:
    """rag serve's spans (rag.service.telemetry) through a real OpenTelemetry SDK provider: an answer's span has
    counts and labels only, never the question; an ingest job's error message is redacted in the span status."""
    pytest.importorskip("opentelemetry.sdk", reason="tracing comes with the serve extra")
    from types import SimpleNamespace

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rag.config import PrivacySettings
    from rag.privacy import build_redactor
    from rag.service.telemetry import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, redact=build_redactor(PrivacySettings(redact_names=False)).redact)
    question = "Where does jo@example.com send invoices?"
    answer = SimpleNamespace(
        question=question, text="To accounts.", mode="extract", refused=False, refusal_reason=None, evidence=0.7,
        chunks=(), unsupported=(), prompt_tokens=0, completion_tokens=0, timings_ms={"retrieve": 5.0},
    )  # fmt: skip
    tracing.answer(0, answer, "finance")
    job = SimpleNamespace(collection="hr", id="j1", files=["a.pdf"], error="cannot parse cv-jo@example.com.pdf")
    tracing.ingest(0, job, None)
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"chat", "ingest"}
    dumped = json.dumps([[dict(s.attributes or {}), s.status.description] for s in spans], default=str)
    assert "jo@example.com" not in dumped and "invoices" not in dumped
    assert next(s for s in spans if s.name == "ingest").status.description == "cannot parse <EMAIL>.pdf"


# -- feedback file, metrics ------------------------------------------------------------------------------------
def test_feedback_file_stores_the_redacted_question(tmp_path: Path, redactor: PresidioRedactor) -> None:
    from rag.answering import Answer
    from rag.retrieval import RetrievedChunk
    from ui.feedback import append_feedback, feedback_record

    chunk = RetrievedChunk("id-1", 0.9, {"document_id": "/d/hr.md", "source_name": "hr.md", "text": "28 days"}, {})
    question = "How many leave days does Maria Gonzalez have left? Reply to maria.gonzalez@example.com"
    answer = Answer(question, question, "28 days.", False, None, (), (), (chunk,), 0.8, 0, {}, 10, 5, "m")
    path = tmp_path / "feedback.jsonl"
    append_feedback(path, feedback_record(answer, "down", "hr", "wrong, ask me on +44 20 7946 0958", redact=redactor))
    append_feedback(path, feedback_record(answer, "up", "hr"))  # privacy.redact_feedback=false: stored as asked
    redacted, raw = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    assert redacted["question"] == "How many leave days does <PERSON> have left? Reply to <EMAIL>"
    assert redacted["query"] == redacted["question"]
    assert redacted["comment"] == "wrong, ask me on <PHONE>"
    assert "gonzalez" not in path.read_text(encoding="utf-8").splitlines()[0].lower()
    assert raw["question"] == question


def test_the_app_redacts_feedback_unless_the_setting_is_off(make_settings: Callable[..., Any]) -> None:
    pytest.importorskip("streamlit", reason="the app comes with the ui extra")
    from ui.resources import get_feedback_redactor

    on = get_feedback_redactor(make_settings("privacy.redact_names=false"))
    assert on is not None and on("mail jo@example.com") == "mail <EMAIL>"
    assert get_feedback_redactor(make_settings("privacy.redact_feedback=false")) is None


def test_metric_labels_carry_no_user_text() -> None:
    """Prometheus label values are kept forever per distinct value: only route templates, methods, statuses,
    collection names and fixed reasons may be labels, never a question, a path with its query, or a user name."""
    pytest.importorskip("prometheus_client", reason="metrics come with the serve extra")
    from rag.service.metrics import ServiceMetrics

    # Each label's values are a fixed set (route templates, statuses, refusal reasons, pipeline stages, token
    # kinds, ingest results and job states) or a collection's name. A new label belongs here only if that holds.
    allowed = {"endpoint", "method", "status", "type", "collection", "mode", "reason", "stage", "kind", "supported"}
    allowed |= {"result", "state"}
    metrics = ServiceMetrics()
    labels = {
        label
        for collector in metrics.registry._collector_to_names  # the registry's collectors (no public listing)
        for label in getattr(collector, "_labelnames", ())
    }
    assert labels and labels <= allowed, labels - allowed


# -- ingest ----------------------------------------------------------------------------------------------------
DOCUMENT = """# Supplier contacts

Our account manager at Northwind is Priya Sharma. Write to priya.sharma@northwind.example.com or call
+44 20 7946 0958 for delivery questions.

Invoices are paid to IBAN DE89 3704 0044 0532 0130 00 within 30 days of invoice INV-2024-00042.
"""


@pytest.mark.slow
@pytest.mark.integration
def test_ingest_redaction_keeps_personal_data_out_of_the_stored_chunks(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "suppliers.md").write_text(DOCUMENT, encoding="utf-8")

    def stored(*overrides: str) -> str:
        settings = make_settings(*overrides, data_dir=tmp_path / ("data" + str(len(overrides))))
        with build_store(settings) as store:
            report = ingest_paths([docs], settings, store, embedder)
            assert report.files_failed == 0
            return json.dumps([p for _, p in store.scroll(settings.store.collection)], ensure_ascii=False)

    plain = stored()
    assert "priya.sharma@northwind.example.com" in plain and "7946 0958" in plain  # the control: off by default
    redacted = stored("ingest.redact_pii=true")
    for secret in ("priya.sharma", "7946 0958", "DE89 3704", "Priya Sharma"):
        assert secret not in redacted
    assert "Write to <EMAIL> or call\\n<PHONE>" in redacted or "Write to <EMAIL> or call <PHONE>" in redacted
    assert "<IBAN>" in redacted and "<PERSON>" in redacted
    assert "INV-2024-00042" in redacted  # business numbers stay searchable

    # Switching redaction on for the collection built without it would leave its unchanged files unredacted
    # (ingest skips them by hash): refused, naming the setting.
    settings = make_settings("ingest.redact_pii=true", data_dir=tmp_path / "data0")
    with build_store(settings) as store, pytest.raises(ConfigError, match=r"ingest\.redact_pii=false"):
        ingest_paths([docs], settings, store, embedder)


@pytest.mark.slow
@pytest.mark.integration
def test_ingest_redaction_covers_streamed_text_files(
    tmp_path: Path, make_settings: Callable[..., Any], embedder: Any
) -> None:
    """A .txt file over ingest.stream_text_mb is read, cleaned and chunked a block at a time: redacted too."""
    from ingest.pipeline import ingest_paths
    from rag.factory import build_store

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "suppliers.txt").write_text(DOCUMENT * 20, encoding="utf-8")  # ~7 kB: several 1 kB blocks
    settings = make_settings("ingest.redact_pii=true", "privacy.redact_names=false", "ingest.stream_text_mb=0.001")
    with build_store(settings) as store:
        report = ingest_paths([docs], settings, store, embedder)
        assert report.files_failed == 0
        payloads = [p for _, p in store.scroll(settings.store.collection)]
    stored = json.dumps(payloads, ensure_ascii=False)
    assert {p.get("parser") for p in payloads} == {"stream"}, "the file must take the streamed path"
    assert len(payloads) > 1 and stored.count("<EMAIL>") >= 20
    assert "priya.sharma" not in stored and "7946 0958" not in stored
