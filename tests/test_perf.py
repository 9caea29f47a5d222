"""Built-in performance model: physics, monotonicity, hand-computed cases, offline surfaces, CLI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request
from slaprof.steps.dag.plan import decode_concurrencies, make_plan
from slaprof.steps.perf import BuiltinEstimator, PerfEstimator, get_estimator
from slaprof.steps.perf.constants import BackendConstants, load_calibration
from slaprof.steps.perf.mapping import Mapping
from slaprof.steps.perf.memory import weight_bytes_per_gpu
from slaprof.steps.perf.surfaces import offline_profile
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import apply_overrides, load_model_info
from tests.conftest import MODELS

# Efficiencies of 1 and no overheads: the model's pure roofline, to compare with hand arithmetic.
IDEAL = BackendConstants(
    gemm_eff=1.0,
    moe_eff=1.0,
    attn_eff=1.0,
    mem_eff=1.0,
    link_eff=1.0,
    comm_latency_us=0.0,
    layer_overhead_us=0.0,
    step_overhead_ms=0.0,
    request_overhead_ms=0.0,
    agg_mix_factor=1.0,
    burst_fraction=0.0,
)
CASES = [
    ("Llama-3.1-8B", "tp1"),
    ("Qwen3-32B", "tp4"),
    ("Qwen3-30B-A3B", "tep4"),
    ("Qwen3-30B-A3B", "dep4"),
    ("DeepSeek-V3", "dep8"),
    ("Llama-3.1-70B", "tp8"),
]


def model(name: str):
    return load_model_info(str(MODELS / name))


def estimator(name: str, mapping: str, gpu: str = "h200_sxm", backend: str = "vllm", **kw) -> BuiltinEstimator:
    est = get_estimator(model(name), get_gpu(gpu), backend, Candidate.parse(mapping), **kw)
    assert isinstance(est, BuiltinEstimator) and isinstance(est, PerfEstimator)
    return est


# ---- hand-computed cases ----------------------------------------------------------
def test_decode_of_one_sequence_is_the_weight_read_time_by_hand():
    """Llama-3.1-8B bf16 on one H100, batch 1, context 1: every weight read once at 3.35 TB/s."""
    d, L, hq, hkv, hd, inter, vocab = 4096, 32, 32, 8, 128, 14336, 128256
    per_layer = d * hq * hd + 2 * d * hkv * hd + hq * hd * d + 3 * d * inter  # q, k, v, o, gate/up/down
    weight_bytes = (L * per_layer + vocab * d) * 2  # + LM head; the embedding is a lookup
    hand_ms = weight_bytes / 3350e9 * 1e3
    est = BuiltinEstimator(model("Llama-3.1-8B"), get_gpu("h100_sxm"), "vllm", Candidate.parse("tp1"), IDEAL)
    assert est.decode_itl_ms(1, 1) == pytest.approx(hand_ms, rel=0.005)
    assert hand_ms == pytest.approx(4.48, abs=0.01)  # 15.0 GB of linear weights / 3.35 TB/s


def test_prefill_is_compute_bound_by_hand():
    """Llama-3.1-8B bf16, 4096-token prompt on one H100: 2*params*tokens + causal attention FLOPs."""
    d, L, hq, hd, inter, kv = 4096, 32, 32, 128, 14336, 1024
    linear = L * (2 * d * d + 2 * d * kv + 3 * d * inter)
    s = 4096
    flops = 2 * linear * s + L * 2 * hq * hd * s * s  # QK^T and PV, halved by the causal mask
    flops += 2 * 128256 * d  # LM head for the last token only
    hand_ms = flops / 989e12 * 1e3
    est = BuiltinEstimator(model("Llama-3.1-8B"), get_gpu("h100_sxm"), "vllm", Candidate.parse("tp1"), IDEAL)
    assert est.prefill_ttft_ms(4096) == pytest.approx(hand_ms, rel=0.01)
    assert 60 < hand_ms < 70


def test_tensor_parallel_all_reduce_by_hand():
    """TP8 decode of one token adds 2 ring all-reduces per layer of d*2 bytes plus their latency."""
    k = IDEAL.model_copy(update={"comm_latency_us": 10.0})
    m, gpu = model("Llama-3.1-70B"), get_gpu("h100_sxm")
    with_comm = BuiltinEstimator(m, gpu, "vllm", Candidate.parse("tp8"), k).decode_itl_ms(1, 1)
    without = BuiltinEstimator(m, gpu, "vllm", Candidate.parse("tp8"), IDEAL).decode_itl_ms(1, 1)
    ring = 2 * 7 / 8 * 8192 * 2 / 450e9
    hand_ms = 80 * 2 * (ring + 10e-6) * 1e3
    assert with_comm - without == pytest.approx(hand_ms, rel=0.01)


def test_moe_decode_reads_only_the_experts_a_batch_touches():
    m = model("Qwen3-30B-A3B")
    gpu, cand = get_gpu("h200_sxm"), Candidate.parse("tep4")
    est = BuiltinEstimator(m, gpu, "vllm", cand, IDEAL)
    expected_touched = 128 * (1 - (1 - 8 / 128) ** 1)  # one token touches its top-8
    assert expected_touched == pytest.approx(8)
    one = est.decode_itl_ms(1, 1)
    many = est.decode_itl_ms(64, 1)  # 64 tokens touch 127 of 128 experts (still memory-bound)
    expert_bytes = m.num_moe_layers * m.expert_params * 2 / cand.moe_ep
    experts_ms = expert_bytes * (128 * (1 - (1 - 8 / 128) ** 64) - 8) / gpu.hbm_bytes_per_s * 1e3
    all_reduce_ms = 48 * 2 * (2 * 3 / 4 * (64 - 1) * 2048 * 2 / gpu.link_bytes_per_s) * 1e3  # 63 more tokens
    assert many - one == pytest.approx(experts_ms + all_reduce_ms, rel=0.01)


# ---- physical bounds -----------------------------------------------------------------
@pytest.mark.parametrize("name,mapping", CASES)
def test_never_faster_than_the_roofline(name, mapping):
    est = estimator(name, mapping)
    ideal = BuiltinEstimator(est.model, est.gpu, est.backend, est.cand, IDEAL)
    isl = np.array([128, 1024, 4096, 16384])
    assert np.all(est.prefill_ttft_ms(isl) >= ideal.prefill_ttft_ms(isl))
    batch = np.array([1, 8, 64, 512])
    assert np.all(est.decode_itl_ms(batch, 2048) >= ideal.decode_itl_ms(batch, 2048))
    if not est.model.is_moe:  # a dense decode step streams every local weight but the embedding once
        assert isinstance(est.cand, Candidate)
        local = weight_bytes_per_gpu(est.model, est.cand) - est.model.embedding_params * 2 / est.cand.attn_tp
        assert ideal.decode_itl_ms(1, 1) * 1e-3 == pytest.approx(local / est.gpu.hbm_bytes_per_s, rel=0.02)


def test_fp8_weights_decode_faster_than_bf16():
    m = model("Qwen3-32B")
    gpu, cand = get_gpu("h100_sxm"), Candidate.parse("tp2")
    bf16 = BuiltinEstimator(m, gpu, "vllm", cand).decode_itl_ms(8, 2048)
    fp8 = BuiltinEstimator(apply_overrides(m, "fp8"), gpu, "vllm", cand).decode_itl_ms(8, 2048)
    assert fp8 < 0.8 * bf16


# ---- monotonicity ---------------------------------------------------------------------
@pytest.mark.parametrize("name,mapping", CASES)
def test_monotone_in_isl_batch_and_context(name, mapping):
    est = estimator(name, mapping)
    isl = np.array([100, 500, 1000, 4000, 8000, 16000, 32000])
    assert np.all(np.diff(est.prefill_ttft_ms(isl)) > 0)
    batch = np.array([1, 2, 8, 32, 128, 512]) * est.cand.attn_dp
    itl = est.decode_itl_ms(batch, 3000)
    assert np.all(np.diff(itl) > 0), "more batch, more ITL"
    assert np.all(np.diff(batch / itl) > 0), "more batch, more throughput"
    assert np.all(np.diff(est.decode_itl_ms(64, np.array([500, 2000, 8000, 32000]))) > 0)


def test_more_tensor_parallelism_less_weight_per_gpu_and_faster():
    m, gpu = model("Llama-3.1-70B"), get_gpu("h200_sxm")
    sizes = [1, 2, 4, 8]
    weights = [weight_bytes_per_gpu(m, Candidate(kind="tp", size=n)) for n in sizes]
    assert all(a > b for a, b in zip(weights, weights[1:]))
    ttft = [BuiltinEstimator(m, gpu, "vllm", Candidate(kind="tp", size=n)).prefill_ttft_ms(4000) for n in sizes]
    assert all(a > b for a, b in zip(ttft, ttft[1:]))


def test_aggregated_serving_under_load():
    est = estimator("Qwen3-32B", "tp2")
    light, heavy = est.agg(3000, 300, 2), est.agg(3000, 300, 64)
    assert heavy.ttft_ms > light.ttft_ms and heavy.itl_ms > light.itl_ms
    assert heavy.thpt_per_gpu > light.thpt_per_gpu
    assert light.ttft_ms >= est.prefill_ttft_ms(3000)  # never below a solo prefill
    assert light.itl_ms >= est.decode_itl_ms(2, 3150)
    # beyond what the KV cache holds for prompts, requests queue for whole lifetimes
    fits = est.max_kv_tokens() // 3000
    over = est.agg(3000, 300, int(fits * 2))
    assert over.ttft_ms > 10 * heavy.ttft_ms


def test_decode_overflow_lengthens_itl_not_ttft():
    """Engines admit a prompt when its own tokens fit and preempt running requests later: past the
    decode capacity ITL stops growing with load, and TTFT does not jump by request lifetimes."""
    est = estimator("Qwen3-32B", "tp2")
    kv = est.max_kv_tokens()
    isl, osl = 3000, 3000
    below = est.agg(isl, osl, int(kv // (isl + osl / 2) * 0.95))
    above = est.agg(isl, osl, int(kv // (isl + osl / 2) * 1.3))  # decode overflows, prompts still fit
    assert int(kv // (isl + osl / 2) * 1.3) < kv // isl
    assert above.ttft_ms < 2.0 * below.ttft_ms
    assert above.itl_ms < 1.2 * below.itl_ms


def test_memory_bound_elementwise_kernels_follow_hbm_bandwidth():
    m, h100, b200 = model("Llama-3.1-8B"), get_gpu("h100_sxm"), get_gpu("b200_sxm")
    passes = 10.0
    k = IDEAL.model_copy(update={"act_passes": passes})
    tokens = 4096
    for gpu in (h100, b200):
        base = BuiltinEstimator(m, gpu, "vllm", Candidate(kind="tp", size=1), IDEAL).prefill_work_s(tokens)
        with_act = BuiltinEstimator(m, gpu, "vllm", Candidate(kind="tp", size=1), k).prefill_work_s(tokens)
        by_hand = m.num_layers * tokens * (m.hidden_size + m.intermediate_size) * 2.0 * passes / gpu.hbm_bytes_per_s
        assert with_act - base == pytest.approx(by_hand, rel=1e-9)
    # so a GPU with 2.3x the FLOP/s and 2.3x the HBM bandwidth of an H100 prefills less than 2.3x faster
    t_h100 = BuiltinEstimator(m, h100, "vllm", Candidate(kind="tp", size=1)).prefill_ttft_ms(8000)
    t_b200 = BuiltinEstimator(m, b200, "vllm", Candidate(kind="tp", size=1)).prefill_ttft_ms(8000)
    assert 1.0 < t_h100 / t_b200 < b200.bf16_tflops / h100.bf16_tflops


def test_prefill_steps_pay_a_per_layer_launch_cost():
    m, gpu = model("Qwen3-30B-A3B"), get_gpu("h200_sxm")
    k = IDEAL.model_copy(update={"prefill_layer_us": 50.0, "prefill_moe_layer_us": 200.0})
    cand = Candidate.parse("tep4")
    extra = BuiltinEstimator(m, gpu, "vllm", cand, k).prefill_work_s(1000) - BuiltinEstimator(
        m, gpu, "vllm", cand, IDEAL
    ).prefill_work_s(1000)
    assert extra == pytest.approx((m.num_layers * 50.0 + m.num_moe_layers * 200.0) * 1e-6)
    # decode steps (CUDA graphs) do not pay it
    assert BuiltinEstimator(m, gpu, "vllm", cand, k).decode_itl_ms(8, 1000) == pytest.approx(
        BuiltinEstimator(m, gpu, "vllm", cand, IDEAL).decode_itl_ms(8, 1000)
    )


def test_prompt_tokens_pay_a_host_cost_that_does_not_shrink_on_a_faster_gpu():
    m, cand = model("Llama-3.1-8B"), Candidate.parse("tp1")
    k = IDEAL.model_copy(update={"request_token_us": 2.0})
    for gpu in (get_gpu("h100_sxm"), get_gpu("b200_sxm")):
        extra = BuiltinEstimator(m, gpu, "vllm", cand, k).prefill_ttft_ms(4000) - BuiltinEstimator(
            m, gpu, "vllm", cand, IDEAL
        ).prefill_ttft_ms(4000)
        assert extra == pytest.approx(4000 * 2.0e-3)  # 8 ms on either GPU
        loaded = BuiltinEstimator(m, gpu, "vllm", cand, k).loaded_ttft_ms(4000, 1.0) - BuiltinEstimator(
            m, gpu, "vllm", cand, IDEAL
        ).loaded_ttft_ms(4000, 1.0)
        assert loaded == pytest.approx(8.0)


def test_sglang_chunk_budget_follows_gpu_memory_and_is_split_over_attention_dp():
    from slaprof.steps.perf.constants import engine_defaults

    m = model("Qwen3-30B-A3B")
    k = engine_defaults("sglang")
    h200, b200 = get_gpu("h200_sxm"), get_gpu("b200_sxm")
    assert BuiltinEstimator(m, h200, "sglang", Candidate.parse("tep4"), k).chunk_tokens == 8192
    assert BuiltinEstimator(m, b200, "sglang", Candidate.parse("tep4"), k).chunk_tokens == 16384
    assert BuiltinEstimator(m, b200, "sglang", Candidate.parse("dep4"), k).chunk_tokens == 4096
    # vLLM keeps one budget per DP rank whatever the GPU
    assert BuiltinEstimator(m, b200, "vllm", Candidate.parse("dep4"), engine_defaults("vllm")).chunk_tokens == 8192
    # a smaller budget means more prefill steps, each paying its per-step costs
    small = k.model_copy(update={"step_overhead_ms": 5.0})
    dep = BuiltinEstimator(m, b200, "sglang", Candidate.parse("dep4"), small)
    wide = BuiltinEstimator(
        m, b200, "sglang", Candidate.parse("dep4"), small.model_copy(update={"chunk_shared_by_dp": False})
    )
    assert dep.prefill_work_s(8000) - wide.prefill_work_s(8000) >= 5.0e-3


def test_disaggregated_engines_are_estimated_with_the_step_budget_they_run_with():
    # the bench starts a disaggregated candidate's engine, and the DGD its prefill workers, with whole
    # prompts per step (Plan.step_tokens); the offline estimate models that engine, not the default
    req = build_request({"model": str(MODELS / "Qwen3-32B"), "backend": "vllm", "sla": {"isl": 3000, "osl": 300}})
    plan = make_plan(req)
    disagg, agg = Candidate.parse("tp2"), Candidate.parse("agg-tp2")
    budget = plan.step_tokens(disagg)
    default = estimator("Qwen3-32B", "tp2")
    assert plan.step_tokens(agg) is None and budget is not None and budget > default.chunk_tokens
    own = estimator("Qwen3-32B", "tp2", step_tokens=budget)
    assert own.chunk_tokens == budget
    busy = [p for p in offline_profile(req, plan, disagg).prefill_load if p.concurrency * 3000 > default.chunk_tokens]
    assert busy
    for p in busy:
        assert p.ttft_ms == pytest.approx(own.prefill_ttft_ms(3000, p.concurrency))
        assert p.ttft_ms < default.prefill_ttft_ms(3000, p.concurrency)
    # an aggregated engine keeps its own budget, as it would serve
    served = offline_profile(req, plan, agg).agg[-1]
    assert served.ttft_ms == pytest.approx(default.agg(3000, 300, served.concurrency).ttft_ms)


def test_simulated_backend_is_timed_like_vllm_and_unknown_estimator_is_refused():
    sim, vllm = estimator("Qwen3-0.6B", "tp1", backend="simulated"), estimator("Qwen3-0.6B", "tp1")
    assert sim.decode_itl_ms(8, 1000) == vllm.decode_itl_ms(8, 1000)
    with pytest.raises(UserError, match="unknown estimator 'magic'"):
        estimator("Qwen3-0.6B", "tp1", estimator="magic")


def test_general_mapping_matches_candidates():
    m, gpu = model("Qwen3-30B-A3B"), get_gpu("h100_sxm")
    for text in ("tp4", "tep4", "dep4"):
        cand = Candidate.parse(text)
        a = BuiltinEstimator(m, gpu, "sglang", cand).decode_itl_ms(32, 2000)
        b = BuiltinEstimator(m, gpu, "sglang", Mapping.of(cand)).decode_itl_ms(32, 2000)
        assert a == b


def test_calibration_file_is_packaged_with_provenance():
    cal = load_calibration()
    assert set(cal.backends) == {"vllm", "sglang", "trtllm"}
    assert cal.systems == ["h100_sxm", "h200_sxm"] and "silicon_sample.csv" in cal.source and cal.fitted_at
    for backend, k in cal.backends.items():
        assert 0 < k.gemm_eff <= 1 and 0 < k.mem_eff <= 1, backend
        assert cal.fit_error[backend]["rows"] > 100


# ---- offline surfaces -----------------------------------------------------------------
def request(name: str, **extra):
    data = {"model": str(MODELS / name), "backend": "vllm", "sla": {"isl": 3000, "osl": 300}}
    data.update(extra)
    return build_request(data)


@pytest.mark.parametrize("name", ["Qwen3-32B", "Qwen3-30B-A3B"])
def test_offline_profile_has_the_points_an_online_bench_measures(name):
    req = request(name)
    plan = make_plan(req)
    for cand in plan.runnable():
        prof = offline_profile(req, plan, cand)
        assert prof.status == "ok" and prof.provenance.method == "offline"
        assert prof.provenance.estimator == "builtin" and prof.provenance.request_key == plan.request_key
        assert [p.isl for p in prof.prefill] == plan.grid.prefill_isls
        expected = [
            (isl, c)
            for isl in plan.grid.decode_isls
            for c in decode_concurrencies(
                prof.max_kv_tokens, isl, plan.grid.decode_osl, plan.grid.decode_granularity, cand.attn_dp
            )
        ]
        assert [(p.isl, p.concurrency) for p in prof.decode] == expected
        est = get_estimator(plan.model, get_gpu(plan.gpu), plan.backend, cand)
        p = prof.prefill[3]
        assert p.ttft_ms == pytest.approx(est.prefill_ttft_ms(p.isl, cand.attn_dp))
        assert p.thpt_per_gpu == pytest.approx(p.isl * cand.attn_dp / (p.ttft_ms / 1e3) / cand.num_gpus)
        d = prof.decode[-1]
        assert d.context == d.isl + plan.grid.decode_osl // 2
        assert d.kv_usage == pytest.approx(d.concurrency * d.context / prof.max_kv_tokens)
        assert d.itl_ms == pytest.approx(est.decode_itl_ms(d.concurrency, d.context))
        assert d.thpt_per_gpu == pytest.approx(d.concurrency / (d.itl_ms / 1e3) / cand.num_gpus)


def test_offline_profile_without_kv_room_is_infeasible():
    req = request("Llama-3.1-70B", hardware={"gpu": "h100_sxm", "min_gpus_per_engine": 1, "max_gpus_per_engine": 4})
    plan = make_plan(req)
    prof = offline_profile(req, plan, Candidate.parse("tp1"))  # 141 GB of bf16 weights on an 80 GB GPU
    assert prof.status == "infeasible" and prof.max_kv_tokens == 0 and "KV cache" in prof.reason
    assert not prof.prefill and not prof.decode


# ---- CLI --------------------------------------------------------------------------------
def test_estimate_cli_json(capsys):
    args = [
        "estimate",
        "--model",
        str(MODELS / "Qwen3-32B"),
        "--gpu",
        "h200_sxm",
        "--backend",
        "trtllm",
        "--mapping",
        "tp4",
        "--isl",
        "3000",
        "--osl",
        "150",
        "--batch",
        "16",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ttft_ms", "itl_ms", "thpt_per_gpu", "max_kv_tokens"} <= set(out)
    est = estimator("Qwen3-32B", "tp4", backend="trtllm").agg(3000, 150, 16)
    assert out["ttft_ms"] == pytest.approx(est.ttft_ms, abs=1e-3) and out["itl_ms"] == pytest.approx(
        est.itl_ms, abs=1e-3
    )
    assert main(args[:-1] + ["--mode", "prefill", "--quantization", "fp8"]) == 0
    text = capsys.readouterr().out
    assert "fp8 weights" in text and "TTFT" in text and "KV capacity" in text


def test_estimate_cli_errors_are_one_line(capsys):
    base = [
        "estimate",
        "--model",
        str(MODELS / "Qwen3-32B"),
        "--gpu",
        "h200_sxm",
        "--backend",
        "vllm",
        "--isl",
        "3000",
        "--osl",
        "150",
        "--batch",
        "16",
    ]
    assert main(base + ["--mapping", "tp3"]) == 2
    assert "64 attention heads are not divisible by TP 3" in capsys.readouterr().err
    assert main(base + ["--mapping", "tp2", "--mode", "train"]) == 2
    assert "--mode 'train' is not one of: prefill, decode, agg" in capsys.readouterr().err


class _PointByPoint:
    """An estimator that only answers one point at a time, as the AI Configurator adapter does."""

    name = "builtin"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def prefill_ttft_ms(self, isl: int, batch: int = 1) -> float:
        return float(self.inner.prefill_ttft_ms(int(isl), int(batch)))

    def decode_itl_ms(self, batch: int, context: int) -> float:
        return float(self.inner.decode_itl_ms(int(batch), int(context)))

    def max_kv_tokens(self) -> int:
        return self.inner.max_kv_tokens()

    def agg(self, isl: int, osl: int, concurrency: int):
        self.calls += 1
        return self.inner.agg(isl, osl, concurrency)


def test_offline_profile_takes_point_by_point_estimators():
    from slaprof.steps.perf.surfaces import estimator_for

    req = request("Qwen3-30B-A3B")
    plan = make_plan(req)
    cand = Candidate.parse("dep4")
    vectorised = offline_profile(req, plan, cand)
    pointwise = offline_profile(req, plan, cand, _PointByPoint(estimator_for(req, plan, cand)))
    assert [p.ttft_ms for p in pointwise.prefill] == pytest.approx([p.ttft_ms for p in vectorised.prefill])
    assert [d.itl_ms for d in pointwise.decode] == pytest.approx([d.itl_ms for d in vectorised.decode])
    assert len(pointwise.decode) == len(vectorised.decode) > 20


class _Counting:
    """A point-at-a-time estimator (like AI Configurator) that counts its calls."""

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, 0, "counting"

    def prefill_ttft_ms(self, isl: int, batch: int = 1) -> float:
        if np.ndim(isl):
            raise TypeError("one point at a time")
        self.calls += 1
        return float(self.inner.prefill_ttft_ms(isl, batch))

    def decode_itl_ms(self, batch: int, context: int) -> float:
        if np.ndim(batch):
            raise TypeError("one point at a time")
        self.calls += 1
        return float(self.inner.decode_itl_ms(batch, context))

    def max_kv_tokens(self) -> int:
        return self.inner.max_kv_tokens()

    def agg(self, isl: int, osl: int, concurrency: int):
        return self.inner.agg(isl, osl, concurrency)


def test_anchored_surfaces_ask_the_slow_estimator_at_a_few_points_only():
    from slaprof.steps.perf.anchored import AnchoredEstimator, anchor_values

    assert anchor_values([100, 200, 400, 800, 1600, 3200, 6400]) == [100, 800, 6400]
    assert anchor_values([5, 7]) == [5, 7]
    # the "exact" estimator is another GPU's model, so the shapes differ as two real estimators do
    exact = _Counting(estimator("Qwen3-32B", "tp2", gpu="h100_sxm"))
    shape = estimator("Qwen3-32B", "tp2", gpu="h200_sxm")
    req = build_request({"model": str(MODELS / "Qwen3-32B"), "backend": "vllm", "sla": {"isl": 3000, "osl": 300}})
    plan = make_plan(req)
    cand = Candidate.parse("tp2")
    full = offline_profile(req, plan, cand, estimator=exact)
    every_point = exact.calls
    exact.calls = 0
    anchored = offline_profile(req, plan, cand, estimator=AnchoredEstimator(exact, shape))
    assert every_point == len(full.prefill) + len(full.decode) + len(full.prefill_load) > 40
    assert exact.calls <= 3 + 9 + 1  # the prefill-under-load points share one ISL: one anchor
    pre = [a.ttft_ms / e.ttft_ms - 1 for a, e in zip(anchored.prefill, full.prefill)]
    dec = [a.itl_ms / e.itl_ms - 1 for a, e in zip(anchored.decode, full.decode)]
    assert max(map(abs, pre)) < 0.10 and max(map(abs, dec)) < 0.10
    assert min(map(abs, pre)) < 1e-12 and min(map(abs, dec)) < 1e-12  # anchors are exact
    # an aggregated engine's concurrency sweep: three exact points, the rest in the model's shape
    agg = Candidate.parse("agg-tp2")
    full = offline_profile(req, plan, agg, estimator=exact)
    exact.calls = 0
    anchored = offline_profile(req, plan, agg, estimator=AnchoredEstimator(exact, shape))
    assert len(full.agg) > 10 and exact.calls <= 3 + 9 + 3
    ttft = [a.ttft_ms / e.ttft_ms - 1 for a, e in zip(anchored.agg, full.agg)]
    itl = [a.itl_ms / e.itl_ms - 1 for a, e in zip(anchored.agg, full.agg)]
    assert min(map(abs, ttft)) < 1e-12 and min(map(abs, itl)) < 1e-12
    assert max(map(abs, ttft)) < 0.25 and max(map(abs, itl)) < 0.25


def test_offline_surfaces_of_aggregated_engines_and_busy_prefill_engines():
    from slaprof.steps.dag.plan import agg_concurrencies

    req = build_request({"model": str(MODELS / "Qwen3-32B"), "backend": "vllm", "sla": {"isl": 3000, "osl": 300}})
    plan = make_plan(req)
    est = estimator("Qwen3-32B", "tp2", gpu="h200_sxm")
    # a prefill engine with more prompts in flight: each waits longer, the engine turns out more tokens
    prof = offline_profile(req, plan, Candidate.parse("tp2"))
    loads = prof.prefill_load
    assert [p.concurrency for p in loads][:4] == [1, 2, 3, 4] and {p.isl for p in loads} == {3000}
    assert all(b.ttft_ms > a.ttft_ms for a, b in zip(loads, loads[1:]))
    assert loads[0].ttft_ms == pytest.approx(est.prefill_ttft_ms(3000, 1))
    assert loads[-1].thpt_per_gpu >= loads[0].thpt_per_gpu
    assert all(p.concurrency * 3000 <= prof.max_kv_tokens for p in loads)
    # an aggregated engine: the performance model's aggregated mode over a geometric concurrency sweep
    agg = offline_profile(req, plan, Candidate.parse("agg-tp2"))
    assert agg.status == "ok" and not agg.prefill_load and agg.prefill and agg.decode
    conc = [p.concurrency for p in agg.agg]
    assert conc == agg_concurrencies(agg.max_kv_tokens, 3000, 300, 40) and conc[0] == 1
    assert conc[-1] == min(agg.max_kv_tokens // 3150, 2000)
    for p in agg.agg[::7]:
        expected = est.agg(3000, 300, p.concurrency)
        assert (p.ttft_ms, p.itl_ms, p.thpt_per_gpu) == pytest.approx(
            (expected.ttft_ms, expected.itl_ms, expected.thpt_per_gpu)
        )
    assert agg.agg[-1].ttft_ms > agg.agg[0].ttft_ms and agg.agg[-1].itl_ms > agg.agg[0].itl_ms
    # DEP sweeps in multiples of the attention-DP size
    assert all(c % 4 == 0 for c in agg_concurrencies(10**6, 3000, 300, 12, attn_dp=4))
