"""The package as a user installs it: a wheel in a fresh virtual environment, run outside the checkout.

The fresh environment reaches the project's installed dependencies through a `.pth` line and pip builds with
`--no-deps --no-build-isolation --no-index`, so the test is offline and takes seconds; only the project itself
comes from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAG_CONFIG", "VIRTUAL_ENV")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_installed_wheel_resolves_bundled_profiles(tmp_path: Path) -> None:
    # The sources as the Dockerfile copies them: what is not in these folders is not in the wheel.
    src = tmp_path / "src"
    for name in ("rag", "ingest", "eval", "ui"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], tmp_path).strip())
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*pip, str(src)], tmp_path)
    shutil.rmtree(src)  # nothing may be read from the sources any more

    where = _run([str(python), "-c", "import rag.config as c; print(c.__file__); print(c.PROFILES_DIR)"], tmp_path)
    module, profiles = (Path(line) for line in where.split())
    assert module.is_relative_to(site), f"rag was imported from {module}, not from the installed wheel"
    bundled = sorted(p.name for p in profiles.glob("*.yaml"))
    assert bundled == ["default.yaml", "finetune-cpu.yaml", "gpu.yaml", "test.yaml"], bundled
    expands = "from rag.glossary import Glossary; print(Glossary.load(['finance']).expand('capex').text)"
    assert "purchases of property, plant and equipment" in _run([str(python), "-c", expands], tmp_path)

    shown = json.loads(_run([str(env_dir / "bin" / "rag"), "--config", "gpu", "config", "show", "--json"], tmp_path))
    # Values that only the gpu profile sets (the defaults: embedder.device auto, store.kind auto, ingest.workers -1).
    assert (shown["embedder.device"], shown["store.kind"], shown["ingest.workers"]) == ("cuda", "server", 6)
