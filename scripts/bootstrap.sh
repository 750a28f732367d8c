#!/usr/bin/env bash
# Create .venv with everything the project needs, at the versions pinned in
# requirements/constraints.txt. Idempotent: skips the install when pyproject.toml and the
# constraints are unchanged since the last successful run. torch is installed first, pinned to
# 2.13.0, so that the project's torch range cannot pick another build; on PyPI that is a CUDA
# build (~3 GB with its nvidia-* wheels), which runs on the CPU where no GPU is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.p2pk-installed
want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setting up .venv (first time: about 2 minutes)" >&2
# pip notes about index locations this machine lacks are noise; real errors still show.
quiet_pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -c requirements/constraints.txt "torch==2.13.0"
quiet_pip install --quiet -c requirements/constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
