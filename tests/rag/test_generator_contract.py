"""One contract for every generator backend: the bundled SmolLM2 run in this process (transformers), and the same
model behind an OpenAI-compatible HTTP server (openai). Both decode greedily, so both must give the same text.

The server is a small ThreadingHTTPServer in this process that speaks the chat-completions protocol (SSE
streaming, `[DONE]`, a usage event) and answers with the real model through the session's TransformersGenerator.
"""

from __future__ import annotations

import json
import math
import queue
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rag.config import GeneratorSettings, Settings, load_settings
from rag.errors import ConfigError, GenerationError, UsageError
from rag.generation import (
    GenerationOptions,
    GenerationStats,
    Generator,
    Message,
    TransformersGenerator,
    build_generator,
)
from rag.generation_openai import ESTIMATE_MARGIN, OpenAICompatibleGenerator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVED = "smollm2-test"  # the name the test server serves the model under
MAX_NEW = 12
LONG = 16  # for the early-stop tests: slack for a busy machine between the first token and close()
QUESTION = [Message("user", "What is the capital of France?")]
# An open-ended request: the answer always runs past a few tokens, so limits and early stops are visible.
STORY = [Message("system", "You are a storyteller."), Message("user", "Write a long story about a dog who can fly.")]


# -- the OpenAI-compatible test server ---------------------------------------------------------
class ChatServer:
    """Serves `/v1/models` and streamed `/v1/chat/completions` from a real generator, on 127.0.0.1."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.model_name = SERVED
        self.fail: tuple[int, Any] | None = None  # answer chat requests with this status and JSON body
        self.fail_mid_stream: dict[str, Any] | None = None  # or with a 200, one delta, then this error event
        self.send_usage = True
        self.report_max_model_len = True
        self.requests: list[dict[str, Any]] = []  # each chat request's body and Authorization header
        self.served: queue.Queue[GenerationStats] = queue.Queue()  # the server-side stats of each answer
        handler = type("Handler", (_ChatHandler,), {"chat": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="chat-server", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.fail = self.fail_mid_stream = None
        self.send_usage = self.report_max_model_len = True
        self.requests.clear()
        while not self.served.empty():
            self.served.get_nowait()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _ChatHandler(BaseHTTPRequestHandler):
    chat: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _event(self, body: Any) -> None:
        self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())

    def _chunk(self, content: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        delta = {"content": content} if content is not None else {}
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"object": "chat.completion.chunk", "choices": [choice]}

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        entry: dict[str, Any] = {"id": self.chat.model_name, "object": "model"}
        if self.chat.report_max_model_len:
            entry["max_model_len"] = self.chat.generator.context_window
        self._json(200, {"object": "list", "data": [entry]})

    def do_POST(self) -> None:
        chat = self.chat
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if chat.fail is not None:
            return self._json(*chat.fail)
        if body["model"] != chat.model_name:  # vLLM's answer to an unknown model
            return self._json(404, {"object": "error", "message": f"The model `{body['model']}` does not exist."})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})  # as vLLM starts
        if chat.fail_mid_stream is not None:
            self._event(self._chunk("Once"))
            return self._event(chat.fail_mid_stream)
        options = GenerationOptions(
            max_new_tokens=body["max_tokens"],
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            top_k=body.get("top_k", 0),
            repetition_penalty=body.get("repetition_penalty", 1.0),
            stop=tuple(body.get("stop") or ()),
        )
        stream = chat.generator.stream([Message(m["role"], m["content"]) for m in body["messages"]], options)
        try:
            for delta in stream:
                self._event(self._chunk(delta))
        except (BrokenPipeError, ConnectionResetError):
            stream.close()  # the client went away: stop generating, as vLLM aborts the request
            stream.read()
            chat.served.put(stream.stats)
            return
        stats = stream.stats
        chat.served.put(stats)
        self._event(self._chunk(None, stats.finish_reason))
        if chat.send_usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens}
            self._event({"choices": [], "usage": {**usage, "total_tokens": sum(usage.values())}})
        self.wfile.write(b"data: [DONE]\n\n")


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, [f"data_dir={tmp_path_factory.mktemp('generation')}"])


@pytest.fixture(scope="session")
def local_generator(settings: Settings) -> TransformersGenerator:
    generator = build_generator(settings)
    assert isinstance(generator, TransformersGenerator)
    generator.warm_up()  # the first load converts the GGUF (~25 s); the session reuses the model
    return generator


@pytest.fixture(scope="session")
def chat_server(local_generator: TransformersGenerator) -> Iterator[ChatServer]:
    server = ChatServer(local_generator)
    yield server
    server.close()


@pytest.fixture
def server(chat_server: ChatServer) -> Iterator[ChatServer]:
    chat_server.reset()
    yield chat_server
    chat_server.reset()


def http_settings(settings: Settings, url: str, **changes: Any) -> GeneratorSettings:
    return settings.generator.model_copy(update={"kind": "openai", "model": SERVED, "url": url, **changes})


def http_generator(settings: Settings, server: ChatServer, **changes: Any) -> OpenAICompatibleGenerator:
    # cache_dir: the tokenizer is read from the conversion the session's TransformersGenerator saved
    return OpenAICompatibleGenerator(http_settings(settings, server.url, **changes), cache_dir=settings.cache_dir)


@pytest.fixture(params=["transformers", "openai"])
def generator(
    request: pytest.FixtureRequest, settings: Settings, local_generator: TransformersGenerator, server: ChatServer
) -> Generator:
    if request.param == "transformers":
        return local_generator
    return http_generator(settings, server)


def options(settings: Settings, max_new_tokens: int = MAX_NEW, **changes: Any) -> GenerationOptions:
    # The settings' defaults (greedy, repetition_penalty 1.1): the penalty must reach the server too.
    return GenerationOptions.from_settings(settings.generator, max_new_tokens=max_new_tokens, **changes)


@pytest.fixture(scope="session")
def reference(settings: Settings, local_generator: TransformersGenerator) -> str:
    """The local model's greedy answer to QUESTION: what every backend must say."""
    text, _ = local_generator.generate(QUESTION, options(settings))
    assert len(text.split()) >= 4, text
    return text


# -- the contract: every backend -----------------------------------------------------------------
def test_streamed_deltas_join_to_the_generated_text(generator: Generator, settings: Settings, reference: str) -> None:
    stream = generator.stream(QUESTION, options(settings))
    deltas = list(stream)
    assert len(deltas) > 1 and all(deltas)
    assert "".join(deltas) == stream.text
    text, _ = generator.generate(QUESTION, options(settings))
    # Greedy decoding of the same model: the HTTP backend sends all that decides the output.
    assert stream.text == text == reference


def test_stats_are_filled(generator: Generator, settings: Settings, local_generator: TransformersGenerator) -> None:
    _, stats = generator.generate(QUESTION, options(settings))
    assert stats.prompt_tokens == local_generator.count_prompt_tokens(QUESTION)
    assert 0 < stats.completion_tokens <= MAX_NEW
    assert 0 < stats.ttft_ms <= stats.total_ms
    assert stats.finish_reason in ("stop", "length")


def test_max_new_tokens_is_respected(generator: Generator, settings: Settings) -> None:
    short, stats = generator.generate(STORY, options(settings, 4))
    longer, _ = generator.generate(STORY, options(settings, MAX_NEW))
    assert stats.finish_reason == "length" and stats.completion_tokens == 4
    assert short and longer.startswith(short) and len(longer) > len(short)


def test_a_stop_string_cuts_the_output(generator: Generator, settings: Settings, reference: str) -> None:
    stop = " " + reference.split()[2]
    text, stats = generator.generate(QUESTION, options(settings, stop=(stop,)))
    assert text == reference[: reference.index(stop)]
    assert stats.finish_reason == "stop"


def test_stats_after_a_stop_string_cut(generator: Generator, settings: Settings, reference: str) -> None:
    _, stats = generator.generate(QUESTION, options(settings, stop=(" " + reference.split()[2],)))
    assert stats.completion_tokens > 0 and stats.total_ms > 0


def test_closing_the_stream_stops_generation(generator: Generator, settings: Settings) -> None:
    stream = generator.stream(STORY, options(settings, LONG))
    deltas = []
    for delta in stream:
        deltas.append(delta)
        stream.close()  # after the first delta; the iteration ends within a token or two
    assert 1 <= len(deltas) <= 4
    assert 0 < stream.stats.completion_tokens < LONG
    assert stream.stats.finish_reason == "stop"


def test_an_empty_conversation_is_a_usage_error(generator: Generator) -> None:
    with pytest.raises(UsageError, match="empty"):
        generator.stream([])


def test_token_counts(generator: Generator, local_generator: TransformersGenerator) -> None:
    question = QUESTION[0].content
    assert generator.count_prompt_tokens(QUESTION) > generator.count_tokens(question) > 0
    # Never fewer than the served model's tokenizer counts: a budget built on them fits.
    assert generator.count_tokens(question) >= local_generator.count_tokens(question)
    assert generator.count_prompt_tokens(QUESTION) >= local_generator.count_prompt_tokens(QUESTION)
    assert generator.context_window == local_generator.context_window  # vLLM-style max_model_len for openai


# -- the HTTP backend only -----------------------------------------------------------------------
def test_http_request_carries_options_and_api_key(
    settings: Settings, server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generic")
    monkeypatch.setenv("RAG_GENERATOR_API_KEY", "sk-rag")  # the more specific one wins
    http_generator(settings, server).generate(QUESTION, options(settings, 2, stop=("\n\n",)))
    request = server.requests[-1]
    assert request["authorization"] == "Bearer sk-rag"
    body = request["body"]
    assert body["model"] == SERVED and body["messages"] == [{"role": "user", "content": QUESTION[0].content}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 2 and body["temperature"] == 0 and body["repetition_penalty"] == 1.1
    assert body["stop"] == ["\n\n"]


def test_http_without_usage_counts_locally(
    settings: Settings, server: ChatServer, local_generator: TransformersGenerator
) -> None:
    server.send_usage = False
    _, stats = http_generator(settings, server).generate(QUESTION, options(settings))
    served = server.served.get(timeout=5)
    assert stats.prompt_tokens == served.prompt_tokens == local_generator.count_prompt_tokens(QUESTION)
    # The server counts an end-of-sequence token the text does not show.
    assert served.completion_tokens - 1 <= stats.completion_tokens <= served.completion_tokens


def test_http_closing_the_stream_aborts_the_request_on_the_server(settings: Settings, server: ChatServer) -> None:
    stream = http_generator(settings, server).stream(STORY, options(settings, LONG))
    for _ in stream:
        stream.close()
    served = server.served.get(timeout=30)  # the server saw the connection close and stopped its generation
    assert served.completion_tokens < LONG


def test_http_server_down_names_the_url(settings: Settings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    gen_settings = http_settings(settings, url, context_window=2048)
    generator = OpenAICompatibleGenerator(gen_settings, cache_dir=settings.cache_dir)
    with pytest.raises(GenerationError, match=f"cannot connect .*{url}/chat/completions"):
        generator.generate(QUESTION, options(settings))
    with pytest.raises(GenerationError, match=f"{url}/models"):
        generator.warm_up()


def test_http_error_status_carries_the_server_message(settings: Settings, server: ChatServer) -> None:
    server.fail = (500, {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}})
    with pytest.raises(GenerationError, match=r"/v1/chat/completions answered HTTP 500 .*: CUDA out of memory; .*logs"):
        http_generator(settings, server).generate(QUESTION, options(settings))
    server.fail = None
    with pytest.raises(GenerationError, match=r"HTTP 404 .*The model `other` does not exist.*generator\.model"):
        http_generator(settings, server, model="other", context_window=2048).generate(QUESTION, options(settings))


def test_http_error_in_the_stream_is_raised(settings: Settings, server: ChatServer) -> None:
    server.fail_mid_stream = {"error": {"message": "engine died", "code": 500}}
    stream = http_generator(settings, server).stream(QUESTION, options(settings))
    with pytest.raises(GenerationError, match="failed mid-answer: engine died"):
        stream.read()
    assert stream.text == "Once"


def test_http_missing_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"generator\.url is not set"):
        build_generator(load_settings(None, [f"data_dir={tmp_path}", "generator.kind=openai"]))
    with pytest.raises(ConfigError, match=r"generator\.url='vllm:8000' is not an http\(s\) URL"):
        OpenAICompatibleGenerator(GeneratorSettings.model_validate({"kind": "openai", "url": "vllm:8000"}))


def test_http_warm_up_checks_the_served_model(settings: Settings, server: ChatServer) -> None:
    http_generator(settings, server).warm_up()
    with pytest.raises(ConfigError, match=f"generator.model='llama' is not served by .*: it serves {SERVED};"):
        http_generator(settings, server, model="llama").warm_up()


def test_http_context_window_sources(settings: Settings, server: ChatServer) -> None:
    assert http_generator(settings, server, context_window=1024).context_window == 1024  # the setting wins
    server.report_max_model_len = False  # as llama.cpp and TGI: the documented default
    assert http_generator(settings, server).context_window == 4096


def test_http_prompt_over_the_window_is_a_usage_error(settings: Settings, server: ChatServer) -> None:
    with pytest.raises(UsageError, match="takes 256"):
        http_generator(settings, server, context_window=256).generate([Message("user", "word " * 400)])
    assert server.requests == []  # refused before asking the server


def test_http_bundled_tokenizer_is_saved_once_and_counts_like_the_model(
    settings: Settings, tmp_path: Path, local_generator: TransformersGenerator
) -> None:
    from transformers import AutoTokenizer

    text = "Qdrant stores 1,024-dimensional vectors; éèà 東京"
    generator = OpenAICompatibleGenerator(http_settings(settings, "http://127.0.0.1:9/v1"), cache_dir=tmp_path)
    estimate = generator.count_tokens(text)  # read from the GGUF (8 s), then saved
    exact = local_generator.count_tokens(text)
    assert estimate == math.ceil(exact * ESTIMATE_MARGIN)  # the documented margin over the exact count
    saved = list((tmp_path / "tokenizers").iterdir())
    assert [p.is_dir() for p in saved] == [True]
    reloaded = AutoTokenizer.from_pretrained(saved[0])
    assert len(reloaded(text, add_special_tokens=False)["input_ids"]) == exact
