"""Shared test paths. Fixtures with servers live in tests/plugins/ and are imported by the tests that use them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
SHARED = ROOT.parent / "shared"

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def model_dir():
    """Path of a model config fixture: model_dir('Qwen3-32B')."""
    def _get(name: str) -> Path:
        path = MODELS / name
        assert (path / "config.json").is_file(), path
        return path
    return _get
