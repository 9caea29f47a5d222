"""Dynamo's own planner code, one folder per supported release, for the compatibility tests.

setup.sh installs each `dynamo-<x>-<y>` dependency group of pyproject.toml (the locked, hash-checked
`ai-dynamo` wheel, without its dependencies) into .venv/dynamo/<x.y>/. Releases cannot share one
interpreter (they are all the `dynamo` package), so each task runs in a subprocess
(tests/plugins/dynamo_child.py) with that release's folder first on its path.

Use:
    from tests.plugins.dynamo_wheels import run_release
    run_release("0.9", {"task": "interpolators", "dir": "...", ...}) -> dict
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RELEASES_DIR = ROOT / ".venv" / "dynamo"
CHILD = Path(__file__).with_name("dynamo_child.py")


def release_dir(line: str) -> Path:
    folder = RELEASES_DIR / line
    if not (folder / "dynamo" / "planner").is_dir():
        raise AssertionError(f"Dynamo {line}'s planner code is not installed at {folder}: run ./setup.sh")
    return folder


def run_release(line: str, task: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run one task of dynamo_child.py with Dynamo `line`'s code; its JSON result."""
    done = subprocess.run(
        [sys.executable, str(CHILD), str(release_dir(line))],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"Dynamo {line} {task['task']} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
