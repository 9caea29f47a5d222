#!/usr/bin/env bash
# One command to set up slaprof for development: a virtual environment in .venv holding exactly
# the versions in uv.lock (hash-checked), slaprof installed editable, and every test tool.
# It fails when uv.lock no longer matches pyproject.toml: refresh it with images/lock.py --upgrade.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# uv itself comes from the lock: its pinned version and wheel hashes, installed with pip.
uv_requirement="$(mktemp)"
trap 'rm -f "$uv_requirement"' EXIT
.venv/bin/python images/lock.py --uv-requirement > "$uv_requirement"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$uv_requirement"

# Exactly the lock (--locked: refuse a lock that pyproject.toml has drifted from), every extra;
# bytecode compiled once here, so no command pays for it (PYTHONDONTWRITEBYTECODE machines recompile
# every imported module on every start: about 1.8 s of `slaprof profile`'s wall time).
export UV_PYTHON_DOWNLOADS=never
if ! .venv/bin/uv sync --locked --all-extras --compile-bytecode --quiet; then
    echo "setup.sh: uv.lock and pyproject.toml disagree (or a locked package could not be installed)." >&2
    echo "setup.sh: after changing dependencies on purpose, run: .venv/bin/python images/lock.py --upgrade" >&2
    exit 1
fi
# mypy reads `slaprof.steps` / `slaprof.workflows` through links (the editable install maps them with an
# import finder, which mypy does not run).
mkdir -p .mypy-view/slaprof
for package in steps workflows; do ln -sfn "../../$package" ".mypy-view/slaprof/$package"; done
# Dynamo's own planner code of each supported release (the compatibility tests import it): one folder each.
.venv/bin/python images/lock.py --dynamo-releases .venv/dynamo
.venv/bin/python -m compileall -q steps workflows >/dev/null
echo "slaprof is set up: .venv/bin/slaprof --help"
