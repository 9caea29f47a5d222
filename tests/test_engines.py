"""Engine backends: command lines per mapping, Dynamo worker arguments, and KV-capacity parsing
against recorded start-up logs and /metrics text in each backend's published format."""

from __future__ import annotations

import sys

import pytest
import yaml

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.engines import get_backend
from slaprof.steps.engines.base import ServerOptions, batched_tokens
from tests.conftest import FIXTURES

LOGS = FIXTURES / "engine_logs"


def _log(name: str) -> str:
    return (LOGS / name).read_text()


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_get_backend_names_and_images():
    for name, runtime in (("vllm", "vllm-runtime"), ("sglang", "sglang-runtime"), ("trtllm", "tensorrtllm-runtime")):
        b = get_backend(name)
        assert b.name == name
        assert b.dynamo_module == f"dynamo.{name}"
        assert b.runtime_image == f"nvcr.io/nvidia/ai-dynamo/{runtime}"  # untagged: the Dynamo release tags it
    with pytest.raises(UserError, match="unknown backend 'tgi'"):
        get_backend("tgi")


@pytest.mark.parametrize(
    "mapping,expected",
    [
        ("tp4", ["--tensor-parallel-size", "4"]),
        ("tep8", ["--tensor-parallel-size", "8", "--enable-expert-parallel"]),
        ("dep8", ["--tensor-parallel-size", "1", "--data-parallel-size", "8", "--enable-expert-parallel"]),
        ("dtp4", ["--tensor-parallel-size", "1", "--data-parallel-size", "4"]),
        ("agg-dtp4", ["--tensor-parallel-size", "1", "--data-parallel-size", "4"]),
    ],
)
def test_vllm_parallel_flags(mapping, expected):
    assert get_backend("vllm").parallel_args(Candidate.parse(mapping)) == expected


@pytest.mark.parametrize(
    "mapping,expected",
    [
        ("tp2", ["--tp", "2"]),
        ("tep8", ["--tp", "8", "--ep-size", "8"]),
        ("dep4", ["--tp", "4", "--ep-size", "4", "--dp", "4", "--enable-dp-attention"]),
        ("dtp4", ["--tp", "4", "--dp", "4", "--enable-dp-attention"]),
    ],
)
def test_sglang_parallel_flags(mapping, expected):
    assert get_backend("sglang").parallel_args(Candidate.parse(mapping)) == expected


def test_dgd_worker_args_per_role():
    vllm, sglang, trt = get_backend("vllm"), get_backend("sglang"), get_backend("trtllm")
    tp2 = Candidate.parse("tp2")
    assert vllm.dgd_worker_args("Qwen/Qwen3-32B", tp2, "prefill") == [
        "--model",
        "Qwen/Qwen3-32B",
        "--tensor-parallel-size",
        "2",
        "--is-prefill-worker",
    ]
    assert "--is-prefill-worker" not in vllm.dgd_worker_args("Qwen/Qwen3-32B", tp2, "decode")
    args = sglang.dgd_worker_args("Qwen/Qwen3-30B-A3B", Candidate.parse("dep8"), "decode")
    assert _flag(args, "--disaggregation-mode") == "decode"
    assert _flag(args, "--dp") == "8" and "--enable-dp-attention" in args and _flag(args, "--ep-size") == "8"
    assert _flag(args, "--load-balance-method") == "round_robin"
    args = trt.dgd_worker_args("Qwen/Qwen3-32B", tp2, "prefill")
    assert _flag(args, "--disaggregation-mode") == "prefill"
    assert _flag(args, "--extra-engine-args") == trt.engine_config_path("prefill")


def test_aggregated_workers_have_no_disaggregation_settings():
    vllm, sglang, trt = get_backend("vllm"), get_backend("sglang"), get_backend("trtllm")
    tp8 = Candidate.parse("agg-tp8")
    assert vllm.dgd_worker_args("Qwen/Qwen3-32B", tp8, "agg") == [
        "--model",
        "Qwen/Qwen3-32B",
        "--tensor-parallel-size",
        "8",
    ]
    args = sglang.dgd_worker_args("Qwen/Qwen3-30B-A3B", Candidate.parse("agg-dtp4"), "agg")
    assert not [a for a in args if a.startswith("--disaggregation") or a == "--load-balance-method"]
    assert _flag(args, "--dp") == "4" and "--ep-size" not in args
    args = trt.dgd_worker_args("Qwen/Qwen3-32B", tp8, "agg")
    assert "--disaggregation-mode" not in args and _flag(args, "--extra-engine-args") == trt.engine_config_path("agg")
    cfg = trt.engine_config(tp8, "agg")
    assert "cache_transceiver_config" not in cfg and cfg["kv_cache_config"]["enable_block_reuse"] is True
    assert "disable_overlap_scheduler" not in cfg and "max_batch_size" not in cfg
    dtp = trt.engine_config(Candidate.parse("dtp4"), "decode")
    assert dtp["enable_attention_dp"] is True and dtp["moe_tensor_parallel_size"] == 4
    assert dtp["moe_expert_parallel_size"] == 1 and "--ep_size" not in trt.parallel_args(Candidate.parse("dtp4"))


def test_trtllm_engine_config_carries_the_mapping():
    trt = get_backend("trtllm")
    dep = trt.engine_config(Candidate.parse("dep8"), "decode")
    assert dep["tensor_parallel_size"] == 8 and dep["moe_expert_parallel_size"] == 8
    assert dep["enable_attention_dp"] is True
    assert dep["kv_cache_config"]["enable_block_reuse"] is True
    tep = trt.engine_config(Candidate.parse("tep4"), "prefill")
    assert tep["enable_attention_dp"] is False and tep["moe_expert_parallel_size"] == 4
    assert tep["kv_cache_config"]["enable_block_reuse"] is False and tep["disable_overlap_scheduler"] is True
    tp = trt.engine_config(Candidate.parse("tp2"), "decode")
    assert tp["moe_expert_parallel_size"] == 1 and tp["tensor_parallel_size"] == 2


@pytest.mark.parametrize("context", [6000, 40000])
def test_trtllm_workers_get_the_step_budget_their_bench_engine_ran_with(context, tmp_path):
    trt, tp2, agg = get_backend("trtllm"), Candidate.parse("tp2"), Candidate.parse("agg-tp2")

    def bench_engine(cand: Candidate) -> tuple[dict, list[str]]:
        # as bench.py starts it: disaggregated candidates with whole prompts per step, aggregated ones not
        budget = None if cand.is_agg else batched_tokens(context)
        opts = ServerOptions(max_context=context, max_batched_tokens=budget, workdir=str(tmp_path))
        launch = trt.server_launch("m", cand, 9003, opts)
        return yaml.safe_load(next(iter(launch.files.values()))), launch.argv

    cfg, argv = bench_engine(agg)
    worker = trt.engine_config(agg, "agg", context)
    assert "max_num_tokens" not in cfg and "max_num_tokens" not in worker and "--max_num_tokens" not in argv
    assert cfg["max_seq_len"] == worker["max_seq_len"] == context
    assert cfg.get("enable_chunked_prefill") == worker.get("enable_chunked_prefill") == (context > 8192 or None)
    _, argv = bench_engine(tp2)
    prefill = trt.engine_config(tp2, "prefill", context)
    assert prefill["max_num_tokens"] == int(_flag(argv, "--max_num_tokens")) == min(context, 32768)
    assert prefill.get("enable_chunked_prefill") == (context > 32768 or None)


def test_server_commands(tmp_path):
    opts = ServerOptions(prefix_caching=False, max_batched_tokens=16384, max_context=8192, workdir=str(tmp_path))
    argv = get_backend("vllm").server_launch("Qwen/Qwen3-8B", Candidate.parse("tp2"), 9001, opts).argv
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"] and _flag(argv, "--port") == "9001"
    assert "--no-enable-prefix-caching" in argv and _flag(argv, "--max-num-batched-tokens") == "16384"
    assert _flag(argv, "--max-model-len") == "8192"
    launch = get_backend("vllm").server_launch("m", Candidate.parse("tp1"), 9001, ServerOptions(profile_dir="/tmp/p"))
    assert launch.env == {"VLLM_TORCH_PROFILER_DIR": "/tmp/p"} and "--enable-prefix-caching" in launch.argv

    argv = get_backend("sglang").server_launch("m", Candidate.parse("dep4"), 9002, opts).argv
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"] and "--disable-radix-cache" in argv
    assert _flag(argv, "--chunked-prefill-size") == "16384" and "--enable-dp-attention" in argv

    launch = get_backend("trtllm").server_launch("m", Candidate.parse("tep4"), 9003, opts)
    assert launch.argv[:2] == ["trtllm-serve", "m"] and _flag(launch.argv, "--ep_size") == "4"
    cfg_path = _flag(launch.argv, "--extra_llm_api_options")
    assert cfg_path.startswith(str(tmp_path))
    cfg = yaml.safe_load(next(iter(launch.files.values())))
    assert cfg["kv_cache_config"]["enable_block_reuse"] is False and cfg["moe_expert_parallel_size"] == 4

    sim = get_backend("simulated", emulate="sglang", gpu="h200_sxm", tokenizer="/tok", time_scale=5)
    argv = sim.server_launch("m", Candidate.parse("tp2"), 9004, opts).argv
    assert argv[:3] == [sys.executable, "-m", "slaprof.steps.measure.simengine"]
    assert _flag(argv, "--mapping") == "tp2" and _flag(argv, "--emulate") == "sglang"
    assert _flag(argv, "--time-scale") == "5" and "--no-prefix-caching" in argv
    # the simulated backend renders the emulated backend's Dynamo worker
    assert sim.dynamo_module == "dynamo.sglang"
    assert sim.dgd_worker_args("m", Candidate.parse("tp2"), "prefill") == get_backend("sglang").dgd_worker_args(
        "m", Candidate.parse("tp2"), "prefill"
    )
    # and is timed and sized like it: its constants, memory share and AI Configurator name
    sglang = get_backend("sglang")
    assert (sim.calibration_key, sim.memory_utilization, sim.aic_name) == ("sglang", 0.88, "sglang")
    assert sim.dgd_template("e", "f") == sglang.dgd_template("e", "f")
    assert not sim.deployable and sglang.deployable


def test_vllm_kv_from_logs_and_metrics():
    vllm = get_backend("vllm")
    assert vllm.kv_tokens_from_log(_log("vllm_v1_startup.log")) == 739_008
    # one engine core per data-parallel rank: capacities add up
    assert vllm.kv_tokens_from_log(_log("vllm_dp_startup.log"), attn_dp=4) == 1_502_336 * 3 + 1_498_240
    # old engines: "Maximum concurrency" x tokens per request
    assert vllm.kv_tokens_from_log(_log("vllm_v0_startup.log")) == round(8192 * 52.86)
    assert vllm.kv_tokens_from_metrics(_log("vllm_metrics.txt")) == 46188 * 16
    assert vllm.kv_tokens_from_log("no kv line here") is None
    assert vllm.version_from_log(_log("vllm_v1_startup.log")) == "0.11.0"


def test_sglang_kv_from_logs_and_metrics():
    sglang = get_backend("sglang")
    assert sglang.kv_tokens_from_log(_log("sglang_startup.log")) == 524_288
    # #tokens is per attention-DP rank
    assert sglang.kv_tokens_from_log(_log("sglang_dp_startup.log"), attn_dp=4) == 4 * 1_210_042
    assert sglang.kv_tokens_from_metrics(_log("sglang_metrics.txt")) == 524_288


def test_trtllm_takes_the_last_kv_allocation():
    trt = get_backend("trtllm")
    text = _log("trtllm_startup.log")
    assert text.count("paged KV cache") == 2  # an intermediate estimate, then the real allocation
    assert trt.kv_tokens_from_log(text) == 220_480
    assert trt.kv_tokens_from_log(text, attn_dp=8) == 8 * 220_480
    assert trt.version_from_log(text) == "1.1.0rc5"
    assert trt.kv_tokens_from_metrics("anything") is None
