#!/usr/bin/env bash
# Sets up the project, ingests the sample documents into the embedded store and retrieves for a question.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1
DOCS=../shared/data/unstructured-example-docs/docs
QUESTION=${QUESTION:-"Who won the Stanley Cup?"}
if [ ! -d "$DOCS" ]; then
  DOCS=samples
  QUESTION=${QUESTION_SAMPLES:-"How many days of paid leave do employees get?"}
fi
# Exit code 1 only means some files could not be ingested; they are listed above it.
.venv/bin/rag ingest "$DOCS" || [ $? -eq 1 ]
.venv/bin/rag query "$QUESTION" --top-k 5
