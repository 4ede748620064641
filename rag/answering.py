"""Question in, cited answer out: condense a follow-up, retrieve, check the evidence, prompt, stream, cite.

`RagPipeline.stream` does everything up to the first token eagerly (so errors surface at once and the sources
can be shown before the text), then streams the answer; `RagPipeline.ask` is the same, collected.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rag.access.principal import Principal
from rag.citations import CITATION, CitationFilter
from rag.config import Settings
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import UsageError
from rag.extract import Extraction, extract_answer
from rag.generation import GenerationOptions, Generator, Message, TokenStream
from rag.modes import AnswerMode, resolve_mode
from rag.prompting import REFUSAL, Prompt, build_prompt, neutralize
from rag.retrieval import QdrantHybridRetriever, search
from rag.store.base import Filter
from rag.support import check_answer
from rag.text import content_tokens, tokens
from rag.types import Answer as Answer
from rag.types import Citation as Citation
from rag.types import Mode, PromptChunk, Retrieval, RetrievedChunk, SentenceSupport, source_label
from rag.types import Turn as Turn

# How models say "not in the documents" in their own words; matched on the start of the answer.
_MODEL_REFUSAL = re.compile(
    "|".join(
        [
            r"^\W*the (provided |given )?(documents?|context|passages?|sources?|texts?) (do|does) not "
            r"(say|mention|contain|provide|state|include|specify)",
            r"^\W*(i'?m sorry|sorry)?,? ?(but )?i (do not|don't|cannot|can't) (know|find|answer)",
            r"^\W*there is no (information|mention)",
            r"^\W*no information (is )?(given|provided|available)",
            r"^\W*(this|that|the answer) is not (in|mentioned in|stated in|provided in) the (documents?|context)",
        ]
    ),
    re.I,
)


# Words that point back into the conversation ("it", "those", "the same"), and openings that continue it ("and ...",
# "what about ..."); English, plus the commonest German, French and Spanish ones. Words as often used without a
# referent ("there is", "the policy that", "this year", "one office") are left out: they are no evidence.
_REFERRING_TEXT = """it its they them their theirs these those he she him her same former latter previous earlier
    ihr diese dieser il elle ils elles cela ça celui celle ceux ello ella ellos ellas eso esa ese esto"""
_REFERRING = frozenset(_REFERRING_TEXT.split())
_CONTINUING = ("and ", "but ", "or ", "also ", "so ", "then ", "what about", "how about", "und ", "et ", "y ")


def follows_up(question: str, previous: str) -> bool:
    """Whether `question` leans on the previous question: it refers back ("it", "those"), continues it ("And ...",
    "What about ..."), shares a topic word with it, or is too short to stand alone (under three content words).

    "Who won the 2014 world cup?" after a question on paid leave is none of these: it is searched on its own, so
    an off-topic follow-up is refused instead of answered with the previous topic's passage.
    """
    text = " ".join(question.lower().split())
    words = set(tokens(question))
    if text.startswith(_CONTINUING) or words & _REFERRING:
        return True
    own = content_tokens(question)
    return len(own) < 3 or bool(own & content_tokens(previous))


def make_citations(numbers: Sequence[int], chunks: Sequence[PromptChunk]) -> tuple[Citation, ...]:
    by_number = {c.number: c for c in chunks}
    out = []
    for n in numbers:
        c = by_number[n].chunk
        p = c.payload
        out.append(
            Citation(
                number=n,
                chunk_id=c.id,
                document_id=c.document_id,
                source=str(p.get("source", "")),
                label=source_label(c),
                pages=tuple(int(x) for x in p.get("pages") or []),
                section=tuple(str(s) for s in p.get("section_path") or []),
                char_start=p.get("char_start"),
                char_end=p.get("char_end"),
            )
        )
    return tuple(out)


class SentenceVectors:
    """Sentence embeddings kept in memory (LRU): a chunk's sentences are embedded once, not on every question.

    Quoting embeds every sentence of the retrieved chunks (~40 for 5 chunks, ~0.3 s on a 2-core CPU); popular
    chunks come back question after question, and the checker embeds the same source sentences again.
    """

    def __init__(self, embed: Any, size: int = 50_000) -> None:
        self._embed = embed
        self._size = size
        self._vectors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np

        if not texts:
            return self._embed([])  # (0, dimension), as the embedder gives it
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        fresh = self._embed(missing) if missing else []
        with self._lock:
            for text, vector in zip(missing, fresh, strict=True):
                self._vectors[text] = vector
            for text in texts:
                self._vectors.move_to_end(text)
            while len(self._vectors) > self._size:
                self._vectors.popitem(last=False)
            return np.stack([self._vectors[t] for t in texts])


# One cache per embedder object: the chat app builds a pipeline per question around shared models.
_VECTORS: weakref.WeakKeyDictionary[Any, SentenceVectors] = weakref.WeakKeyDictionary()
_VECTORS_LOCK = threading.Lock()


def sentence_vectors(embedder: Any) -> SentenceVectors:
    with _VECTORS_LOCK:
        if embedder not in _VECTORS:
            _VECTORS[embedder] = SentenceVectors(embedder.embed_documents)
        return _VECTORS[embedder]


def is_model_refusal(text: str) -> bool:
    return text.strip().startswith(REFUSAL[:-1]) or bool(_MODEL_REFUSAL.search(text.strip()))


class AnswerCache:
    """Answers on disk, keyed on everything that decides them; an ingest bumps the index version and so the key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / key[:2] / f"{key}.json"
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a torn write from a crash: treated as a miss and overwritten
        return data

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.folder / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, default=str), encoding="utf-8")
        tmp.replace(path)


@dataclass
class AnswerStream:
    """Iterate for the answer's text deltas (citations already checked); `answer` is set when iteration ends."""

    question: str
    query: str
    retrieval: Retrieval
    prompt: Prompt | None
    evidence: float | None
    _deltas: Iterator[str]
    _finish: Any  # Callable[[str], Answer]
    answer: Answer | None = None
    text: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    sources: tuple[PromptChunk, ...] = ()  # the numbered chunks when there is no prompt (quoted answers)
    _tokens: TokenStream | None = None  # the generator's own stream, when the model runs

    @property
    def chunks(self) -> tuple[PromptChunk, ...]:
        return self.prompt.chunks if self.prompt else self.sources

    def close(self) -> None:
        """Abandon the answer (a client left): the model stops at its next token and is free for the next question.

        Call it from the thread that iterates, or when no iteration is running (a running generator cannot be
        closed). Without it the generator holds its lock until the stream is garbage-collected.
        """
        for chain in (self._deltas, self._tokens.deltas if self._tokens is not None else None):
            closer = getattr(chain, "close", None)
            if closer is not None:
                closer()
        if self._tokens is not None:
            self._tokens.close()

    def __iter__(self) -> Iterator[str]:
        for delta in self._deltas:
            self.text += delta
            yield delta
        self.answer = self._finish(self.text)

    def read(self) -> Answer:
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer


class RagPipeline:
    """Retriever + optional reranker + generator, with the answer settings; one instance serves many questions."""

    def __init__(
        self,
        retriever: QdrantHybridRetriever,
        generator: Generator,
        settings: Settings,
        reranker: Any = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.reranker = reranker
        self.settings = settings
        self.cache = (
            cache
            if cache is not None or not settings.answer.cache
            else AnswerCache(retriever.handle.answers_dir(settings.cache_dir))
        )
        self._mode: AnswerMode | None = None  # resolved on first use; needs no model load
        self.sentence_vectors = sentence_vectors(self.embedder)

    @property
    def embedder(self) -> SentenceTransformerEmbedder:
        return self.retriever.embedder

    @property
    def principal(self) -> Principal:
        """Who this pipeline answers: retrieval, evidence and the cache see only that caller's documents."""
        return self.retriever.principal

    def for_principal(self, principal: Principal) -> RagPipeline:
        """This pipeline for another caller: the same models, cache and settings, that caller's view of the store."""
        return RagPipeline(
            self.retriever.for_principal(principal), self.generator, self.settings, self.reranker, self.cache
        )

    # -- stages ---------------------------------------------------------------------------
    @property
    def mode(self) -> AnswerMode:
        """'extract' or 'generate', as answer.mode resolves for this pipeline's generator (decided once)."""
        if self._mode is None:
            self._mode = resolve_mode(self.generator, self.settings)
        return self._mode

    def condense(self, question: str, history: Sequence[Turn]) -> str:
        """A follow-up rewritten into a question that stands alone, from the last few turns.

        With a capable generator the model rewrites it; the rewrite is kept only if it is a question that shares a
        topic word with the conversation. Otherwise (and always when answers are quoted, so no model is loaded for
        it) retrieval searches with the previous question followed by the follow-up. A question that does not lean
        on the conversation (`follows_up`) is searched as asked.
        """
        turns = list(history)[-self.settings.answer.history_turns :] if self.settings.answer.history_turns else []
        if not turns or not follows_up(question, turns[-1].question):
            return question  # a question that stands alone is searched alone, never mixed with the last topic
        fallback = f"{turns[-1].question} {question}"
        if self.mode == "extract":
            return fallback
        lines = []
        for t in turns:
            lines.append(f"User: {neutralize(t.question)[:500]}")
            lines.append(f"Assistant: {neutralize(t.answer)[:500]}")
        messages = [
            Message(
                "system",
                "Rewrite the user's follow-up question so it can be understood without the conversation: "
                "replace pronouns and references with what they refer to. Output only the rewritten question.",
            ),
            Message("user", "Conversation:\n" + "\n".join(lines) + f"\n\nFollow-up question: {neutralize(question)}"),
        ]
        options = GenerationOptions.from_settings(self.settings.generator, max_new_tokens=64, temperature=0.0)
        text, _ = self.generator.generate(messages, replace(options, stop=("\n",)))
        rewritten = text.strip().strip('"').strip()
        # A small model often answers instead of rewriting, or drifts to another topic (measured with SmolLM2-135M
        # in the chat app): keep the rewrite only if it reads as a question about what was being discussed.
        topic = content_tokens(" ".join([question, *(t.question for t in turns)]))
        if not rewritten.endswith("?") or len(rewritten) > 4 * len(question) + 200:
            return fallback
        if not content_tokens(rewritten) & topic:
            return fallback
        return rewritten

    def evidence(self, query: str, chunks: Sequence[RetrievedChunk], query_vector: Any = None) -> float | None:
        """How well the best chunk matches: the reranker score, or the embedder's cosine of query and chunk.

        `query_vector` is the query's embedding when retrieval already computed it (hybrid and dense modes).
        """
        if not chunks:
            return None
        if self.settings.answer.evidence == "rerank":
            scores = [c.stage_scores["rerank"] for c in chunks if "rerank" in c.stage_scores]
            return max(scores) if scores else None
        import numpy as np

        q = query_vector if query_vector is not None else self.embedder.embed_query(query)
        handle = self.retriever.handle
        # The stored vectors are the ones retrieval matched; reading them costs ~1 ms, re-embedding the
        # chunks ~1 s on a 2-core CPU (bench/generate.py). Chunks from elsewhere are embedded.
        stored = handle.store.dense_vectors(handle.name, [c.id for c in chunks])
        missing = [c.text for c in chunks if c.id not in stored]
        rows = [np.asarray(v, dtype=np.float32) for v in stored.values()]
        if missing:
            rows.extend(self.embedder.embed_documents(missing))
        docs = np.stack(rows)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True) + 1e-12
        return float(np.max(docs @ q))

    def _cache_key(self, query: str, filters: Filter | None, top_k: int, mode: str, rerank: bool, opts: Any) -> str:
        handle = self.retriever.handle
        return AnswerCache.key(
            {
                "query": query,
                "collection": handle.name,
                "content": handle.content_key(),  # uid + index version: unique across delete and re-create
                # The groups whose documents the answer could draw on: another caller's answer is never served.
                "access": handle.principal.cache_scope(),
                "filters": repr(filters),
                "top_k": top_k,
                "mode": mode,
                "rerank": bool(rerank and self.reranker is not None),
                "reranker": getattr(self.reranker, "name", None),
                "blend": getattr(self.reranker, "blend", None),
                "rerank_settings": self.settings.rerank.model_dump(),
                "retrieval": self.settings.retrieval.model_dump(),
                "answer": self.settings.answer.model_dump(),
                "generator": self.generator.identity(),
                "options": asdict(opts),
            }
        )

    def quote(self, query: str, retrieval: Retrieval, chunks: Sequence[PromptChunk]) -> Extraction:
        """The best sentences of `chunks` for `query`, verbatim (answer.quote_* settings)."""
        a = self.settings.answer
        query_vector = retrieval.query_vector
        if query_vector is None:  # a fallback from generation with answer.evidence=rerank in sparse mode
            query_vector = self.embedder.embed_query(query)
        return extract_answer(
            query,
            [(c.number, c.text) for c in chunks],
            self.sentence_vectors,
            query_vector,
            dense_weight=a.quote_dense_weight,
            max_quotes=a.quote_sentences,
            max_chars=a.quote_chars,
            keep_ratio=a.quote_keep_ratio,
            rank_weight=a.quote_rank_weight,
            same_chunk_bonus=a.quote_same_chunk,
            expansion=retrieval.expansion,
            amount_weight=a.quote_amount_weight,
        )

    def check(self, text: str, chunks: Sequence[PromptChunk]) -> tuple[SentenceSupport, ...]:
        """Every sentence of a generated answer against the chunks it cites (all of them when it cites none)."""
        return check_answer(
            text,
            # The stored text, not the prompt's copy (instruction-like text replaced, cut to fit): spans are offsets
            # the UI highlights in the chunk, and a claim is checked against what the document says.
            {c.number: c.chunk.text for c in chunks},
            embed=self.sentence_vectors,
            min_score=self.settings.answer.verify_min_support,
        )

    def _quoted(
        self,
        question: str,
        query: str,
        retrieval: Retrieval,
        evidence: float | None,
        timings: dict[str, float],
        chunks: tuple[PromptChunk, ...] | None = None,
        removed: tuple[SentenceSupport, ...] = (),
    ) -> Answer:
        """A quoted answer, or the refusal when no sentence answers well enough (reason 'answerability')."""
        if chunks is None:
            top = retrieval.chunks[: self.settings.answer.max_chunks]
            chunks = tuple(PromptChunk(i + 1, c, c.text, False) for i, c in enumerate(top))
        else:  # a fallback from generation: quote the stored text under the prompt's numbers, never its edited copy
            chunks = tuple(PromptChunk(c.number, c.chunk, c.chunk.text, False) for c in chunks)
        t = time.perf_counter()
        extraction = self.quote(query, retrieval, chunks)
        timings["extract"] = (time.perf_counter() - t) * 1000
        threshold = self.settings.answer.min_answerability
        score = extraction.best_score
        if not extraction.quotes or (threshold is not None and score < threshold):
            return Answer(
                question, query, REFUSAL, True, "answerability", (), chunks, retrieval.chunks, evidence, 0,
                dict(timings), 0, 0, "quoted", mode="extract", removed=removed, answerability=score,
            )  # fmt: skip
        cited = list(dict.fromkeys(q.number for q in extraction.quotes))
        return Answer(
            question, query, extraction.text, False, None, make_citations(cited, chunks), chunks, retrieval.chunks,
            evidence, 0, dict(timings), 0, 0, "quoted", mode="extract", quotes=extraction.quotes, removed=removed,
            answerability=score,
        )  # fmt: skip

    def _verified(self, answer: Answer, retrieval: Retrieval, timings: dict[str, float]) -> Answer:
        """answer.verify applied to a generated answer: flag unsupported sentences, or remove them (strict)."""
        if answer.refused:
            return answer
        if not re.search(r"\w", CITATION.sub("", answer.text)):
            # An empty answer, or one that is only citation markers, says nothing: quote the sources instead.
            return self._quoted(answer.question, answer.query, retrieval, answer.evidence, timings, answer.chunks)
        verify = self.settings.answer.verify
        if verify == "off":
            return answer
        t = time.perf_counter()
        support = self.check(answer.text, answer.chunks)
        timings["verify"] = (time.perf_counter() - t) * 1000
        if verify == "flag":
            return replace(answer, support=support, timings_ms=dict(timings))
        kept = [x for x in support if x.supported]
        removed = tuple(x for x in support if not x.supported)
        # Supported fragments that claim nothing ("Here is a sample response:") are no answer either.
        if not any(len(content_tokens(x.text)) >= 3 for x in kept):
            return self._quoted(
                answer.question, answer.query, retrieval, answer.evidence, timings, answer.chunks, removed
            )
        parts: list[str] = []
        rebased: list[SentenceSupport] = []
        offset = 0
        for x in kept:
            if parts:
                offset += 1
            rebased.append(replace(x, start=offset, end=offset + len(x.text)))
            parts.append(x.text)
            offset += len(x.text)
        text = " ".join(parts)
        cited = list(dict.fromkeys(n for x in kept for n in x.cited))
        return replace(
            answer, text=text, support=tuple(rebased), removed=removed,
            citations=make_citations(cited, answer.chunks), timings_ms=dict(timings),
        )  # fmt: skip

    # -- the whole pipeline -----------------------------------------------------------------
    def stream(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        filters: Filter | None = None,
        mode: Mode | None = None,
        rerank: bool = True,
        options: GenerationOptions | None = None,
    ) -> AnswerStream:
        opts = options or GenerationOptions.from_settings(self.settings.generator)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        query = self.condense(question, history)
        timings["condense"] = (time.perf_counter() - t0) * 1000
        top_k = self.settings.answer.max_chunks
        retrieval = search(self.retriever, self.reranker, query, top_k=top_k, mode=mode, filters=filters, rerank=rerank)
        timings["retrieve"] = sum(v for k, v in retrieval.timings_ms.items() if k != "rerank")
        if "rerank" in retrieval.timings_ms:
            timings["rerank"] = retrieval.timings_ms["rerank"]
        t1 = time.perf_counter()
        if retrieval.query_vector is None and retrieval.chunks and (
            self.settings.answer.evidence == "dense" or self.mode == "extract"
        ):
            # Sparse mode computed no query vector: embed the query once for the evidence and the quoting both.
            retrieval = replace(retrieval, query_vector=self.embedder.embed_query(query))
        evidence = self.evidence(query, retrieval.chunks, retrieval.query_vector)
        timings["evidence"] = (time.perf_counter() - t1) * 1000
        threshold = self.settings.answer.min_evidence
        answer_mode = self.mode
        model = self.generator.name if answer_mode == "generate" else "quoted"

        def refused(reason: str) -> AnswerStream:
            def finish(text: str) -> Answer:
                return Answer(
                    question, query, text, True, reason, (), (), retrieval.chunks, evidence, 0, timings, 0, 0, model,
                    mode=answer_mode,
                )  # fmt: skip

            return AnswerStream(question, query, retrieval, None, evidence, iter([REFUSAL]), finish, timings_ms=timings)

        if not retrieval.chunks:
            handle = self.retriever.handle
            if filters is None and handle.store.count(handle.name) == 0:
                raise UsageError(f"collection {handle.name!r} is empty: add documents with `rag ingest PATH`")
            return refused("no-documents")
        if threshold is not None and evidence is not None and evidence < threshold:
            return refused("evidence")

        if answer_mode == "extract":
            quoted = self._quoted(question, query, retrieval, evidence, timings)
            return AnswerStream(
                question, query, retrieval, None, evidence, iter([quoted.text]), lambda _text: quoted,
                timings_ms=timings, sources=quoted.chunks,
            )  # fmt: skip

        t2 = time.perf_counter()
        prompt = build_prompt(query, retrieval.chunks, self.generator, self.settings.answer, opts.max_new_tokens)
        timings["prompt"] = (time.perf_counter() - t2) * 1000

        # Sampled answers are meant to differ between calls: only greedy ones are cached.
        cacheable = self.cache is not None and opts.temperature == 0
        key = self._cache_key(query, filters, top_k, retrieval.mode, rerank, opts) if cacheable else None
        hit = self.cache.get(key) if self.cache and key else None
        citation_filter = CitationFilter(prompt.numbers)
        tokens: TokenStream | None = None
        if hit is not None:
            deltas: Iterator[str] = iter([str(hit["text"])])
        else:
            tokens = self.generator.stream(prompt.messages, opts)
            deltas = citation_filter.filter(tokens)

        def generated(text: str) -> Answer:
            if hit is not None:
                return Answer(
                    question, query, text, bool(hit["refused"]), hit["refusal_reason"],
                    make_citations(hit["cited"], prompt.chunks), prompt.chunks, retrieval.chunks, evidence,
                    int(hit["dropped"]), {**timings, "generate": 0.0}, prompt.prompt_tokens,
                    int(hit["completion_tokens"]), model, cached=True,
                )  # fmt: skip
            assert tokens is not None
            stats = tokens.stats
            timings["ttft"] = stats.ttft_ms
            timings["generate"] = stats.total_ms
            model_refused = is_model_refusal(text)
            answer = Answer(
                question, query, text.strip(), model_refused, "model" if model_refused else None,
                make_citations(citation_filter.cited, prompt.chunks), prompt.chunks, retrieval.chunks, evidence,
                citation_filter.dropped, dict(timings), stats.prompt_tokens, stats.completion_tokens, model,
            )  # fmt: skip
            if self.cache is not None and key is not None and stats.finish_reason in ("stop", "length"):
                self.cache.put(
                    key,
                    {
                        "text": answer.text,
                        "refused": answer.refused,
                        "refusal_reason": answer.refusal_reason,
                        "cited": citation_filter.cited,
                        "dropped": citation_filter.dropped,
                        "completion_tokens": stats.completion_tokens,
                    },
                )
            return answer

        if self.settings.answer.verify != "strict":
            return AnswerStream(
                question, query, retrieval, prompt, evidence, deltas,
                lambda text: self._verified(generated(text), retrieval, timings), timings_ms=timings, _tokens=tokens,
            )  # fmt: skip

        # strict: nothing unchecked is shown, so the text comes whole once every sentence has been checked.
        final: list[Answer] = []

        def checked() -> Iterator[str]:
            final.append(self._verified(generated("".join(deltas)), retrieval, timings))
            yield final[0].text

        return AnswerStream(
            question, query, retrieval, prompt, evidence, checked(), lambda _text: final[0], timings_ms=timings,
            _tokens=tokens,
        )  # fmt: skip

    def ask(self, question: str, **kwargs: Any) -> Answer:
        return self.stream(question, **kwargs).read()
