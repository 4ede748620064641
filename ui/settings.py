"""The app's settings: `--config`/`--set` from the command line after `--`, and the sidebar's per-question options.

`rag ui --config gpu --set generator.max_new_tokens=512` runs `streamlit run ui/app.py -- --config gpu
--set=generator.max_new_tokens=512`; Streamlit strips its own arguments, this module reads the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag.access.principal import Principal
from rag.config import Settings, load_settings
from rag.generation import GenerationOptions
from rag.privacy import configure_logging
from rag.types import Mode

MODES: tuple[Mode, ...] = ("hybrid", "dense", "sparse")


def parse_app_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(config, overrides) from the script's arguments; anything else is ignored (a test runner's own flags)."""
    # allow_abbrev=False: under pytest, sys.argv holds pytest's flags, and `--co` must not be read as `--config`.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, _ = parser.parse_known_args(list(argv))
    return args.config, list(args.overrides)


def load_app_settings(argv: Sequence[str]) -> Settings:
    """Defaults < YAML profile (--config or RAG_CONFIG) < RAG_* environment < --set; raises ConfigError."""
    config, overrides = parse_app_args(argv)
    settings = load_settings(config, overrides)
    configure_logging(settings.privacy)  # the app's log lines on stderr without personal data (rag/privacy.py)
    return settings


@dataclass(frozen=True)
class ChatOptions:
    """What the sidebar changes for the next question; the loaded settings stay as they are."""

    mode: Mode
    max_chunks: int
    rerank: bool
    temperature: float
    max_new_tokens: int
    min_evidence: float | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatOptions:
        return cls(
            mode=settings.retrieval.mode,
            max_chunks=settings.answer.max_chunks,
            rerank=settings.rerank.model is not None,
            temperature=settings.generator.temperature,
            max_new_tokens=settings.generator.max_new_tokens,
            min_evidence=settings.answer.min_evidence,
        )

    def apply(self, settings: Settings) -> Settings:
        """A copy of `settings` with this question's answer settings; validated like any other settings."""
        changes = {"max_chunks": self.max_chunks, "min_evidence": self.min_evidence}
        answer = type(settings.answer).model_validate({**settings.answer.model_dump(), **changes})
        return settings.model_copy(update={"answer": answer})

    def generation_options(self, settings: Settings) -> GenerationOptions:
        return GenerationOptions.from_settings(
            settings.generator, temperature=self.temperature, max_new_tokens=self.max_new_tokens
        )


@dataclass(frozen=True)
class AppContext:
    """What every page of one script run works with: the loaded settings, the sidebar's options, the collection."""

    settings: Settings
    options: ChatOptions
    collection: str
    principal: Principal = field(default_factory=Principal.local)  # who is asking: the signed-in key's owner
    # Through a server (client.server_url / RAG_SERVER_URL): the key sent to it (the signed-in one; None: RAG_API_KEY
    # or none) and how it answers ("extract" or "generate", from its /readyz).
    api_key: str | None = field(default=None, repr=False)
    server_answer_mode: str | None = None

    @property
    def server(self) -> str | None:
        """The server the app goes through, or None when it opens the store itself."""
        return self.settings.client.resolved_url

    @property
    def question_settings(self) -> Settings:
        return self.options.apply(self.settings)


def store_location(settings: Settings) -> str:
    """Where the index lives, as shown to the user."""
    kind = settings.store.resolved_kind
    if kind == "server":
        return f"Qdrant server at {settings.store.resolved_url}"
    if kind == "local":
        return f"qdrant-client local mode in {settings.data_dir / 'qdrant-local'}"
    return f"embedded Qdrant Edge in {settings.index_dir}"
