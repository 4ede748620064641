#!/usr/bin/env bash
# Sets up the project and runs the whole test suite offline (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1
export TOKENIZERS_PARALLELISM=false
.venv/bin/python -m ruff check rag ingest eval ui bench tests
.venv/bin/python -m mypy rag ingest eval
.venv/bin/python -m pytest -q "$@"
