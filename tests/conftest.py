"""Shared test paths. Fixtures with servers live in tests/plugins/, registered here for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
SHARED = ROOT.parent / "shared"
# `slaprof profile --method simulate` of the tiny model in a fresh process, as a user runs it
SIMULATE_CLI = [
    sys.executable,
    "-m",
    "slaprof.steps.cli.main",
    "profile",
    "--model",
    str(MODELS / "Qwen3-0.6B"),
    "--method",
    "simulate",
    "--max-context-length",
    "1024",
]

# Fixtures with servers or built files: a test asks for them by name.
pytest_plugins = ["tests.plugins.s3", "tests.plugins.tokenizer", "tests.plugins.kube"]

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def model_dir():
    """Path of a model config fixture: model_dir('Qwen3-32B')."""

    def _get(name: str) -> Path:
        path = MODELS / name
        assert (path / "config.json").is_file(), path
        return path

    return _get
