#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs mmar with the pinned dependency set
# (requirements.lock, generated from pyproject.toml by `uv pip compile`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.8"
.venv/bin/python -m uv pip install -q --python .venv/bin/python -r requirements.lock
.venv/bin/python -m uv pip install -q --python .venv/bin/python --no-deps -e .
