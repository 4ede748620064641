#!/usr/bin/env bash
# Sets up the project and runs the whole test suite offline (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser test drives Debian's chromium (Playwright cannot download its own browsers offline).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: could not install chromium; tests/ui/test_browser.py will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1
export TOKENIZERS_PARALLELISM=false
.venv/bin/python -m ruff check rag ingest eval ui bench tests
.venv/bin/python -m mypy rag ingest eval ui
.venv/bin/python -m pytest -q "$@"
