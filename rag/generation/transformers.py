"""A causal LM run in this process by transformers: a GGUF (dequantized once and cached) or a model folder, on CPU
or CUDA, optionally 4/8-bit quantized or with a peft adapter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import GeneratorSettings
from rag.errors import ConfigError, GenerationError, MissingDependencyError, UsageError, require_extra
from rag.generation.base import GenerationOptions, Generator, Message, TokenStream, chat_prompt_ids
from rag.models import gguf_cache_dir, resolve_device, resolve_generator_source

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
        require_extra("peft", "finetune", "generator.adapter")
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
