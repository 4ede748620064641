"""Text generation behind one interface: a local transformers model (GGUF or folder, CPU or CUDA) or an
OpenAI-compatible server. Both stream text deltas and report token counts and time to first token.

`base` holds what backends share; one module per backend (`transformers`, `openai`), neither importing the other;
`rag.models` resolves where weights come from. Everything importable from `rag.generation` before the split still is.
"""

from __future__ import annotations

from typing import Any

from rag.config import GeneratorSettings
from rag.errors import ConfigError
from rag.generation.base import GenerationOptions as GenerationOptions
from rag.generation.base import GenerationStats as GenerationStats
from rag.generation.base import Generator as Generator
from rag.generation.base import Message as Message
from rag.generation.base import Role as Role
from rag.generation.base import TokenStream as TokenStream
from rag.generation.base import chat_prompt_ids as chat_prompt_ids
from rag.generation.transformers import TransformersGenerator as TransformersGenerator
from rag.models import BUNDLED_GGUF as BUNDLED_GGUF
from rag.models import ModelSource as ModelSource
from rag.models import gguf_cache_dir as gguf_cache_dir
from rag.models import resolve_generator_source as resolve_generator_source


def build_generator(settings: Any) -> Generator:
    """The configured generator (settings: the whole `Settings`)."""
    gen: GeneratorSettings = settings.generator
    if gen.kind == "transformers":
        return TransformersGenerator(gen, settings.cache_dir, settings.models_dir)
    if gen.kind == "openai":
        from rag.generation.openai import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(gen, settings.cache_dir)
    raise ConfigError(f"generator.kind={gen.kind!r} is not one of transformers, openai")
