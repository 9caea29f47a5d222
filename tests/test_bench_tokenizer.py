"""The bench step's tokenizer: a model folder without tokenizer files, or a tokenizer that cannot
count tokens, fails at once with what to provide (it once made the prompt builder loop forever)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import slaprof.steps.engines.process
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request
from slaprof.steps.dag.bench import BenchOptions, PromptBuilder, load_tokenizer, measure_candidate
from slaprof.steps.dag.plan import make_plan
from tests.conftest import MODELS, ROOT, SIMULATE_CLI


@pytest.fixture
def bare_model(tmp_path):
    """A model folder with config.json only, as a user may copy it for an estimate."""
    folder = tmp_path / "Qwen3-0.6B"
    folder.mkdir()
    shutil.copy(MODELS / "Qwen3-0.6B" / "config.json", folder / "config.json")
    return folder


def _simulate_request(model: str):
    return build_request(
        {
            "model": model,
            "backend": "vllm",
            "method": "simulate",
            "sla": {"isl": 200, "osl": 8, "ttft_ms": 100, "itl_ms": 10},
            "hardware": {"gpu": "h100_sxm", "max_gpus_per_engine": 1},
            "engine": {"max_context_length": 1024},
        }
    )


def test_measure_without_a_tokenizer_fails_fast_with_what_to_provide(tmp_path, bare_model, monkeypatch):
    monkeypatch.delenv("SLAPROF_TOKENIZER", raising=False)
    request = _simulate_request(str(bare_model))
    plan = make_plan(request)
    started: list[str] = []

    class NoEngine:
        def __init__(self, *args, **kwargs):
            started.append("engine")
            raise AssertionError("an engine was started before the tokenizer was checked")

    monkeypatch.setattr(slaprof.steps.engines.process, "EngineProcess", NoEngine)
    with pytest.raises(UserError) as err:
        measure_candidate(request, plan, plan.runnable()[0], tmp_path / "work", options=BenchOptions.from_env())
    assert started == []  # it failed before any engine or AIPerf run started
    message = str(err.value)
    assert str(bare_model) in message and "--tokenizer DIR" in message and "SLAPROF_TOKENIZER" in message
    assert "tokenizer files" in message and "\n" not in message


def test_cli_bench_without_a_tokenizer_exits_2_with_one_line(tmp_path, bare_model):
    env = {k: v for k, v in os.environ.items() if k != "SLAPROF_TOKENIZER"}
    cmd = [
        sys.executable,
        "-m",
        "slaprof.steps.cli.main",
        "bench",
        "--model",
        str(bare_model),
        "--gpu",
        "h100_sxm",
        "--method",
        "simulate",
        "--candidate",
        "tp1",
        "--isl",
        "200",
        "--osl",
        "8",
        "--max-context-length",
        "1024",
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "SLAPROF_TOKENIZER" in lines[0], proc.stderr
    assert "PyTorch was not found" not in proc.stdout + proc.stderr


def test_a_tokenizer_that_yields_no_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={"zzz": 0}, merges=[]))  # knows no real word and drops the unknown
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="into 0 tokens"):
        PromptBuilder(str(tmp_path))


def test_a_tokenizer_folder_is_read_without_transformers(tiny_tokenizer):
    code = (
        "import sys; from slaprof.steps.dag.bench import PromptBuilder; "
        f"b = PromptBuilder({str(tiny_tokenizer)!r}); p = b.make(300, 'tag'); "
        "print(len(b.encode(p)), 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    length, imported = out.stdout.split()
    assert abs(int(length) - 300) <= 2 and imported == "False"
    encode, decode = load_tokenizer(str(tiny_tokenizer))
    assert json.loads(json.dumps(encode("hello world")))  # plain ints


def _profile_cli(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SLAPROF_TOKENIZER", "SLAPROF_SIM_TIME_SCALE")}
    cmd = [*SIMULATE_CLI, "--out", str(tmp_path / "run"), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", ["/no/such/tokenizer", "./missing-tokenizer", "models/a/tokenizer"])
def test_profile_with_a_tokenizer_path_that_does_not_exist_exits_2_saying_so(tmp_path, path):
    proc = _profile_cli(tmp_path, "--tokenizer", path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"tokenizer {path!r}: no such folder" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "profiles").exists()  # stopped before any candidate started


def test_profile_with_a_bad_time_scale_exits_2(tmp_path, tiny_tokenizer):
    proc = _profile_cli(tmp_path, "--tokenizer", str(tiny_tokenizer), "--time-scale", "fast")
    assert proc.returncode == 2 and "--time-scale 'fast'" in proc.stderr, proc.stderr


def test_a_time_scale_is_a_positive_number_or_auto(monkeypatch):
    from slaprof.steps.dag.bench import parse_time_scale

    assert parse_time_scale("auto") is None and parse_time_scale(None) is None
    assert parse_time_scale("12.5") == 12.5
    for bad in ("0", "-1", "inf", "nan", "x"):
        with pytest.raises(UserError):
            parse_time_scale(bad)
    monkeypatch.setenv("SLAPROF_SIM_TIME_SCALE", "20")
    assert BenchOptions.from_env().time_scale == 20.0
    assert BenchOptions.from_env(time_scale="auto").time_scale is None  # auto given wins over the environment


def test_profile_stops_before_any_candidate_when_the_tokenizer_cannot_count(tmp_path, bare_model):
    env = {k: v for k, v in os.environ.items() if k != "SLAPROF_TOKENIZER"}
    cmd = [
        sys.executable,
        "-m",
        "slaprof.steps.cli.main",
        "profile",
        "--model",
        str(bare_model),
        "--method",
        "simulate",
    ]
    cmd += ["--isl", "300", "--osl", "30", "--max-context-length", "1024", "--progress", "none"]
    cmd += ["--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--tokenizer DIR" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "profiles").exists() and not (tmp_path / "run" / "partial").exists()
