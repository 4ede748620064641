"""A client of a running `rag serve`: what the CLI uses when `client.server_url` (or RAG_SERVER_URL) is set.

One process (the server) owns the store and the models; `rag query`, `rag ask`, `rag chat`, `rag ingest` and
`rag collections` then send requests instead of opening the store, so they work while the server (and its chat
users) hold it. Errors come back as the server's message, raised as the matching `RagError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rag.config import ClientSettings
from rag.errors import AccessDeniedError, CollectionNotFoundError, RagError, StoreError, UsageError
from rag.types import Answer, Citation, PromptChunk, Quote, RetrievedChunk, SentenceSupport


@dataclass
class RemoteAnswer:
    """An answer from the server: its text and the fields `rag serve` adds to OpenAI's response."""

    question: str
    text: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return bool(self.fields.get("refused"))

    @property
    def citations(self) -> list[dict[str, Any]]:
        return list(self.fields.get("citations") or [])

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "text": self.text, **self.fields}

    def to_answer(self) -> Answer:
        """The library's `Answer`, so a client renders a server's answer with the code that renders a local one.

        The prompt's chunks (with their stored text), the sentence checks and the model come from the fields
        `rag serve` adds; a server without them gives an answer whose sources have no text. Token counts are
        not in a streamed answer and stay 0.
        """
        f = self.fields
        chunks = tuple(
            PromptChunk(int(c["number"]), _chunk(c), str(c["payload"].get("text", "")), bool(c.get("truncated")))
            for c in f.get("chunks") or []
        )
        citations = tuple(
            Citation(
                number=int(c["number"]),
                chunk_id=str(c["chunk_id"]),
                document_id=str(c.get("document_id", "")),
                source=str(c.get("source", "")),
                label=str(c.get("label", "")),
                pages=tuple(c.get("pages") or ()),
                section=tuple(c.get("section") or ()),
                char_start=c.get("char_start"),
                char_end=c.get("char_end"),
            )
            for c in self.citations
        )
        mode = str(f.get("mode") or "generate")
        # A quoted answer's spans are its quotes; a generated one's are the checker's sentences (in `support`).
        quotes = tuple(
            Quote(int(c["number"]), int(q["start"]), int(q["end"]), str(q["text"]), 0.0)
            for c in self.citations
            for q in c.get("quotes") or []
            if mode == "extract"
        )
        timings = f.get("timings_ms") or {}
        return Answer(
            question=self.question,
            query=str(f.get("query") or self.question),
            text=self.text,
            refused=self.refused,
            refusal_reason=f.get("refusal_reason"),
            citations=citations,
            chunks=chunks,
            retrieved=tuple(_chunk(c) for c in f.get("retrieved") or []),
            evidence=f.get("evidence"),
            dropped_citations=int(f.get("dropped_citations") or 0),
            timings_ms={str(k): float(v) for k, v in timings.items()},
            prompt_tokens=0,
            completion_tokens=0,
            model=str(f.get("generator") or ""),
            cached=bool(f.get("cached")),
            mode=mode,
            quotes=quotes,
            support=tuple(_support(s) for s in f.get("support") or []),
            removed=tuple(_support(s) for s in f.get("removed") or []),
        )


def _chunk(c: dict[str, Any]) -> RetrievedChunk:
    scores = {str(k): float(v) for k, v in (c.get("stage_scores") or {}).items()}
    return RetrievedChunk(str(c["id"]), float(c.get("score") or 0.0), dict(c.get("payload") or {}), scores)


def _support(s: dict[str, Any]) -> SentenceSupport:
    span = s.get("span")
    return SentenceSupport(
        text=str(s["text"]),
        start=int(s["start"]),
        end=int(s["end"]),
        supported=bool(s["supported"]),
        score=float(s.get("score") or 0.0),
        source=s.get("source"),
        span=(int(span[0]), int(span[1])) if span else None,
        cited=tuple(s.get("cited") or ()),
        missing_numbers=tuple(s.get("missing_numbers") or ()),
        missing_names=tuple(s.get("missing_names") or ()),
        wrong_citations=tuple(s.get("wrong_citations") or ()),
        reason=s.get("reason"),
    )


class ServerError(RagError):
    """The server answered with an error we do not map to a more specific one."""


def _error(response: httpx.Response, url: str) -> RagError:
    try:
        body = response.json().get("error", {})
        message = body.get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    text = f"{url} answered {response.status_code}: {message}"
    if response.status_code in (401, 403):
        return AccessDeniedError(f"{text} (set RAG_API_KEY to a key the server knows: `rag keys create`)")
    if response.status_code == 404:
        return CollectionNotFoundError(text)
    if response.status_code in (400, 409, 413, 415, 422):
        return UsageError(text)
    if response.status_code == 503:
        return StoreError(text)
    return ServerError(text)


class RagClient:
    """Typed calls to the endpoints of `rag serve` (see README, "The HTTP API")."""

    def __init__(
        self, settings: ClientSettings, transport: httpx.BaseTransport | None = None, api_key: str | None = None
    ) -> None:
        """`api_key` (the key a user signed in with, in the chat app) replaces RAG_API_KEY."""
        url = settings.resolved_url
        if not url:
            raise UsageError(
                "no server to talk to: set client.server_url or RAG_SERVER_URL (e.g. http://localhost:8000)"
            )
        headers = {}
        key = api_key if api_key is not None else settings.api_key.get_secret_value() if settings.api_key else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.base_url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=settings.timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise StoreError(f"{self.base_url}{path}: the server did not answer ({type(e).__name__}: {e})") from e
        if response.status_code >= 400:
            raise _error(response, f"{self.base_url}{path}")
        return response.json()

    # -- collections and documents --------------------------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/collections")["data"])

    def describe(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/collections/{name}"))

    def create_collection(self, name: str) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/collections", json={"name": name}))

    def delete_collection(self, name: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/v1/collections/{name}"))

    def documents(self, name: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/v1/collections/{name}/documents")["data"])

    def upload(self, name: str, paths: Sequence[Path], access: Sequence[str] = ()) -> dict[str, Any]:
        """Send `paths` in one request, labelled with the groups `access` (the server's default: the key's own
        groups); the server answers with the ingest job it queued."""
        handles = [path.open("rb") for path in paths]
        try:
            return self._upload(name, [(path.name, h) for path, h in zip(paths, handles, strict=True)], access)
        finally:
            for handle in handles:
                handle.close()

    def upload_files(self, name: str, files: Sequence[tuple[str, bytes]], access: Sequence[str] = ()) -> dict[str, Any]:
        """`upload` of (file name, content) pairs held in memory (a browser's upload)."""
        return self._upload(name, list(files), access)

    def _upload(self, name: str, files: Sequence[tuple[str, Any]], access: Sequence[str]) -> dict[str, Any]:
        parts = [("files", (filename, content)) for filename, content in files]
        form = {"access": ",".join(access)} if access else None
        return dict(self._request("POST", f"/v1/collections/{name}/documents", files=parts, data=form))

    def delete_document(self, name: str, document: str) -> dict[str, Any]:
        """Delete a document (its id, or an uploaded file's name) and its uploaded file."""
        return dict(self._request("DELETE", f"/v1/collections/{name}/documents/{document}"))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}"))

    def wait(
        self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 0.5
    ) -> dict[str, Any]:
        """Poll a job until it is done or failed; `on_progress` sees each state."""
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.get("state") in ("done", "failed"):
                return job
            time.sleep(poll_s)

    def me(self) -> dict[str, Any]:
        """Who the key belongs to: name, admin, groups (GET /v1/me); a 401 for a key the server does not know."""
        return dict(self._request("GET", "/v1/me"))

    def ready(self) -> dict[str, Any]:
        """The server's readiness (GET /readyz): answer_mode, store, collections; a StoreError while it is not."""
        return dict(self._request("GET", "/readyz"))

    def monitoring(self) -> dict[str, Any]:
        """The server's drift signals (GET /v1/monitoring)."""
        return dict(self._request("GET", "/v1/monitoring"))

    # -- questions ------------------------------------------------------------------------------------
    def retrieve(
        self,
        query: str,
        collection: str | None = None,
        top_k: int | None = None,
        mode: str | None = None,
        filters: Sequence[str] = (),
        rerank: bool = True,
    ) -> dict[str, Any]:
        body = {"query": query, "collection": collection, "top_k": top_k, "mode": mode, "filters": list(filters)}
        body["rerank"] = rerank
        return dict(self._request("POST", "/v1/retrieve", json={k: v for k, v in body.items() if v is not None}))

    def _chat_body(self, question: str, collection: str, history: Sequence[tuple[str, str]], **extra: Any) -> Any:
        messages = []
        for asked, answered in history:
            messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
        messages.append({"role": "user", "content": question})
        return {"model": collection, "messages": messages, **{k: v for k, v in extra.items() if v is not None}}

    def stream(
        self, question: str, collection: str, history: Sequence[tuple[str, str]] = (), **extra: Any
    ) -> Iterator[str | RemoteAnswer]:
        """Text deltas as the server sends them, then the finished `RemoteAnswer` as the last item."""
        body = self._chat_body(question, collection, history, stream=True, **extra)
        answer = RemoteAnswer(question)
        path = "/v1/chat/completions"
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response, f"{self.base_url}{path}")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        raise ServerError(f"{self.base_url}{path}: {event['error'].get('message', event['error'])}")
                    for choice in event.get("choices", []):
                        delta = choice.get("delta", {}).get("content")
                        if delta:
                            answer.text += delta
                            yield delta
                        if choice.get("finish_reason"):
                            answer.fields = {k: v for k, v in event.items() if k not in _OPENAI_KEYS}
        except httpx.HTTPError as e:
            raise StoreError(f"{self.base_url}{path}: the server did not answer ({type(e).__name__}: {e})") from e
        yield answer

    def ask(
        self, question: str, collection: str, history: Sequence[tuple[str, str]] = (), **extra: Any
    ) -> RemoteAnswer:
        body = self._chat_body(question, collection, history, **extra)
        response = self._request("POST", "/v1/chat/completions", json=body)
        text = response["choices"][0]["message"]["content"] or ""
        return RemoteAnswer(question, text, {k: v for k, v in response.items() if k not in _OPENAI_KEYS})


_OPENAI_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint"})
