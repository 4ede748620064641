"""Our retriever, reranker and generator as llama-index components, for use inside any llama-index app.

Chunks become `TextNode`s whose id is the Qdrant point id and whose metadata is
the chunk payload (source, pages, section path, offsets), so citations survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.generation import GenerationOptions, Generator, Message, Role
from rag.reranking import CrossEncoderReranker
from rag.retrieval import QdrantHybridRetriever
from rag.store.base import Filter
from rag.types import Mode, RetrievedChunk

_HIDDEN_METADATA = ("source_dirs", "chunk_hash", "content_hash", "ingested_at")


def to_node(chunk: RetrievedChunk) -> NodeWithScore:
    metadata = {k: v for k, v in chunk.payload.items() if k != "text"}
    node = TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata={**metadata, "stage_scores": dict(chunk.stage_scores)},
        excluded_embed_metadata_keys=[*metadata, "stage_scores"],
        excluded_llm_metadata_keys=[
            k
            for k in (*metadata, "stage_scores")
            if k in _HIDDEN_METADATA or k not in ("source_name", "pages", "section_path", "title")
        ],
    )
    return NodeWithScore(node=node, score=chunk.score)


def from_node(node: NodeWithScore) -> RetrievedChunk:
    metadata = dict(node.node.metadata)
    stage_scores = dict(metadata.pop("stage_scores", {}) or {})
    return RetrievedChunk(
        node.node.node_id, float(node.score or 0.0), {**metadata, "text": node.node.get_content()}, stage_scores
    )


class QdrantHybridLlamaRetriever(BaseRetriever):
    """llama-index `BaseRetriever` over `QdrantHybridRetriever` (hybrid, dense or sparse)."""

    def __init__(
        self,
        retriever: QdrantHybridRetriever,
        *,
        top_k: int | None = None,
        mode: Mode | None = None,
        filters: Filter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._inner = retriever
        self._top_k = top_k
        self._mode = mode
        self._filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self._inner.retrieve(
            query_bundle.query_str,
            top_k=self._top_k,
            mode=self._mode,
            filters=self._filters,
        )
        return [to_node(c) for c in result.chunks]


class CrossEncoderNodePostprocessor(BaseNodePostprocessor):
    """llama-index node postprocessor that reranks nodes with our cross-encoder."""

    top_k: int = 10
    _reranker: CrossEncoderReranker = PrivateAttr()

    def __init__(self, reranker: CrossEncoderReranker, top_k: int = 10, **kwargs: Any) -> None:
        super().__init__(top_k=top_k, **kwargs)  # type: ignore[call-arg]  # pydantic field
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "CrossEncoderNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("reranking needs the query")
        chunks = [from_node(n) for n in nodes]
        return [to_node(c) for c in self._reranker.rerank(query_bundle.query_str, chunks, self.top_k)]


_ROLES: dict[str, Role] = {
    MessageRole.SYSTEM.value: "system",
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
}


class GeneratorLLM(CustomLLM):
    """llama-index `LLM` over any of our generators: chat goes through the model's own chat template.

    llama-index's default `CustomLLM.chat` flattens messages into one prompt string; a chat model answers
    better with its own template, so `chat`/`stream_chat` are overridden to pass the turns through.
    """

    _generator: Generator = PrivateAttr()

    def __init__(self, generator: Generator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generator = generator

    @classmethod
    def class_name(cls) -> str:
        return "GeneratorLLM"

    @property
    def metadata(self) -> LLMMetadata:
        g = self._generator
        return LLMMetadata(
            context_window=g.context_window,
            num_output=g.settings.max_new_tokens,
            is_chat_model=True,
            model_name=g.name,
        )

    def _options(self, kwargs: dict[str, Any]) -> GenerationOptions:
        known = {"max_new_tokens", "temperature", "top_p", "top_k"}
        return GenerationOptions.from_settings(self._generator.settings, **{k: kwargs[k] for k in known & set(kwargs)})

    @staticmethod
    def _messages(messages: Sequence[ChatMessage]) -> list[Message]:
        out = []
        for m in messages:
            role = _ROLES.get(str(m.role.value if hasattr(m.role, "value") else m.role), "user")
            out.append(Message(role, m.content or ""))
        return out

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text, _ = self._generator.generate(self._messages(messages), self._options(kwargs))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = self._generator.stream(self._messages(messages), self._options(kwargs))

        def gen() -> ChatResponseGen:
            text = ""
            for delta in stream:
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text, _ = self._generator.generate([Message("user", prompt)], self._options(kwargs))
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        stream = self._generator.stream([Message("user", prompt)], self._options(kwargs))

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in stream:
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()
