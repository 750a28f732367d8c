#!/usr/bin/env bash
# Create .venv with everything the project needs (idempotent). CPU torch is installed first,
# pinned, so that the project's torch range does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
