"""Honest error bars: a lone request's TTFT against its physics bound, the prediction intervals of
offline estimates, and risk-aware selection with `--confidence`."""

from __future__ import annotations

import json
import math
import re

import pytest

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import AggPoint, CandidateProfile, Provenance
from slaprof.steps.dag.fit import fit_profiles
from slaprof.steps.perf.intervals import (
    Context,
    cross_system_widening,
    fit_intervals,
    load_intervals,
    new_system_stretch,
)
from slaprof.steps.perf.roofline import LONE_REQUEST_OVERHEAD_MAX_MS, BuiltinEstimator
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info_from_dir
from tests.conftest import MODELS
from tests.test_fit import ISL, OSL, make_plan_for, make_request

BACKENDS = ("vllm", "sglang", "trtllm")


# ---------------------------------------------------------------------------
# a lone request
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model,mapping", [("Qwen3-30B-A3B", "tp1"), ("Qwen3-32B", "tp2"), ("Llama-3.1-8B", "tp1")])
def test_lone_request_ttft_stays_within_the_roofline_plus_launch_bound(backend, model, mapping):
    est = BuiltinEstimator(
        load_model_info_from_dir(MODELS / model), get_gpu("h200_sxm"), backend, Candidate.parse(mapping)
    )
    # the launch overhead of one request is tens of ms, not the queueing of loaded benchmarks
    assert 0 < est.k.request_overhead_ms <= LONE_REQUEST_OVERHEAD_MAX_MS
    for isl in (128, 2000, 8000):
        lone = est.agg(isl, 500, 1).ttft_ms
        assert est.lone_bound_ms(isl) * (1 - 1e-9) <= lone <= 1.5 * est.lone_bound_ms(isl), (isl, lone)
        assert float(est.prefill_ttft_ms(isl, 1)) <= 1.5 * est.lone_bound_ms(isl)
    # what loaded engines add (admission queueing, waves of prompts) is not charged to a lone request
    assert est.agg(2000, 500, 64).ttft_ms > est.agg(2000, 500, 1).ttft_ms
    assert float(est.request_ms(2000, 16)) == float(est.request_ms(2000, 1)) + 4 * est.k.admission_ms


# ---------------------------------------------------------------------------
# prediction intervals
# ---------------------------------------------------------------------------
def test_packaged_intervals_name_their_source_and_cover_every_backend_and_phase():
    cal = load_intervals()
    assert "silicon_sample.csv" in cal.source and cal.fitted_at and cal.method
    for backend in BACKENDS:
        for phase in ("ttft", "itl"):
            assert f"{phase}/{backend}" in cal.groups
    ctx = Context("vllm", 3000, structure="dense")
    narrow, wide = ctx.band(100.0, "ttft", 8, 0.5), ctx.band(100.0, "ttft", 8, 0.95)
    assert wide.lo < narrow.lo < narrow.hi < wide.hi
    # a quantile above the median is never less safe than the estimate, and 0.5 is the estimate itself
    assert ctx.at_confidence(100.0, "ttft", 8, 0.5) == 100.0
    assert ctx.at_confidence(100.0, "ttft", 8, 0.9) >= 100.0 >= ctx.at_confidence(100.0, "ttft", 8, 0.1)
    assert ctx.at_confidence(100.0, "ttft", 8, 0.95) >= ctx.at_confidence(100.0, "ttft", 8, 0.9)


def test_intervals_learn_quantiles_per_group_and_fall_back_to_coarser_groups():
    # two systems, vLLM TTFT: lone prompts estimated exactly, loaded ones 2x too low with scatter
    rows = []
    for system in ("h100_sxm", "h200_sxm"):
        for i in range(60):
            rows.append((system, "ttft", "vllm", 1.0, 1000, "dense", 0.0))
            rows.append((system, "ttft", "vllm", 100.0, 1000, "dense", 0.69 + (i - 30) / 300))
    cal = fit_intervals(rows, "hand-made", "2026-01-01T00:00:00+00:00", min_rows=40)
    lone = cal.factor(0.5, "ttft", "vllm", 1.0, 1000, "dense")
    loaded = cal.factor(0.5, "ttft", "vllm", 100.0, 1000, "dense")
    assert lone == pytest.approx(1.0, abs=0.01) and loaded == pytest.approx(2.0, rel=0.02)
    # a load bin without rows answers from the (backend, phase) group
    assert cal.group("ttft", "vllm", 10.0, 1000, "dense") is cal.groups["ttft/vllm"]
    # nothing calibrated for a backend: its estimates stand as they are
    assert cal.factor(0.9, "itl", "sglang", 4.0, 1000, "moe") == 1.0


@pytest.mark.parametrize("model,structure", [("Qwen3-32B", "dense"), ("Qwen3-30B-A3B", "moe"), ("DeepSeek-V3", "mla")])
def test_an_mla_model_has_intervals_of_its_own(model, structure):
    # TRT-LLM TTFT on the calibration GPUs: MLA models (DeepSeek) land 2.4x above the estimate,
    # other MoE models 1.25x; an MLA model must not borrow the other MoE models' interval
    assert load_model_info_from_dir(MODELS / model).structure == structure
    rows = [
        (system, "ttft", "trtllm", 8.0, 1000, kind, offset + (i - 30) / 300)
        for system in ("h100_sxm", "h200_sxm")
        for kind, offset in (("moe", 0.22), ("mla", 0.86), ("dense", 0.30))
        for i in range(60)
    ]
    cal = fit_intervals(rows, "hand-made", "")
    medians = {k: cal.factor(0.5, "ttft", "trtllm", 8.0, 1000, k) for k in ("dense", "moe", "mla")}
    assert medians["mla"] == pytest.approx(math.exp(0.86), rel=0.02)
    assert medians["moe"] == pytest.approx(math.exp(0.22), rel=0.02)
    assert cal.group("ttft", "trtllm", 8.0, 1000, "mla") is cal.groups["ttft/trtllm/load5-16/mla/isl<=2048"]


@pytest.mark.parametrize("systems", [2, 3, 4])
@pytest.mark.parametrize("shift_over_scatter", [0.1, 0.5, 2.0])
def test_new_gpu_stretch_recovers_the_random_effects_ratio(systems, shift_over_scatter):
    # shift variance t, scatter w = 1: quantiles pooled over m systems spread as 1 + t(m-1)/m and a
    # new system's rows as 1 + t(1 + 1/m); the left-out stretch is that ratio at m = systems - 1
    def ratio(m: int) -> float:
        return math.sqrt((1 + shift_over_scatter * (1 + 1 / m)) / (1 + shift_over_scatter * (m - 1) / m))

    assert new_system_stretch(ratio(systems - 1), systems) == pytest.approx(ratio(systems), rel=1e-9)
    # the pooled quantiles already hold part of the shift: less stretch than the left-out factor
    assert 1.0 < new_system_stretch(ratio(systems - 1), systems) < ratio(systems - 1)


def test_new_gpu_stretch_is_none_without_a_shift_and_bounded_by_the_shift_alone():
    assert new_system_stretch(1.0, 2) == 1.0 and new_system_stretch(1.3, 1) == 1.3
    # with two systems the stretch grows with the left-out factor towards sqrt(3) (shift only)
    stretches = [new_system_stretch(k, 2) for k in (1.1, 1.5, 2.0, 4.0, 40.0)]
    assert stretches == sorted(stretches) and stretches[-1] < math.sqrt(3.0)
    # with three systems a left-out factor past what a shift can explain stops at sqrt(2)
    assert new_system_stretch(5.0, 3) == pytest.approx(math.sqrt(2.0))


def test_intervals_stretch_pooled_quantiles_less_than_the_left_out_factor():
    # two GPUs whose vLLM ITL errors are offset by 0.4 with the same scatter
    rows = [
        (system, "itl", "vllm", 8.0, 1000, "dense", offset + (i - 50) / 250)
        for system, offset in (("h100_sxm", -0.2), ("h200_sxm", 0.2))
        for i in range(100)
    ]
    left_out = cross_system_widening(rows, 40)["itl/vllm"]
    shipped = fit_intervals(rows, "hand-made", "")
    baseline = fit_intervals(rows, "hand-made", "", stretch=lambda k, _n: k)
    assert left_out > 1.0
    assert f"itl/vllm {round(new_system_stretch(left_out, 2), 3):g}" in shipped.method

    def width(cal):
        return cal.factor(0.9, "itl", "vllm", 8.0, 1000, "dense") / cal.factor(0.1, "itl", "vllm", 8.0, 1000, "dense")

    unstretched = fit_intervals(rows, "hand-made", "", stretch=lambda _k, _n: 1.0)
    assert width(unstretched) < width(shipped) < width(baseline)


# ---------------------------------------------------------------------------
# risk-aware selection
# ---------------------------------------------------------------------------
def _agg(cid: str, ttft: float, itl: float, thpt: float, method: str = "offline") -> CandidateProfile:
    points = [AggPoint(isl=ISL, osl=OSL, concurrency=8, ttft_ms=ttft, itl_ms=itl, thpt_per_gpu=thpt)]
    return CandidateProfile(
        candidate=Candidate.parse(cid),
        status="ok",
        max_kv_tokens=400_000,
        agg=points,
        provenance=Provenance(method=method, backend="vllm"),
    )


AGG_BANDED = re.compile(
    r"^Suggested aggregated TP:(\d+) \(TTFT (\d+\.\d\d) ms \[80%: ([\d.]+)-([\d.]+)\], "
    r"ITL (\d+\.\d\d) ms \[80%: ([\d.]+)-([\d.]+)\], throughput (\d+\.\d\d) tokens/s/GPU, concurrency (\d+)\)$"
)


def test_higher_confidence_picks_the_larger_safer_engine():
    # TP:1 meets the 100 ms TTFT target by 3% on its estimate and delivers more per GPU; TP:2 by 60%
    profiles = [_agg("agg-tp1", 97.0, 12.0, 400.0), _agg("agg-tp2", 40.0, 6.0, 300.0)]
    plan = make_plan_for(["agg-tp1", "agg-tp2"])
    picks = {}
    for confidence in (0.5, 0.9):
        request = make_request(ttft_ms=100.0, itl_ms=20.0, confidence=confidence)
        sel = fit_profiles(request, plan, profiles).selection
        assert sel.deployment is not None and sel.deployment.meets_sla
        picks[confidence] = sel.deployment.engines[0].candidate.num_gpus
        line = AGG_BANDED.match(sel.recommendation[0])
        assert line, sel.recommendation[0]
        ttft, lo, hi = (float(x) for x in line.group(2, 3, 4))
        assert float(lo) < float(hi) and lo <= ttft * 1.001
    assert picks == {0.5: 1, 0.9: 2}
    # at 0.5 the numbers are the estimates, exactly as without intervals
    sel = fit_profiles(make_request(ttft_ms=100.0, itl_ms=20.0), plan, profiles).selection
    assert sel.recommendation[0].startswith("Suggested aggregated TP:1 (TTFT 97.00 ms [80%: ")


def test_measured_profiles_are_judged_as_measured_and_print_no_interval():
    profiles = [_agg("agg-tp1", 97.0, 12.0, 400.0, "simulate"), _agg("agg-tp2", 60.0, 8.0, 300.0, "simulate")]
    request = make_request(ttft_ms=100.0, itl_ms=20.0, confidence=0.9)
    sel = fit_profiles(request, make_plan_for(["agg-tp1", "agg-tp2"]), profiles).selection
    assert sel.recommendation[0] == (
        "Suggested aggregated TP:1 (TTFT 97.00 ms, ITL 12.00 ms, throughput 400.00 tokens/s/GPU, concurrency 8)"
    )


def test_confidence_outside_zero_one_is_refused(capsys):
    assert main(["plan", "--model", str(MODELS / "Qwen3-32B"), "--confidence", "1.5"]) == 2
    assert "confidence" in capsys.readouterr().err


def test_default_constants_keep_a_lone_request_unqueued():
    from slaprof.steps.perf.constants import BackendConstants

    assert BackendConstants().admission_ms == 0.0


# ---------------------------------------------------------------------------
# measured beats estimated
# ---------------------------------------------------------------------------
def test_measured_points_are_checked_against_the_estimates_interval_in_fit_and_report():
    from slaprof.steps.core.results import PrefillPoint
    from slaprof.steps.fitting.report import render_html
    from slaprof.steps.perf import get_estimator
    from tests.test_fit import make_profile

    plan = make_plan_for(["tp2"])
    request = make_request()
    est = get_estimator(plan.model, get_gpu(plan.gpu), plan.backend, Candidate.parse("tp2"))
    near, far = float(est.prefill_ttft_ms(ISL, 1)), 20 * float(est.prefill_ttft_ms(8000, 1))
    prof = make_profile("tp2").model_copy(
        update={
            "prefill": [
                PrefillPoint(isl=ISL, ttft_ms=near, thpt_per_gpu=1000.0),
                PrefillPoint(isl=8000, ttft_ms=far, thpt_per_gpu=1000.0),
            ],
            "provenance": Provenance(method="online", backend="vllm"),
        }
    )
    result = fit_profiles(request, plan, [prof])
    checks = {c.point: c for c in result.interval_checks}
    assert checks[f"prefill ISL {ISL}"].where == "inside"
    assert checks["prefill ISL 8000"].where == "above" and checks["prefill ISL 8000"].measured_ms == far
    assert any(p.startswith("decode ") for p in checks)
    # the measurements drove the selection: their numbers, with no interval on the lines
    assert result.selection.prefill is None or "[80%" not in result.selection.recommendation[0]
    html = render_html(result, request, {})
    assert "id='interval-checks'" in html and f"of {len(checks)} measured points fell inside" in html
    # an all-estimated run has nothing to check
    assert fit_profiles(request, plan, [make_profile("tp2")]).interval_checks == []


def test_estimate_prints_each_numbers_interval(capsys):
    args = ["estimate", "--model", str(MODELS / "Qwen3-32B"), "--gpu", "h200_sxm", "--backend", "vllm"]
    args += ["--mapping", "tp2", "--isl", "3000", "--osl", "500", "--batch", "8", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    ctx, load = Context("vllm", 3000, structure="dense"), 8 / 1
    band = ctx.band(out["ttft_ms"], "ttft", load)
    assert out["ttft_ms_80"] == [pytest.approx(band.lo, abs=1e-3), pytest.approx(band.hi, abs=1e-3)]
    lo, hi = out["itl_ms_80"]
    t_lo, t_hi = out["thpt_per_gpu_80"]
    # throughput follows the pace of decoding: the slowest ITL gives the lowest throughput
    assert lo < hi and t_lo < t_hi and t_lo == pytest.approx(out["thpt_per_gpu"] * out["itl_ms"] / hi, rel=1e-3)
    assert main(args[:-1]) == 0
    assert "ms  [80%: " in capsys.readouterr().out
