"""Kept so `from rag.generation_openai import ...` still works: the backend lives in `rag.generation.openai`."""

from __future__ import annotations

from rag.generation.openai import API_KEY_VARS as API_KEY_VARS
from rag.generation.openai import CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S
from rag.generation.openai import DEFAULT_CONTEXT_WINDOW as DEFAULT_CONTEXT_WINDOW
from rag.generation.openai import ESTIMATE_MARGIN as ESTIMATE_MARGIN
from rag.generation.openai import OpenAICompatibleGenerator as OpenAICompatibleGenerator
