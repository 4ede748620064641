#!/usr/bin/env bash
# The main job on the embedded defaults: set up, ingest the sample documents into Qdrant Edge on local disk,
# answer one question with citations, then chat in the terminal (when run interactively).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1 TOKENIZERS_PARALLELISM=false
DOCS=${DOCS:-../shared/data/unstructured-example-docs/docs}
QUESTION=${QUESTION:-"Who won the Stanley Cup?"}
if [ ! -d "$DOCS" ]; then
  DOCS=samples
  QUESTION=${QUESTION_SAMPLES:-"How many days of paid leave do employees get?"}
fi
# Exit code 1 only means some files could not be ingested; they are listed above it.
.venv/bin/rag ingest "$DOCS" samples || [ $? -eq 1 ]
echo "Q: $QUESTION"
.venv/bin/rag ask "$QUESTION"
if [ -t 0 ] && [ -t 1 ]; then
  echo
  echo "Now chatting with the documents (the browser app: .venv/bin/rag ui)."
  .venv/bin/rag chat
fi
