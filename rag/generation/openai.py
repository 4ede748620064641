"""Generation by an OpenAI-compatible chat-completions server (vLLM; also llama.cpp server, TGI): one streamed
HTTP request per answer, read as server-sent events, with tokens counted locally for prompt budgets.
"""

from __future__ import annotations

import collections.abc
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from rag.config import BUNDLED_GENERATOR, GeneratorSettings
from rag.errors import ConfigError, GenerationError, UsageError
from rag.generation.base import GenerationOptions, Generator, Message, TokenStream, chat_prompt_ids
from rag.models import gguf_cache_dir, resolve_generator_source

logger = logging.getLogger(__name__)

# Read in this order, the first one set wins; a key is never a setting, so it never lands in a YAML file.
API_KEY_VARS = ("RAG_GENERATOR_API_KEY", "OPENAI_API_KEY")
# When neither generator.context_window nor the server (vLLM's /models `max_model_len`) says: the smallest
# window of today's instruct models, so a prompt budget built on it fits any of them.
DEFAULT_CONTEXT_WINDOW = 4096
# Without generator.tokenizer, counts come from the bundled SmolLM2 tokenizer (49k BPE vocabulary), times this.
# Not measured against other tokenizers (none is available offline): the larger vocabularies of served models
# (Llama 3: 128k, Qwen2.5: 151k) usually need fewer tokens for English, so the estimate errs high, but text in
# other scripts, numbers and code can need more, and an overlong prompt is an error where a short one is not.
ESTIMATE_MARGIN = 1.15
# A server that has not accepted the connection in this long is down; waiting for tokens may take the full
# generator.timeout_s (a queued request on a busy server).
CONNECT_TIMEOUT_S = 10.0


class OpenAICompatibleGenerator(Generator):
    """A model served over HTTP by an OpenAI-compatible chat-completions server.

    `generator.url` is the API base URL ending in /v1, as the OpenAI SDK's `base_url` (http://vllm:8000/v1):
    requests go to `<url>/chat/completions` and `<url>/models`. `generator.model` is the name the server serves.
    The API key, where the server wants one, comes from RAG_GENERATOR_API_KEY or OPENAI_API_KEY.
    `generator.timeout_s` bounds each wait for data (the first token included), not the whole answer.
    `cache_dir` (the settings' `cache_dir`) keeps the bundled tokenizer converted from its GGUF: 8 s once,
    0.2 s after.
    """

    def __init__(self, settings: GeneratorSettings, cache_dir: Path | None = None) -> None:
        if not settings.url:
            raise ConfigError(
                "generator.url is not set: generator.kind=openai needs the server's API base URL ending in /v1 "
                "(--set generator.url=http://localhost:8000/v1, or RAG_GENERATOR__URL)"
            )
        url = settings.url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"generator.url={settings.url!r} is not an http(s) URL: give the server's API base URL, "
                "e.g. http://vllm:8000/v1"
            )
        self.settings = settings
        self.url = url
        self.cache_dir = cache_dir
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, CONNECT_TIMEOUT_S))
        )
        self._models: list[dict[str, Any]] | None = None
        self._models_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.settings.model

    # -- the server's model list -------------------------------------------------------------
    def served_models(self) -> list[dict[str, Any]]:
        """The entries of `<url>/models`, fetched once."""
        with self._models_lock:
            if self._models is None:
                endpoint = f"{self.url}/models"
                body = self._get_json(endpoint)
                data = body.get("data") if isinstance(body, dict) else None
                if not isinstance(data, list):
                    raise GenerationError(
                        f"{endpoint} answered without a model list ({str(body)[:200]!r}): is generator.url the "
                        "API base URL of an OpenAI-compatible server, ending in /v1?"
                    )
                self._models = [m for m in data if isinstance(m, dict) and "id" in m]
            return self._models

    def _model_entry(self) -> dict[str, Any] | None:
        return next((m for m in self.served_models() if m["id"] == self.settings.model), None)

    def warm_up(self) -> None:
        """Check that the server is up and serves `generator.model`, and load the tokenizer."""
        if self._model_entry() is None:
            served = ", ".join(str(m["id"]) for m in self.served_models()) or "no model"
            raise ConfigError(
                f"generator.model={self.settings.model!r} is not served by {self.url}: it serves {served}; "
                "set generator.model to one of them"
            )
        self.count_tokens("warm up")

    @property
    def context_window(self) -> int:
        if self.settings.context_window:
            return self.settings.context_window
        entry = self._model_entry()
        limit = entry.get("max_model_len") if entry else None  # vLLM reports it; llama.cpp and TGI do not
        return limit if isinstance(limit, int) and limit > 0 else DEFAULT_CONTEXT_WINDOW

    # -- token counting ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """`generator.tokenizer` when set (exact counts), else the bundled SmolLM2 tokenizer (an estimate)."""
        if self.settings.tokenizer:
            return _configured_tokenizer(self.settings.tokenizer)
        return _bundled_tokenizer(self.cache_dir)

    def _estimate(self, tokens: int) -> int:
        return tokens if self.settings.tokenizer else math.ceil(tokens * ESTIMATE_MARGIN)

    def _raw_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _raw_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(chat_prompt_ids(self.tokenizer, messages))

    def count_tokens(self, text: str) -> int:
        return self._estimate(self._raw_tokens(text))

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self._estimate(self._raw_prompt_tokens(messages))

    # -- generation --------------------------------------------------------------------------
    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        window = self.context_window
        local_prompt = self._raw_prompt_tokens(messages)
        estimate = self._estimate(local_prompt)
        if estimate >= window:
            raise UsageError(
                f"the prompt is about {estimate} tokens, {self.name!r} takes {window}: "
                "lower answer.context_tokens or answer.max_chunks"
            )
        # vLLM refuses a request whose prompt + max_tokens exceed the window rather than stopping at its end.
        body = self._request_body(messages, options, min(options.max_new_tokens, window - estimate))
        stats = stream.stats
        received: list[str] = []
        usage: dict[str, Any] = {}
        start = time.perf_counter()
        # Stats are filled in `finally`, so they are complete however the stream ends: finished, closed early,
        # or dropped by a consumer that stopped iterating (a stop string cut the output).
        try:
            with closing(self._events(body)) as events:
                for event in events:
                    if event is None:  # [DONE]
                        stats.finish_reason = stats.finish_reason or "stop"
                        break
                    if isinstance(event.get("usage"), dict):  # the last event, with include_usage
                        usage = event["usage"]
                    choices = event.get("choices") or []
                    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
                    if choice.get("finish_reason"):
                        stats.finish_reason = str(choice["finish_reason"])
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        if not stats.ttft_ms:
                            stats.ttft_ms = (time.perf_counter() - start) * 1000
                        received.append(delta)
                        yield delta
                    if stream._stop.is_set():
                        stats.finish_reason = stats.finish_reason or "stop"
                        break  # leaving `closing` closes the response: the server sees the client go and aborts
                else:
                    if not stats.finish_reason:
                        raise GenerationError(
                            f"the stream from {self.url}/chat/completions ended before the answer was finished "
                            "(no finish_reason, no [DONE]): check the server's logs"
                        )
        finally:
            stats.total_ms = (time.perf_counter() - start) * 1000
            # Counts from the server when it sent them; else local ones (exact with the served model's tokenizer).
            stats.prompt_tokens = int(usage.get("prompt_tokens") or local_prompt)
            completion = usage.get("completion_tokens")
            stats.completion_tokens = int(completion) if completion else self._raw_tokens("".join(received))
            if stream._stop.is_set() and not stats.finish_reason:
                stats.finish_reason = "stop"

    def _request_body(self, messages: Sequence[Message], options: GenerationOptions, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": options.temperature,  # 0 = greedy
        }
        if options.temperature > 0:
            body["top_p"] = options.top_p
            if options.top_k:
                body["top_k"] = options.top_k
        # top_k and repetition_penalty are vLLM's extensions of the OpenAI request (llama.cpp ignores them),
        # so they are sent only where they change something.
        if options.repetition_penalty != 1.0:
            body["repetition_penalty"] = options.repetition_penalty
        if options.stop:  # the base class cuts at them too; sending them saves the server the extra tokens
            body["stop"] = list(options.stop)
        return body

    def _events(self, body: dict[str, Any]) -> collections.abc.Generator[dict[str, Any] | None, None, None]:
        """The JSON events of one streamed completion; None for the closing [DONE]."""
        endpoint = f"{self.url}/chat/completions"
        try:
            with self._client.stream("POST", endpoint, json=body, headers=self._headers()) as response:
                if response.is_error:
                    response.read()
                    raise self._status_error(endpoint, response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": keep-alive" comments, "event:" names
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        yield None
                        return
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError as e:
                        raise GenerationError(
                            f"{endpoint} streamed a line that is not JSON ({data[:200]!r}): is generator.url "
                            "an OpenAI-compatible server?"
                        ) from e
                    if not isinstance(event, dict):
                        continue
                    if event.get("error"):  # vLLM reports a failure after the 200 status as an event
                        raise GenerationError(
                            f"the generator server at {endpoint} failed mid-answer: {_server_message(event)}; "
                            "check the server's logs"
                        )
                    yield event
        except httpx.HTTPError as e:
            raise self._transport_error(endpoint, e) from e

    # -- HTTP --------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = next((os.environ[v] for v in API_KEY_VARS if os.environ.get(v)), None)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _get_json(self, endpoint: str) -> Any:
        try:
            response = self._client.get(endpoint, headers=self._headers())
        except httpx.HTTPError as e:
            raise self._transport_error(endpoint, e) from e
        if response.is_error:
            raise self._status_error(endpoint, response)
        try:
            return response.json()
        except ValueError as e:
            raise GenerationError(
                f"{endpoint} did not answer JSON: is generator.url the API base URL of an OpenAI-compatible "
                "server, ending in /v1?"
            ) from e

    def _transport_error(self, endpoint: str, error: httpx.HTTPError) -> GenerationError:
        if isinstance(error, httpx.ConnectError):
            return GenerationError(
                f"cannot connect to the generator server at {endpoint} ({error}): start it "
                "(with Docker: docker compose --profile gpu up -d vllm) or fix generator.url"
            )
        if isinstance(error, httpx.TimeoutException):
            return GenerationError(
                f"the generator server at {endpoint} did not answer within generator.timeout_s="
                f"{self.settings.timeout_s:g} s ({type(error).__name__}): it may be loading the model or busy; "
                "check its logs, or raise generator.timeout_s"
            )
        return GenerationError(
            f"the connection to the generator server at {endpoint} failed ({type(error).__name__}: {error}): "
            "check that the server is running and its logs"
        )

    def _status_error(self, endpoint: str, response: httpx.Response) -> GenerationError:
        status = response.status_code
        if status in (401, 403):
            hint = "set RAG_GENERATOR_API_KEY (or OPENAI_API_KEY) to the server's API key"
        elif status == 404:
            hint = f"check generator.url (the API base URL, ending in /v1) and generator.model={self.name!r}"
        elif status in (400, 422):
            hint = "the server refused the request: check generator.model and that the prompt fits its window"
        elif status == 429 or status == 503:
            hint = "the server is overloaded or still starting: retry later"
        elif status >= 500:
            hint = "the server failed: check its logs"
        else:
            hint = "check the server's logs"
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return GenerationError(
            f"the generator server at {endpoint} answered HTTP {status} {response.reason_phrase}: "
            f"{_server_message(body)}; {hint}"
        )


def _server_message(body: Any) -> str:
    """The error message of an OpenAI ({"error": {"message"}}), vLLM ({"message"}), TGI ({"error": "..."})
    or FastAPI ({"detail"}) error body; else the start of the body."""
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or body.get("message") or body.get("detail")
        if message:
            return str(message)[:500]
    text = (body if isinstance(body, str) else json.dumps(body)).strip()
    return text[:500] or "(an empty body)"


# -- tokenizers, loaded once per process -------------------------------------------------------
_tokenizers: dict[tuple[str, str], Any] = {}
_tokenizers_lock = threading.Lock()


def _cached(key: tuple[str, str], load: Callable[[], Any]) -> Any:
    with _tokenizers_lock:  # one load at a time: two threads asking for the same one load it once
        if key not in _tokenizers:
            _tokenizers[key] = load()
        return _tokenizers[key]


def _configured_tokenizer(name: str) -> Any:
    def load() -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"generator.tokenizer={name!r} could not be loaded ({e}); give a local tokenizer folder, or a hub "
                "name already in the local cache (downloads are off: HF_HUB_OFFLINE=1), or unset it"
            ) from e
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"generator.tokenizer={name!r} has no chat template: give the tokenizer of the served chat model"
            )
        return tokenizer

    return _cached(("configured", name), load)


def _bundled_tokenizer(cache_dir: Path | None) -> Any:
    """SmolLM2's tokenizer. Read from its GGUF it takes 8 s, so with a cache dir it is read from the
    conversion `TransformersGenerator` saves, or saved once under `<cache_dir>/tokenizers/`."""
    source = resolve_generator_source(GeneratorSettings.model_validate({"model": BUNDLED_GENERATOR}))

    def load() -> Any:
        from transformers import AutoTokenizer

        saved: Path | None = None
        if cache_dir is not None:
            converted = gguf_cache_dir(source, cache_dir)
            saved = cache_dir / "tokenizers" / converted.name
            for folder in (converted, saved):
                if (folder / "tokenizer_config.json").is_file():
                    return AutoTokenizer.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
        if saved is not None:
            _save_tokenizer(tokenizer, saved)
        return tokenizer

    return _cached(("bundled", str(cache_dir)), load)


def _save_tokenizer(tokenizer: Any, target: Path) -> None:
    """Written to a temporary folder and renamed, so a crash or a concurrent process leaves no half folder."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError as e:  # a read-only or full cache dir costs the next process 8 s, not the answer
        if not target.is_dir():  # else another process saved it first: theirs is as good
            logger.warning("could not save the tokenizer to %s (%s): the next run reads the GGUF again", target, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
