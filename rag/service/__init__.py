"""`rag serve`: one process that owns the store and the models and answers over HTTP (OpenAI-compatible chat).

Needs the `serve` extra (fastapi, uvicorn, prometheus-client); nothing here is imported by the rest of `rag`.
"""

from __future__ import annotations

from rag.service.app import create_app as create_app
