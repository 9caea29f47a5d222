#!/usr/bin/env bash
# One command to set up slaprof for development: a virtual environment in .venv
# with slaprof installed editable, plus every test-only tool.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "slaprof is set up: .venv/bin/slaprof --help"
