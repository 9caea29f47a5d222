"""The request's quantization and KV-cache dtype reach every engine the plan assumed them for: the
bench's engines (real and simulated) and the DGD's workers; an override an engine cannot be told is
refused when the request is planned, not dropped from the DGD."""

from __future__ import annotations

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.results import Selection
from slaprof.steps.engines import ServerOptions, get_backend
from slaprof.steps.measure.simengine import build_engine, parse_args
from slaprof.steps.specs.models import EnginePrecision, engine_precision, load_model_info_from_dir
from tests.conftest import MODELS
from tests.test_profile import QWEN32B_SLA

FP8_KV = EnginePrecision(kv_cache="fp8")
FP8_ALL = EnginePrecision(weights="fp8", kv_cache="fp8")


def test_only_what_the_checkpoint_does_not_declare_is_an_override():
    bf16 = load_model_info_from_dir(MODELS / "Qwen3-32B")
    fp8 = load_model_info_from_dir(MODELS / "DeepSeek-V3")  # an FP8 checkpoint with a BF16 KV cache
    assert engine_precision(bf16) == EnginePrecision()
    assert engine_precision(bf16, "fp8", "fp8") == FP8_ALL
    assert engine_precision(fp8, "fp8", "bf16") == EnginePrecision()  # as declared: nothing to tell
    assert engine_precision(fp8, "bf16") == EnginePrecision(weights="bf16")


@pytest.mark.parametrize(
    "backend,flags",
    [
        ("vllm", ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]),
        ("sglang", ["--quantization", "fp8", "--kv-cache-dtype", "fp8_e4m3"]),
    ],
)
def test_bench_engines_are_started_with_the_overrides(backend, flags):
    engine = get_backend(backend)
    argv = engine.server_launch("m", Candidate.parse("tp2"), 8000, ServerOptions(precision=FP8_ALL)).argv
    assert any(argv[i : i + len(flags)] == flags for i in range(len(argv)))
    assert engine.precision_args(FP8_ALL) == flags
    plain = engine.server_launch("m", Candidate.parse("tp2"), 8000, ServerOptions()).argv
    assert "--kv-cache-dtype" not in plain and "--quantization" not in plain


def test_trtllm_takes_fp8_kv_in_its_engine_config_and_refuses_weight_overrides():
    trt = get_backend("trtllm")
    launch = trt.server_launch("m", Candidate.parse("tp2"), 8000, ServerOptions(precision=FP8_KV))
    (config,) = launch.files.values()
    assert yaml.safe_load(config)["kv_cache_config"]["dtype"] == "fp8"
    assert trt.engine_config(Candidate.parse("tp2"), "decode", precision=FP8_KV)["kv_cache_config"]["dtype"] == "fp8"
    assert "dtype" not in trt.engine_config(Candidate.parse("tp2"), "decode")["kv_cache_config"]
    with pytest.raises(UserError, match="trtllm cannot be told to run fp8 weights"):
        trt.precision_args(FP8_ALL)


def test_the_simulated_engine_runs_the_model_as_told():
    args = ["--model", str(MODELS / "Qwen3-32B"), "--gpu", "h200_sxm", "--mapping", "tp2"]
    _, bf16_kv = build_engine(parse_args(args))
    _, fp8_kv = build_engine(parse_args([*args, "--kv-cache-dtype", "fp8"]))
    assert fp8_kv > 1.9 * bf16_kv  # half the bytes per token: twice the tokens (less the same reserve)
    sim = get_backend("simulated", emulate="vllm", gpu="h200_sxm")
    argv = sim.server_launch("m", Candidate.parse("tp2"), 8000, ServerOptions(precision=FP8_ALL)).argv
    parsed = parse_args(argv[argv.index("slaprof.steps.measure.simengine") + 1 :])
    assert (parsed.quantization, parsed.kv_cache_dtype) == ("fp8", "fp8")


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
def test_the_dgd_workers_run_what_the_plan_assumed(backend, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["profile", *QWEN32B_SLA, "--backend", backend, "--kv-cache-dtype", "fp8", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert selection.precision == FP8_KV
    assert "<td>precision</td><td>fp8 KV cache</td>" in (out / "report.html").read_text()
    docs = [d for d in yaml.safe_load_all((out / "dgd.yaml").read_text()) if d]
    dgd = next(d for d in docs if d["kind"] == "DynamoGraphDeployment")
    workers = [c for c in dgd["spec"]["components"] if c["type"] not in ("frontend", "planner")]
    assert workers
    for worker in workers:
        args = worker["podTemplate"]["spec"]["containers"][0]["args"]
        if backend == "trtllm":
            assert "--kv-cache-dtype" not in args
        else:
            assert args[args.index("--kv-cache-dtype") + 1] == ("fp8" if backend == "vllm" else "fp8_e4m3")
    if backend == "trtllm":
        (configs,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("engine-config")]
        assert configs["data"] and all(
            yaml.safe_load(text)["kv_cache_config"]["dtype"] == "fp8" for text in configs["data"].values()
        )


@pytest.mark.parametrize("backend,quantization", [("vllm", "fp4"), ("trtllm", "fp8")])
def test_an_override_the_engine_cannot_be_told_stops_the_plan(backend, quantization, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["profile", *QWEN32B_SLA, "--backend", backend, "--quantization", quantization, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{backend} cannot be told to run {quantization} weights" in err and "slaprof estimate" in err
    assert not (out / "plan.json").exists()
