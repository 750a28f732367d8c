#!/usr/bin/env bash
# Set everything up and run the main job: a local P2PK-SMOTE experiment on built-in non-IID data,
# one worker process per client exchanging through a directory store. Prints a comparison table
# and writes results/figures under runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/p2pk run examples/quickstart.yaml --out runs/quickstart "$@"
