"""The generator as a llama-index LLM: same text as the generator itself, streaming, inside llama-index engines."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from rag.generation import GenerationOptions, Message
from rag.llama_index import GeneratorLLM

QUESTION = "What is the capital of France? Answer in one word."


def test_chat_matches_the_generator_and_streams_the_same_text(generator: Any) -> None:
    llm = GeneratorLLM(generator)
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You are brief."),
        ChatMessage(role=MessageRole.USER, content=QUESTION),
    ]
    response = llm.chat(messages, max_new_tokens=12)
    direct, _ = generator.generate(
        [Message("system", "You are brief."), Message("user", QUESTION)],
        GenerationOptions.from_settings(generator.settings, max_new_tokens=12),
    )
    assert response.message.content == direct and direct.strip()
    chunks = list(llm.stream_chat(messages, max_new_tokens=12))
    assert chunks[-1].message.content == direct
    assert "".join(c.delta or "" for c in chunks) == direct
    meta = llm.metadata
    assert meta.is_chat_model and meta.context_window == generator.context_window
    assert meta.model_name == generator.name


def test_it_runs_inside_a_llama_index_chat_engine(generator: Any) -> None:
    from llama_index.core.chat_engine import SimpleChatEngine

    engine = SimpleChatEngine.from_defaults(llm=GeneratorLLM(generator))
    reply = engine.chat(QUESTION)
    assert reply.response.strip()
    assert "paris" in reply.response.lower()
