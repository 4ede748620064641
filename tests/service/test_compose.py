"""docker-compose.yml and the Dockerfile, read (Docker cannot run here): long-running api and ui services with
health checks, Qdrant and vLLM keys required and their ports unpublished, the image with the ui and serve extras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(compose["services"])


def test_api_and_ui_are_long_running_services(services: dict[str, Any]) -> None:
    for name, command in (("api", "serve"), ("ui", "ui"), ("api-gpu", "serve")):
        service = services[name]
        assert service["command"][:2] == ["rag", command], name  # not a one-shot `rag ingest`
        assert service["restart"] == "unless-stopped"
        assert "0.0.0.0" in service["command"], f"{name} must listen beyond the container's loopback"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/_stcore/health" in " ".join(services["ui"]["healthcheck"]["test"])
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["qdrant"]["condition"] == "service_healthy"


def test_every_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_only_the_api_and_ui_ports_are_published(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"api", "ui", "api-gpu"}
    assert "qdrant" not in published and "vllm" not in published
    for name in published:  # bound to the loopback unless the deployer says otherwise (a proxy in front)
        assert all(str(p).startswith("${") and "127.0.0.1" in str(p) for p in services[name]["ports"]), name


def test_keys_are_required_not_empty_by_default(services: dict[str, Any]) -> None:
    qdrant_key = services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
    assert qdrant_key.startswith("${QDRANT_API_KEY:?")  # compose refuses to start without it
    for name in ("api", "ui", "api-gpu"):
        assert services[name]["environment"]["QDRANT_API_KEY"].startswith("${QDRANT_API_KEY:?"), name
    assert services["vllm"]["environment"]["VLLM_API_KEY"].startswith("${VLLM_API_KEY:?")
    # api-gpu sends the same key vLLM requires.
    assert services["api-gpu"]["environment"]["RAG_GENERATOR_API_KEY"].startswith("${VLLM_API_KEY:?")


def test_the_image_installs_the_ui_and_serve_extras() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    install = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip install") and "[" in line)
    extras = install.split("[", 1)[1].split("]", 1)[0].split(",")
    assert {"ui", "serve"} <= set(extras)
    for package in ("rag", "ingest", "ui"):
        assert f"COPY {package} {package}" in dockerfile
    assert Path(REPO_ROOT / "ui" / "app.py").is_file()  # what `rag ui` runs in the image


def test_every_rag_variable_names_a_setting(services: dict[str, Any]) -> None:
    """RAG_SECTION__KEY variables reach the settings only when the names match: a renamed setting would be ignored."""
    from pydantic import BaseModel

    from rag.config import Settings, load_settings

    # Read by name, not settings: the profile, rag/client.py's URL and key, the generator's secret key.
    read_directly = {"RAG_CONFIG", "RAG_SERVER_URL", "RAG_API_KEY", "RAG_GENERATOR_API_KEY"}
    seen = set()
    for name, service in services.items():
        env = service.get("environment") or {}
        for key in env:
            if not key.startswith("RAG_") or key in read_directly:
                continue
            seen.add(key)
            model: type[BaseModel] = Settings
            parts = key[len("RAG_") :].lower().split("__")
            for i, part in enumerate(parts):
                assert part in model.model_fields, f"{name}: {key} names no setting ({part!r})"
                annotation = model.model_fields[part].annotation
                if i < len(parts) - 1:
                    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), f"{name}: {key}"
                    model = annotation
    assert "RAG_SERVICE__STREAM_SEND_TIMEOUT_S" in seen
    settings = load_settings("test", ["service.keep_alive_s=75"])
    assert settings.service.keep_alive_s == 75
