"""The chat app as a client of a running `rag serve` (client.server_url or RAG_SERVER_URL): the server owns the store
and the models, the app opens neither, so `rag ingest` into the same data folder works while the app runs.

`RemotePipeline` answers through POST /v1/chat/completions and gives back the library's `Answer`, so the chat page
renders a server's answer with the code that renders a local one (ui/render.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import streamlit as st

from rag.client import RagClient, RemoteAnswer
from rag.config import Settings
from rag.errors import AccessDeniedError, RagError, StoreError
from rag.generation import GenerationOptions
from rag.types import Answer, Turn
from ui.settings import AppContext

T = TypeVar("T")


def server_url(settings: Settings) -> str | None:
    """The server the app goes through, or None to open the store itself."""
    return settings.client.resolved_url


def connect(settings: Settings, api_key: str | None) -> RagClient:
    """A client of the configured server sending `api_key` (the signed-in key; None: RAG_API_KEY, if set)."""
    return RagClient(settings.client, api_key=api_key)


def server_problem(url: str, error: RagError) -> str:
    """One line for the user: what went wrong with the server at `url` and what to do about it. A request the
    server turned down for its content (a bad name, a busy collection) keeps the server's own message."""
    if isinstance(error, AccessDeniedError):
        return (
            f"The server at {url} refused the request: {error}. Sign in with a key that server knows "
            "(`rag keys create` where it runs; `--admin` to add or delete documents)."
        )
    if not isinstance(error, StoreError):  # down, unreachable, not ready (503) are StoreErrors (rag/client.py)
        return str(error)
    return (
        f"The server at {url} cannot be used: {error}. Start it with `rag serve` (and wait until {url}/readyz "
        "answers), or point RAG_SERVER_URL / client.server_url at the right address; unset both to have the app "
        "open the data folder itself."
    )


@dataclass
class RemoteStream:
    """Iterate for the answer's text as the server sends it; `answer` is set when the iteration ends."""

    _events: Iterator[str | RemoteAnswer]
    answer: Answer | None = None
    text: str = field(default="")

    def __iter__(self) -> Iterator[str]:
        for event in self._events:
            if isinstance(event, RemoteAnswer):
                self.answer = event.to_answer()
            else:
                self.text += event
                yield event


class RemotePipeline:
    """What the chat page asks a question with when a server is configured (`RagPipeline.stream`'s signature)."""

    def __init__(self, settings: Settings, collection: str, api_key: str | None) -> None:
        self.settings = settings
        self.collection = collection
        self.api_key = api_key

    def stream(
        self,
        question: str,
        history: Sequence[Turn] = (),
        mode: str | None = None,
        rerank: bool = True,
        options: GenerationOptions | None = None,
    ) -> RemoteStream:
        """The answer streamed by the server; the request is sent on the first iteration."""
        extra: dict[str, object] = {"retrieval_mode": mode, "rerank": rerank}
        if options is not None:
            extra |= {"temperature": options.temperature, "max_tokens": options.max_new_tokens}
        return RemoteStream(self._events(question, [(t.question, t.answer) for t in history], extra))

    def _events(
        self, question: str, history: list[tuple[str, str]], extra: dict[str, object]
    ) -> Iterator[str | RemoteAnswer]:
        with connect(self.settings, self.api_key) as client:
            yield from client.stream(question, self.collection, history, **extra)


def on_server(ctx: AppContext, call: Callable[[RagClient], T]) -> T:
    """`call` with a client of the app's server; a server that is down or refuses the key stops the page with one
    clear message (`server_problem`), never a traceback."""
    url = ctx.server
    assert url is not None
    try:
        with connect(ctx.settings, ctx.api_key) as client:
            return call(client)
    except RagError as e:
        st.error(server_problem(url, e), icon=":material/cloud_off:")
        st.stop()
        raise  # st.stop() raises; this keeps the type checker from reading a fall-through
