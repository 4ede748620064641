"""The transformers generator: GGUF conversion cache, device and precision checks, LoRA adapters, bad input.

Backend-independent behaviour (streaming, stats, stop strings) is in test_generator_contract.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag.config import GeneratorSettings, load_settings
from rag.errors import ConfigError, UsageError
from rag.generation import GenerationOptions, Message, TransformersGenerator, build_generator, gguf_cache_dir

PROMPT = [Message("user", "Name a colour of the sky. One word.")]
SHORT = GenerationOptions(max_new_tokens=8)


def test_the_gguf_is_converted_once_and_reloaded_from_the_cache(generator: Any) -> None:
    converted = gguf_cache_dir(generator.source, generator.cache_dir)
    assert (converted / "config.json").is_file() and list(converted.glob("*.safetensors"))
    again = TransformersGenerator(generator.settings, generator.cache_dir)
    assert again.generate(PROMPT, SHORT)[0] == generator.generate(PROMPT, SHORT)[0]
    assert again.context_window == generator.context_window == 8192
    assert again.device == "cpu"


def test_a_lora_adapter_is_attached_by_setting(generator: Any, tmp_path: Path) -> None:
    """A fresh LoRA (B = 0) leaves the output unchanged: served text equals the base model's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    converted = gguf_cache_dir(generator.source, generator.cache_dir)
    base = AutoModelForCausalLM.from_pretrained(converted)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    settings = generator.settings.model_copy(update={"adapter": str(tmp_path / "adapter")})
    served = TransformersGenerator(settings, generator.cache_dir)
    assert type(served.model).__name__.startswith("PeftModel")
    assert served.generate(PROMPT, SHORT)[0] == generator.generate(PROMPT, SHORT)[0]
    assert served.identity()["adapter"] == str(tmp_path / "adapter")


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"precision": "fp16"}, "generator.precision"),
        ({"quantization": "4bit"}, "generator.quantization"),
        ({"device": "cuda"}, "generator.device"),
    ],
)
def test_cuda_only_options_on_a_cpu_machine_name_the_setting(
    change: dict[str, str], setting: str, generator: Any
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    gen = TransformersGenerator(generator.settings.model_copy(update=change), generator.cache_dir)
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        gen.warm_up()


def test_a_missing_model_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"generator\.model=.*does not exist"):
        TransformersGenerator(GeneratorSettings(model=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(ConfigError, match="only bundled generator"):
        TransformersGenerator(GeneratorSettings(model="bundled:gpt-5"), tmp_path)


def test_a_gguf_of_an_unsupported_architecture_is_a_clear_error(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "notanarch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    gen = TransformersGenerator(GeneratorSettings(model=str(path)), tmp_path)
    with pytest.raises(ConfigError, match="notanarch"):
        gen.warm_up()


def test_an_adapter_folder_without_adapter_config_is_refused(generator: Any, tmp_path: Path) -> None:
    settings = generator.settings.model_copy(update={"adapter": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"generator\.adapter"):
        TransformersGenerator(settings, generator.cache_dir).warm_up()


def test_a_prompt_longer_than_the_window_is_a_usage_error(generator: Any) -> None:
    small = TransformersGenerator(generator.settings.model_copy(update={"context_window": 256}), generator.cache_dir)
    with pytest.raises(UsageError, match=r"answer\.context_tokens"):
        small.generate([Message("user", "word " * 400)], SHORT)


def test_build_generator_maps_kinds(tmp_path: Path) -> None:
    settings = load_settings("test", [f"data_dir={tmp_path}"])
    assert isinstance(build_generator(settings), TransformersGenerator)
    with pytest.raises(ConfigError, match=r"generator\.url"):
        build_generator(load_settings("test", [f"data_dir={tmp_path}", "generator.kind=openai"])).warm_up()


@pytest.mark.gpu
def test_cuda_runs_in_bf16(generator: Any) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    gen = TransformersGenerator(generator.settings.model_copy(update={"device": "cuda"}), generator.cache_dir)
    assert gen.model.dtype in (torch.bfloat16, torch.float16)
    assert gen.generate(PROMPT, SHORT)[0].strip()
