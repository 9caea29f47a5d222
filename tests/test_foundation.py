"""Request loading, model-size detection, GPU catalog, candidate plan and the `plan` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request, load_request_file
from slaprof.steps.dag.plan import decode_concurrencies, make_plan
from slaprof.steps.specs.gpus import GPU_NAMES, get_gpu
from slaprof.steps.specs.models import load_model_info
from tests.conftest import MODELS
from tests.test_profile import QWEN32B_SLA

# Published sizes (model cards): total parameters in billions.
PUBLISHED = {
    "Qwen3-0.6B": 0.6,
    "Qwen3-32B": 32.8,
    "Llama-3.1-8B": 8.03,
    "Llama-3.1-70B": 70.6,
    "Qwen3-30B-A3B": 30.5,
    "DeepSeek-V3": 671.0,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published_sizes(name):
    info = load_model_info(str(MODELS / name))
    assert info.total_params / 1e9 == pytest.approx(PUBLISHED[name], rel=0.02)


def test_moe_and_mla_shapes():
    ds = load_model_info(str(MODELS / "DeepSeek-V3"))
    assert ds.is_moe and ds.is_mla and ds.weight_dtype == "fp8" and ds.quant_block_size == 128
    assert ds.active_params / 1e9 == pytest.approx(37, rel=0.03)
    assert ds.kv_bytes_per_token() == 61 * 576 * 2  # latent + rope per layer, bf16
    q = load_model_info(str(MODELS / "Qwen3-30B-A3B"))
    assert q.is_moe and not q.is_mla and q.num_experts == 128 and q.experts_per_token == 8
    dense = load_model_info(str(MODELS / "Qwen3-32B"))
    assert dense.kv_bytes_per_token() == 2 * 64 * 8 * 128 * 2
    assert dense.weight_bytes() / 1e9 == pytest.approx(65.5, rel=0.01)
    assert dense.weight_bytes("fp8") < 0.55 * dense.weight_bytes()


def test_hf_quant_config_declares_fp4(tmp_path):
    cfg = json.loads((MODELS / "Llama-3.1-8B" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8"}})
    )
    info = load_model_info(str(tmp_path))
    assert info.weight_dtype == "fp4" and info.kv_dtype == "fp8"


def test_gpu_catalog_has_every_system_with_sources():
    assert set(GPU_NAMES) == {"h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200", "gb300", "a100_sxm", "l40s"}
    for name in GPU_NAMES:
        g = get_gpu(name)
        assert g.source and g.memory_bytes > 40e9 and g.peak_flops("fp8") >= g.peak_flops("bf16")
    with pytest.raises(UserError, match="unknown GPU"):
        get_gpu("h300")


def _request(model="Qwen3-32B", gpu="h200_sxm", **extra):
    data = {
        "model": str(MODELS / model),
        "hardware": {"gpu": gpu},
        "sla": {"isl": 3000, "osl": 150, "ttft_ms": 200, "itl_ms": 20},
    }
    data.update(extra)
    return build_request(data)


def test_plan_dense_h200_lists_tp1_to_tp8():
    plan = make_plan(_request(hardware={"gpu": "h200_sxm", "total_gpus": 16}))
    assert plan.runnable_ids() == ["tp1", "tp2", "tp4", "tp8", "agg-tp1", "agg-tp2", "agg-tp4", "agg-tp8"]
    disagg = [p for p in plan.candidates if not p.candidate.is_agg]
    weights = [p.weight_gib_per_gpu for p in disagg]
    assert weights == sorted(weights, reverse=True)  # more TP, less weight per GPU
    # an aggregated engine is the same mapping: same weights and KV cache
    for p in disagg:
        twin = plan.get(p.candidate.as_serving("agg").id)
        assert (twin.weight_gib_per_gpu, twin.kv_tokens_estimate) == (p.weight_gib_per_gpu, p.kv_tokens_estimate)
    assert 3000 in plan.grid.prefill_isls and 3000 in plan.grid.decode_isls
    assert plan.grid.prefill_isls[-1] <= 40960 and len(plan.grid.prefill_isls) >= 17


def test_plan_dense_h100_drops_tp1_with_a_reason():
    plan = make_plan(_request(gpu="h100_sxm"))
    tp1 = plan.get("tp1")
    assert tp1.status == "dropped" and "KV cache" in tp1.reason
    # one node by default: a disaggregated 8-GPU engine leaves no GPU for the other phase
    tp8 = plan.get("tp8")
    assert tp8.status == "dropped" and "budget of 8" in tp8.reason and "--total-gpus" in tp8.reason
    assert plan.runnable_ids() == ["tp2", "tp4", "agg-tp2", "agg-tp4", "agg-tp8"]


def test_plan_follows_the_serving_mode_and_the_budget():
    only_agg = make_plan(_request(serving="agg", hardware={"gpu": "h200_sxm", "total_gpus": 4}))
    assert only_agg.runnable_ids() == ["agg-tp1", "agg-tp2", "agg-tp4"]
    assert "more than the budget of 4" in only_agg.get("agg-tp8").reason
    only_disagg = make_plan(_request(serving="disagg", hardware={"gpu": "h200_sxm", "total_gpus": 4}))
    assert only_disagg.runnable_ids() == ["tp1", "tp2"]  # tp2 + tp2, or tp2 + tp1; tp4 leaves nothing
    # a model that needs more GPUs per engine than the budget is a one-line error naming the flag
    with pytest.raises(UserError, match="--total-gpus"):
        make_plan(_request("DeepSeek-V3", gpu="h100_sxm"))


def test_moe_plans_attention_dp_with_tensor_parallel_experts():
    plan = make_plan(_request("Qwen3-30B-A3B", hardware={"gpu": "h200_sxm", "total_gpus": 16}))
    dtp4 = plan.get("dtp4").candidate
    assert (dtp4.attn_dp, dtp4.attn_tp, dtp4.moe_tp, dtp4.moe_ep) == (4, 1, 4, 1)
    assert {"tep4", "dep4", "dtp4", "agg-dtp4"} <= set(plan.runnable_ids())
    # attention and dense parts replicated per rank, every expert split four ways: more weight per
    # GPU than TEP (attention split too), the same as DEP (experts split by EP instead)
    weights = {p.id: p.weight_gib_per_gpu for p in plan.candidates}
    assert weights["dtp4"] == pytest.approx(weights["dep4"]) and weights["dtp4"] > weights["tep4"]


def test_plan_deepseek_is_moe_mappings_only_and_fits():
    plan = make_plan(_request("DeepSeek-V3", hardware={"gpu": "h200_sxm", "total_gpus": 16}))
    runnable = plan.runnable()
    assert runnable and {c.kind for c in runnable} <= {"tep", "dep", "dtp"}
    assert min(c.size for c in runnable) >= 8
    for p in plan.candidates:
        if p.status == "runnable":
            assert p.weight_gib_per_gpu < get_gpu("h200_sxm").usable_memory_gib * 0.9
            assert p.kv_tokens_estimate > 0


def test_plan_drops_indivisible_mappings():
    # Qwen3-0.6B has 16 attention heads: TP 32 cannot split them.
    hardware = {"gpu": "h200_sxm", "max_gpus_per_engine": 32, "total_gpus": 64}
    plan = make_plan(_request("Qwen3-0.6B", hardware=hardware))
    assert plan.get("tp32").status == "dropped" and "heads" in plan.get("tp32").reason
    assert "tp16" in plan.runnable_ids()


def test_decode_concurrencies_respect_kv_and_dp():
    conc = decode_concurrencies(100_000, 3000, 500, 6, attn_dp=8)
    assert conc and all(c % 8 == 0 for c in conc)
    assert max(conc) * 3500 <= 100_000
    assert decode_concurrencies(1000, 3000, 500, 6) == []


def test_candidate_ids_roundtrip():
    assert Candidate.parse("dep8").attn_dp == 8 and Candidate.parse("TEP4").label == "TEP:4"
    agg = Candidate.parse("agg-dtp4")
    assert agg.is_agg and agg.id == "agg-dtp4" and agg.mapping_id == "dtp4" and agg.label == "DTP:4"
    assert Candidate.parse(agg.id) == agg and agg.as_serving("disagg").id == "dtp4"
    with pytest.raises(UserError):
        Candidate.parse("pp2")


def test_dgdr_and_flags_give_equal_requests(tmp_path, capsys):
    dgdr = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeploymentRequest",
        "metadata": {"name": "q"},
        "spec": {
            "model": str(MODELS / "Qwen3-32B"),
            "backend": "sglang",
            "autoApply": True,
            "profilingConfig": {
                "profilerImage": "x",
                "config": {
                    "sla": {"isl": 2048, "osl": 256, "ttft": 500, "itl": 50},
                    "hardware": {
                        "minNumGpusPerEngine": 2,
                        "maxNumGpusPerEngine": 4,
                        "numGpusPerNode": 4,
                        "totalGpus": 8,
                    },
                    "sweep": {
                        "useAiConfigurator": True,
                        "aicSystem": "h100_sxm",
                        "aic_hf_id": "Qwen/Qwen3-32B",
                        "aicBackendVersion": "0.5.0",
                        "prefillInterpolationGranularity": 8,
                        "decode_interpolation_granularity": 4,
                    },
                },
            },
        },
    }
    path = tmp_path / "dgdr.yaml"
    path.write_text(yaml.safe_dump(dgdr))
    from_file = build_request(load_request_file(path))
    from slaprof.steps.cli.main import build_parser, request_from_args

    args = build_parser().parse_args(
        [
            "plan",
            "--model",
            str(MODELS / "Qwen3-32B"),
            "--backend",
            "sglang",
            "--isl",
            "2048",
            "--osl",
            "256",
            "--ttft",
            "500",
            "--itl",
            "50",
            "--min-num-gpus-per-engine",
            "2",
            "--max-num-gpus-per-engine",
            "4",
            "--num-gpus-per-node",
            "4",
            "--total-gpus",
            "8",
            "--use-ai-configurator",
            "--aic-system",
            "h100_sxm",
            "--aic-hf-id",
            "Qwen/Qwen3-32B",
            "--aic-backend-version",
            "0.5.0",
            "--prefill-interpolation-granularity",
            "8",
            "--decode-interpolation-granularity",
            "4",
            "--auto-apply",
        ]
    )
    assert request_from_args(args) == from_file
    assert from_file.sweep.estimator == "aic" and from_file.hardware.gpu == "h100_sxm"
    assert from_file.hardware.total_gpus == 8 and from_file.hardware.gpu_budget == 8
    # flags override the file
    args = build_parser().parse_args(["plan", "--config", str(path), "--isl", "1000"])
    assert request_from_args(args).sla.isl == 1000


def test_plan_cli_json(capsys):
    rc = main(
        [
            "plan",
            *QWEN32B_SLA,
            "--backend",
            "vllm",
            "--total-gpus",
            "16",
            "--serving",
            "disagg",
            "--json",
        ]
    )
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    ids = {c["candidate"]["kind"] + str(c["candidate"]["size"]): c for c in plan["candidates"]}
    assert [i for i, c in ids.items() if c["status"] == "runnable"] == ["tp1", "tp2", "tp4", "tp8"]
    assert ids["tp4"]["candidate"]["size"] == 4 and ids["tp4"]["candidate"]["serving"] == "disagg"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--ttft", "-5"], "sla.ttft_ms"),
        (["--backend", "tensorflow"], "backend"),
        (["--gpu", "h300"], "unknown GPU"),
        (["--model", "/no/such/model"], "not a directory"),
    ],
)
def test_plan_cli_bad_input_is_one_line_exit_2(argv, needle):
    base = ["plan", "--model", str(MODELS / "Qwen3-32B")]
    proc = subprocess.run(
        [sys.executable, "-m", "slaprof.steps.cli.main", *base, *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_missing_model_offline_says_what_to_provide():
    # huggingface_hub reads HF_HUB_OFFLINE at import, so run in a fresh interpreter
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "slaprof.steps.cli.main", "plan", "--model", "nobody/not-a-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "local folder" in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoint_bytes_from_safetensors_headers_and_index(tmp_path):
    import struct

    cfg = (MODELS / "Qwen3-0.6B" / "config.json").read_text()
    (tmp_path / "config.json").write_text(cfg)
    header = json.dumps(
        {"a": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]}, "__metadata__": {"format": "pt"}}
    ).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    assert load_model_info(str(tmp_path)).checkpoint_bytes == 64
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1234}}))
    assert load_model_info(str(tmp_path)).checkpoint_bytes == 1234


def test_every_subcommand_has_help():
    from slaprof.steps.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = set(sub.choices or [])
    assert {"plan", "estimate", "bench", "fit", "select", "profile", "render", "apply", "workflow", "submit"} <= names
    for name in sorted(names):
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name


def test_dry_run_request_is_estimated_offline():
    request = _request(method="online", sweep={"dry_run": True})
    assert request.method == "offline" and request.sweep.dry_run
    assert _request(method="online").method == "online"


def test_v1beta1_dgdr_total_gpus_sets_the_budget(tmp_path):
    dgdr = {
        "apiVersion": "nvidia.com/v1beta1",
        "kind": "DynamoGraphDeploymentRequest",
        "metadata": {"name": "q"},
        "spec": {
            "model": str(MODELS / "Qwen3-32B"),
            "backend": "vllm",
            "workload": {"isl": 3000, "osl": 150},
            "sla": {"ttft": 200, "itl": 20},
            "hardware": {"gpuSku": "h200_sxm", "numGpusPerNode": 8, "totalGpus": 16},
        },
    }
    path = tmp_path / "dgdr.yaml"
    path.write_text(yaml.safe_dump(dgdr))
    request = build_request(load_request_file(path))
    assert request.hardware.total_gpus == 16 and request.hardware.gpu_budget == 16
    # 16 GPUs leave room for an 8-GPU disaggregated engine next to another one
    assert make_plan(request).get("tp8").status == "runnable"
    # the budget changes what is planned, not what a candidate measures: profiles are reused
    assert (
        request.measurement_key()
        == request.model_copy(
            update={"hardware": request.hardware.model_copy(update={"total_gpus": 8})}
        ).measurement_key()
    )
