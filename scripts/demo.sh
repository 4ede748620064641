#!/usr/bin/env bash
# The main job on the embedded defaults: set up, ingest the sample documents into Qdrant Edge on local disk,
# answer two questions with citations (quoted from the documents on the bundled model), then chat in the terminal
# (when run interactively).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1 TOKENIZERS_PARALLELISM=false
DOCS=${DOCS:-../shared/data/unstructured-example-docs/docs}
QUESTIONS=("How many days of paid leave do employees get?")  # samples/employee-handbook.md: 28 days
if [ -d "$DOCS" ]; then
  QUESTIONS+=("How many Stanley Cups have the Maple Leafs won?")  # stanley-cups.csv: 13
else
  DOCS=samples
fi
[ -z "${QUESTION:-}" ] || QUESTIONS=("$QUESTION")
# Exit code 1 only means some files could not be ingested; they are listed above it.
.venv/bin/rag ingest "$DOCS" samples || [ $? -eq 1 ]
for q in "${QUESTIONS[@]}"; do
  echo
  echo "Q: $q"
  .venv/bin/rag ask "$q"
done
if [ -t 0 ] && [ -t 1 ]; then
  echo
  echo "Now chatting with the documents (the browser app: .venv/bin/rag ui)."
  .venv/bin/rag chat
fi
