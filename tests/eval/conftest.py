"""Eval fixtures: samples/ indexed once for the eval tests, and a generator that answers by question."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from rag.generation import GenerationOptions, Message, TokenStream
from tests.conftest import SAMPLES
from tests.rag.test_answering import ScriptedGenerator


class KeyedGenerator(ScriptedGenerator):
    """A ScriptedGenerator whose reply depends on the request: the first key found in it wins, else `default`.

    Keys are looked for in the question of an answer prompt (after its last "Question:"), in other prompts in the
    whole user message, so a run answers each question the same way whatever the order, the resume or the rerun.
    """

    def __init__(self, replies: Mapping[str, str], default: str = "I am not sure.") -> None:
        super().__init__()
        self.by_key = dict(replies)
        self.default = default

    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        user = messages[-1].content
        where = user.rsplit("Question:", 1)[-1] if user.startswith("Context:") else user
        self.replies = [next((reply for key, reply in self.by_key.items() if key in where), self.default)]
        yield from super()._stream(messages, options, stream)


@pytest.fixture(scope="session")
def samples_index(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[tuple[Any, Any]]:
    """samples/ ingested once (test profile) into the default collection; yields (settings, store)."""
    from ingest.pipeline import ingest_paths
    from rag.config import load_settings
    from rag.factory import build_store

    # answer.mode=generate: these tests pin the harness on scripted generated answers (auto would quote).
    settings = load_settings("test", [f"data_dir={tmp_path_factory.mktemp('eval-samples')}", "answer.mode=generate"])
    store = build_store(settings)
    report = ingest_paths([SAMPLES], settings, store, embedder)
    assert report.files_ingested == 3
    yield settings, store
    store.close()
