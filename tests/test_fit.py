"""DAG step `fit`: every selection branch on hand-built profiles, the recommendation lines, the
outputs it writes (local folder and a real S3 server) and the `fit` / `select` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import AggPoint, CandidateProfile, DecodePoint, PrefillPoint, Provenance, Selection
from slaprof.steps.core.store import Layout, LocalStore, open_store, read_model, write_model
from slaprof.steps.dag.fit import fit_profiles, pareto_front, run_step
from slaprof.steps.dag.plan import Plan, PlannedCandidate, SweepGrid, make_plan
from tests.conftest import MODELS

ISL, OSL = 3000, 500
CONTEXT = ISL + OSL // 2


# ---------------------------------------------------------------------------
# builders (also used by the planner-data, interpolation and report tests)
# ---------------------------------------------------------------------------
def ttft_model(isl: float, size: int) -> float:
    """A physically shaped TTFT: fixed cost + linear GEMMs + quadratic attention, split over GPUs."""
    return 8.0 + (0.03 * isl + 2e-6 * isl * isl) / size**0.8


def itl_model(batch: float, context: float, size: int) -> float:
    """ITL: weights read (shrinks with TP) + per-sequence work + KV read of the active tokens."""
    return 2.0 + 12.0 / size + 0.02 * batch / size + 4e-6 * batch * context / size


def make_profile(
    cid: str,
    *,
    prefill: dict[int, float] | None = None,
    decode: list[tuple[int, int, float]] | None = None,
    max_kv: int = 400_000,
    status: str = "ok",
    reason: str = "",
    isls: list[int] | None = None,
    decode_isls: list[int] | None = None,
    osl: int = OSL,
) -> CandidateProfile:
    """A profile of candidate `cid`. prefill: {isl: ttft}; decode: [(isl, concurrency, itl)];
    by default both come from the models above on the usual sweep grids."""
    cand = Candidate.parse(cid)
    g = cand.num_gpus
    if prefill is None and status == "ok":
        prefill = {i: ttft_model(i, g) for i in (isls or [100, 2000, ISL, 8000, 16000, 24000, 32000])}
    if decode is None and status == "ok":
        decode = []
        for isl in decode_isls or [100, ISL, 8000, 16000, 24000]:
            ctx = isl + osl // 2
            most = min(max_kv // (isl + osl), 2000)
            for conc in sorted({max(1, int(round(x))) for x in np.linspace(1, most, 6)}):
                decode.append((isl, conc, itl_model(conc, ctx, g)))
    pre = [PrefillPoint(isl=i, ttft_ms=t, thpt_per_gpu=i / (t / 1e3) / g) for i, t in sorted((prefill or {}).items())]
    dec = [
        DecodePoint(
            isl=i,
            context=i + osl // 2,
            concurrency=c,
            kv_usage=min(1.0, c * (i + osl // 2) / max_kv),
            itl_ms=t,
            thpt_per_gpu=c / (t / 1e3) / g,
        )
        for i, c, t in (decode or [])
    ]
    return CandidateProfile(
        candidate=cand,
        status=status,
        reason=reason,
        max_kv_tokens=max_kv if status == "ok" else 0,
        prefill=pre,
        decode=dec,
        provenance=Provenance(method="offline", backend="vllm"),
    )


def make_agg_profile(cid: str, best_thpt_per_gpu: float, conc_at_best: int = 24) -> CandidateProfile:
    """An aggregated candidate whose best SLA-meeting point (TTFT 80 ms, ITL 15 ms against the usual
    100 / 20 ms targets) delivers `best_thpt_per_gpu`; the next point misses both targets."""
    points = [
        AggPoint(isl=ISL, osl=OSL, concurrency=c, ttft_ms=t, itl_ms=i, thpt_per_gpu=best_thpt_per_gpu * f)
        for c, t, i, f in ((1, 40.0, 8.0, 0.1), (conc_at_best, 80.0, 15.0, 1.0), (4 * conc_at_best, 400.0, 40.0, 2.0))
    ]
    return CandidateProfile(
        candidate=Candidate.parse(cid),
        status="ok",
        max_kv_tokens=400_000,
        agg=points,
        provenance=Provenance(method="offline", backend="vllm"),
    )


def make_request(**sla: float) -> ProfileRequest:
    values = {"isl": ISL, "osl": OSL, "ttft_ms": 100.0, "itl_ms": 20.0, **sla}
    return ProfileRequest(model=str(MODELS / "Qwen3-32B"), sla=values)


def make_plan_for(ids: list[str], dropped: dict[str, str] | None = None) -> Plan:
    """A plan listing `ids` as runnable and `dropped` (id -> reason) as dropped."""
    real = make_plan(make_request())
    planned = [
        PlannedCandidate(candidate=Candidate.parse(c), status="runnable", weight_gib_per_gpu=1.0, kv_tokens_estimate=1)
        for c in ids
    ]
    planned += [
        PlannedCandidate(
            candidate=Candidate.parse(c), status="dropped", reason=r, weight_gib_per_gpu=1.0, kv_tokens_estimate=0
        )
        for c, r in (dropped or {}).items()
    ]
    grid = SweepGrid(
        max_context=40960, prefill_isls=[100, ISL], decode_isls=[100, ISL], decode_osl=OSL, decode_granularity=6
    )
    return real.model_copy(update={"candidates": planned, "grid": grid})


def verdict(sel: Selection, cid: str, phase: str):
    return next(v for v in sel.verdicts if v.candidate_id == cid and v.phase == phase)


# ---------------------------------------------------------------------------
# selection branches
# ---------------------------------------------------------------------------
def _truth(result, request, plan):
    """The best SLA-meeting disaggregated deployment, by brute force over fit's own operating points."""
    from slaprof.steps.dag.fit import _workload
    from slaprof.steps.fitting.deployments import PrefillLoad
    from tests.test_deployments import brute_force

    w = _workload(request, plan)
    loads = [PrefillLoad(o.candidate, o.candidate.attn_dp, o.ttft_ms, o.thpt_per_gpu) for o in result.prefill_options]
    return brute_force(loads, result.decode_options, w), w


def test_feasible_picks_the_deployment_with_most_tokens_per_gpu():
    profiles = [make_profile(c) for c in ("tp1", "tp2", "tp4")]
    request = make_request(ttft_ms=100.0, itl_ms=20.0)
    plan = make_plan_for(["tp1", "tp2", "tp4"])
    result = fit_profiles(request, plan, profiles)
    sel = result.selection
    (per_gpu, (p_id, x, d_id, y)), w = _truth(result, request, plan)
    chosen = sel.deployment
    assert chosen is not None and chosen.mode == "disagg" and chosen.meets_sla
    assert chosen.thpt_per_gpu == pytest.approx(per_gpu) and chosen.gpus <= 8
    pg, dg = chosen.group("prefill"), chosen.group("decode")
    # the user's TTFT: the prefill engine's, the KV transfer and the decode worker's first token
    assert pg.ttft_ms is not None and dg.itl_ms is not None
    assert chosen.ttft_ms == pytest.approx(pg.ttft_ms + w.transfer_ms + 1.5 * dg.itl_ms) and w.transfer_ms > 0
    # the Dynamo lines describe the deployment's engines
    assert sel.prefill.candidate == pg.candidate and sel.prefill.ttft_ms == pytest.approx(pg.ttft_ms)
    assert sel.decode.candidate == dg.candidate and sel.decode.concurrency == dg.concurrency
    assert sel.prefill.meets_sla and sel.decode.meets_sla and not sel.prefill.interpolated
    assert (sel.replicas.prefill, sel.replicas.decode, sel.replicas.total_gpus) == (
        pg.replicas,
        dg.replicas,
        chosen.gpus,
    )
    assert sel.nearest_sla is None
    assert verdict(sel, pg.candidate.id, "prefill").status == "chosen"
    assert verdict(sel, dg.candidate.id, "decode").status == "chosen"
    losers = [v for v in sel.verdicts if v.phase == "prefill" and v.status == "lost"]
    assert len(losers) == 2 and all(v.reason for v in losers)
    # the other mode was allowed but has no candidate: the comparison line says so
    assert sel.recommendation[-1] == "Other mode: no aggregated candidate was profiled or produced results"


def measured(prof: CandidateProfile) -> CandidateProfile:
    """`prof` as measured on GPUs: its numbers carry no prediction interval."""
    return prof.model_copy(update={"provenance": Provenance(method="online", backend="vllm")})


def test_recommendation_lines_match_dynamo_format():
    # measured numbers print exactly Dynamo's lines (estimates add their interval: tests/test_intervals.py)
    prof = measured(make_profile("tp4", prefill={ISL: 48.37}, decode=[(ISL, 1, 4.83)]))
    prof.prefill[0].thpt_per_gpu = 15505.23
    prof.decode[0].thpt_per_gpu = 51.22
    sel = fit_profiles(make_request(), make_plan_for(["tp4"]), [prof]).selection
    # one decode request per engine (51.22 tokens/s/GPU x 4 GPUs / 500 tokens) bounds the deployment
    per_gpu = 51.22 * 4 / OSL * OSL / 8
    assert sel.recommendation[:3] == [
        "Suggested prefill TP:4 (TTFT 48.37 ms, throughput 15505.23 tokens/s/GPU)",
        "Suggested decode TP:4 (ITL 4.83 ms, throughput 51.22 tokens/s/GPU)",
        f"Suggested deployment: 1 x prefill TP:4 + 1 x decode TP:4 on 8 GPUs ({per_gpu:.1f} tokens/s/GPU)",
    ]
    for cid, label in (("tep8", "TEP:8"), ("dep8", "DEP:8")):
        # an 8-GPU engine leaves no GPU for the other phase: each phase is chosen on its own
        p = measured(make_profile(cid, prefill={ISL: 30.0}, decode=[(ISL, 8, 6.5)]))
        sel = fit_profiles(make_request(), make_plan_for([cid]), [p]).selection
        lines = sel.recommendation
        assert lines[0].startswith(f"Suggested prefill {label} (TTFT 30.00 ms, throughput ")
        assert lines[1].startswith(f"Suggested decode {label} (ITL 6.50 ms, throughput ")
        assert lines[1].endswith(" tokens/s/GPU)") and len(lines) == 2
        assert sel.deployment is None and any("fits the budget of 8 GPUs" in w for w in sel.warnings)


def test_tie_goes_to_smaller_engines():
    # TP4 serves twice what TP2 does, prefill and decode alike, so every split of 8 GPUs delivers the
    # same tokens/s per GPU: the smaller engines must win, whatever order the profiles come in
    # (TP2: 1.6 requests/s prefill at 625 ms, and 4 x 1000 / 5 ms / 500 tokens = 1.6 decode)
    a = make_profile("tp4", prefill={ISL: 312.5}, decode=[(ISL, 8, 5.0)])
    b = make_profile("tp2", prefill={ISL: 625.0}, decode=[(ISL, 4, 5.0)])
    assert a.prefill[0].thpt_per_gpu == pytest.approx(b.prefill[0].thpt_per_gpu)
    assert a.decode[0].thpt_per_gpu == pytest.approx(b.decode[0].thpt_per_gpu)
    for order in ([a, b], [b, a]):
        sel = fit_profiles(make_request(ttft_ms=1000.0), make_plan_for(["tp4", "tp2"]), order).selection
        assert sel.deployment.shape == "2 x prefill TP:2 + 2 x decode TP:2"
        assert "1.00x the tokens/s per GPU" in verdict(sel, "tp4", "prefill").reason
        assert "1.00x the tokens/s per GPU" in verdict(sel, "tp4", "decode").reason


def test_infeasible_picks_the_nearest_deployment_and_reports_it():
    profiles = [make_profile(c) for c in ("tp1", "tp2", "tp4")]
    request = make_request(ttft_ms=1.0, itl_ms=0.5)
    result = fit_profiles(request, make_plan_for(["tp1", "tp2", "tp4"]), profiles)
    sel = result.selection
    chosen = sel.deployment
    assert chosen is not None and not chosen.meets_sla
    ratio = lambda o: max(o.ttft_ms / 1.0, o.itl_ms / 0.5)  # noqa: E731
    assert ratio(chosen) == pytest.approx(min(ratio(o) for o in result.deployments["disagg"]))
    assert not sel.prefill.meets_sla and not sel.decode.meets_sla
    assert sel.nearest_sla is not None and set(sel.nearest_sla) == {"ttft_ms", "itl_ms"}
    for key, reached in (("ttft_ms", chosen.ttft_ms), ("itl_ms", chosen.itl_ms)):
        # rounded up to 0.01 ms: the planner must not be given a target below what the engine reaches
        assert reached - 1e-6 <= sel.nearest_sla[key] < reached + 0.01
        assert sel.nearest_sla[key] == round(sel.nearest_sla[key], 2)
    assert any("No deployment within 8 GPUs satisfies the SLA" in w for w in sel.warnings)
    # the lines are still printed, as Dynamo does
    assert len(sel.recommendation) == 4


def test_one_target_missed_keeps_the_other_in_nearest_sla():
    profiles = [make_profile("tp1"), make_profile("tp2")]
    sel = fit_profiles(make_request(ttft_ms=1.0, itl_ms=50.0), make_plan_for(["tp1", "tp2"]), profiles).selection
    assert not sel.prefill.meets_sla and sel.decode.meets_sla
    assert sel.nearest_sla["itl_ms"] == 50.0
    assert sel.nearest_sla["ttft_ms"] == pytest.approx(sel.deployment.ttft_ms, abs=0.01)


def test_failed_infeasible_dropped_and_missing_candidates_are_listed():
    profiles = [
        make_profile("tp2"),
        make_profile("tp4", status="failed", reason="engine exited with code 1: CUDA out of memory"),
        make_profile("tp8", status="infeasible", reason="KV cache holds no request of the decode sweep"),
    ]
    plan = make_plan_for(["tp2", "tp4", "tp8", "tp16"], dropped={"tp1": "weights exceed the GPU memory budget"})
    sel = fit_profiles(make_request(), plan, profiles).selection
    by_id = {v.candidate_id: v for v in sel.verdicts if v.phase == "both"}
    assert by_id["tp1"].status == "infeasible" and "weights exceed" in by_id["tp1"].reason
    assert by_id["tp4"].status == "failed" and "CUDA out of memory" in by_id["tp4"].reason
    assert by_id["tp8"].status == "infeasible" and "KV cache" in by_id["tp8"].reason
    assert by_id["tp16"].status == "failed" and "profiles/tp16.json is missing" in by_id["tp16"].reason
    assert sel.prefill.candidate.id == "tp2" and sel.decode.candidate.id == "tp2"
    assert any(w.startswith("tp4 failed") for w in sel.warnings)
    assert any(w.startswith("tp16 failed") for w in sel.warnings)


def test_no_usable_profile_gives_no_recommendation():
    profiles = [make_profile("tp2", status="failed", reason="boom")]
    result = fit_profiles(make_request(), make_plan_for(["tp2"]), profiles)
    assert result.selection.prefill is None and result.selection.decode is None
    assert result.selection.recommendation == []
    assert result.prefill_data is None and result.decode_data is None
    assert "No prefill results produced; no prefill recommendation" in result.selection.warnings


def test_rate_is_served_with_the_fewest_gpus():
    profiles = [make_profile(c) for c in ("tp1", "tp2")]
    rate = 40.0
    request = ProfileRequest(
        model=str(MODELS / "Qwen3-32B"),
        sla={"isl": ISL, "osl": OSL, "ttft_ms": 150.0, "itl_ms": 20.0, "request_rate": rate},
        hardware={"total_gpus": 64},
    )
    result = fit_profiles(request, make_plan_for(["tp1", "tp2"]), profiles)
    sel = result.selection
    chosen, r = sel.deployment, sel.replicas
    assert chosen.serves_rate and chosen.request_rate >= rate and chosen.meets_sla
    pg, dg = chosen.group("prefill"), chosen.group("decode")
    assert (r.request_rate, r.prefill, r.decode) == (rate, pg.replicas, dg.replicas)
    assert r.prefill == math.ceil(rate / pg.request_rate) and r.decode == math.ceil(rate / dg.request_rate)
    assert r.total_gpus == chosen.gpus <= 64 and r.decode > 1  # this rate needs several decode engines
    # no other deployment serves the rate with fewer GPUs
    assert all(o.gpus >= chosen.gpus for o in result.deployments["disagg"] if o.serves_rate and o.meets_sla)
    # within one node it cannot be served: the best within 8 GPUs, with a warning
    small = request.model_copy(update={"hardware": request.hardware.model_copy(update={"total_gpus": 0})})
    sel = fit_profiles(small, make_plan_for(["tp1", "tp2"]), profiles).selection
    assert sel.deployment.gpus <= 8 and not sel.deployment.serves_rate
    assert any("serves 40 requests/s" in w for w in sel.warnings)


def test_aggregated_and_disaggregated_candidates_compete(tmp_path: Path):
    profiles = [make_profile(c) for c in ("tp1", "tp2", "tp4")]
    request = make_request(ttft_ms=100.0, itl_ms=20.0)
    plan = make_plan_for(["tp1", "tp2", "tp4", "agg-tp2"])
    best_disagg = fit_profiles(request, plan, profiles).selection.deployment
    for factor, winner in ((1.2, "agg"), (0.8, "disagg")):
        agg = make_agg_profile("agg-tp2", best_disagg.thpt_per_gpu * factor)
        result = fit_profiles(request, plan, [*profiles, agg])
        sel = result.selection
        assert sel.deployment.mode == winner and sel.alternative.mode != winner
        assert sel.deployment.thpt_per_gpu > sel.alternative.thpt_per_gpu
        assert sel.alternative.verdict.endswith(f"the tokens/s per GPU of the {dep_name(winner)} choice")
        if winner == "agg":
            # no prefill/decode engines deployed; the aggregated line, the deployment and the comparison
            assert sel.prefill is None and sel.decode is None and sel.replicas is None
            assert sel.recommendation[0].startswith("Suggested aggregated TP:2 (TTFT ")
            assert sel.recommendation[1].startswith("Suggested deployment: 4 x aggregated TP:2 on 8 GPUs (")
            assert sel.recommendation[2].startswith("Other mode: best disaggregated ")
            assert verdict(sel, "agg-tp2", "agg").status == "chosen"
            assert verdict(sel, best_disagg.group("prefill").candidate.id, "prefill").status == "lost"
        else:
            assert verdict(sel, "agg-tp2", "agg").status == "lost"
            assert sel.recommendation[-1].startswith("Other mode: best aggregated 4 x aggregated TP:2 on 8 GPUs")


def dep_name(mode: str) -> str:
    return {"agg": "aggregated", "disagg": "disaggregated"}[mode]


def test_missing_isl_and_context_are_interpolated():
    # the sweep never visited ISL 3000 nor context 3250: values come from the fitted curves
    profiles = [
        make_profile(c, isls=[100, 2000, 8000, 16000, 24000, 32000], decode_isls=[100, 8000, 16000, 24000])
        for c in ("tp1", "tp2")
    ]
    sel = fit_profiles(make_request(), make_plan_for(["tp1", "tp2"]), profiles).selection
    g = sel.prefill.candidate.num_gpus
    assert sel.prefill.interpolated
    assert sel.prefill.ttft_ms == pytest.approx(ttft_model(ISL, g), rel=0.01)
    assert sel.prefill.thpt_per_gpu == pytest.approx(ISL / (ttft_model(ISL, g) / 1e3) / g, rel=0.01)
    assert sel.decode.interpolated and sel.decode.context == CONTEXT
    truth = itl_model(sel.decode.concurrency, CONTEXT, sel.decode.candidate.num_gpus)
    assert sel.decode.itl_ms == pytest.approx(truth, rel=0.01)
    assert sel.decode.itl_ms <= 20.0
    # with the surface known everywhere the chosen concurrency sits right at the ITL target
    # (tp2 reaches 9 ms near concurrency 60, below the KV limit of 400000 // 3500 = 114)
    # (the TTFT target leaves room for the KV transfer and the first decode step)
    sel = fit_profiles(make_request(itl_ms=9.0, ttft_ms=150.0), make_plan_for(["tp2"]), profiles[1:]).selection
    chosen = sel.decode.concurrency
    assert itl_model(chosen, CONTEXT, 2) <= 9.0 * 1.005 and itl_model(chosen + 2, CONTEXT, 2) > 9.0


def test_measured_context_gains_the_interpolated_concurrency_at_the_itl_target():
    # six concurrencies from 1 to the KV limit: only concurrency 1 meets 8.3 ms on tp2, yet the
    # engine holds 18 requests within it; the choice must say so (and say it is interpolated)
    prof = make_profile("tp2")
    measured = sorted(d.concurrency for d in prof.decode if d.context == CONTEXT)
    assert [c for c in measured if itl_model(c, CONTEXT, 2) <= 8.3] == [1]
    sel = fit_profiles(make_request(itl_ms=8.3, ttft_ms=150.0), make_plan_for(["tp2"]), [prof]).selection
    d = sel.decode
    assert d.interpolated and d.concurrency == 18
    assert d.itl_ms == pytest.approx(itl_model(18, CONTEXT, 2), rel=1e-6) and d.itl_ms <= 8.3
    assert "interpolated" in verdict(sel, "tp2", "decode").reason
    # a target that a measured point meets exactly keeps the measured point
    target = next(x.itl_ms for x in prof.decode if x.context == CONTEXT and x.concurrency == measured[-1])
    sel = fit_profiles(make_request(itl_ms=target, ttft_ms=150.0), make_plan_for(["tp2"]), [prof]).selection
    assert sel.decode.concurrency == measured[-1] and not sel.decode.interpolated


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [
        ("a", 10.0, 100.0, 1),
        ("b", 12.0, 90.0, 1),
        ("c", 15.0, 300.0, 2),
        ("d", 20.0, 250.0, 4),
        ("e", 30.0, 400.0, 8),
    ]
    front = pareto_front(pts)
    assert [p.candidate_id for p in front] == ["a", "c", "e"]
    sel = fit_profiles(
        make_request(), make_plan_for(["tp1", "tp2"]), [make_profile("tp1"), make_profile("tp2")]
    ).selection
    lat = [p.latency_ms for p in sel.decode_pareto]
    thpt = [p.thpt_per_gpu for p in sel.decode_pareto]
    assert lat == sorted(lat) and thpt == sorted(thpt) and len(sel.decode_pareto) >= 2


# ---------------------------------------------------------------------------
# the DAG step and the commands
# ---------------------------------------------------------------------------
def _write_run(store, ids=("tp1", "tp2"), request: ProfileRequest | None = None) -> ProfileRequest:
    request = request or make_request()
    write_model(store, Layout.REQUEST, request)
    write_model(store, Layout.PLAN, make_plan_for(list(ids)))
    for cid in ids:
        write_model(store, Layout.profile(cid), make_profile(cid))
    return request


EXPECTED_KEYS = {
    Layout.SELECTION,
    Layout.PREFILL_NPZ,
    Layout.DECODE_NPZ,
    Layout.PREFILL_JSON,
    Layout.DECODE_JSON,
    Layout.REPORT,
}


def test_run_step_writes_every_output(tmp_path: Path):
    store = LocalStore(tmp_path)
    _write_run(store)
    sel = run_step(store)
    keys = set(store.list())
    assert EXPECTED_KEYS <= keys
    assert {"plots/prefill_performance.png", "plots/decode_performance.png", "plots/cost_sla.png"} <= keys
    assert read_model(store, Layout.SELECTION, Selection) == sel
    decode = json.loads(store.get_bytes(Layout.DECODE_JSON))
    assert decode["max_kv_tokens"] == sel.decode.max_kv_tokens


def test_run_step_rebuilds_a_missing_plan(tmp_path: Path):
    store = LocalStore(tmp_path)
    write_model(store, Layout.REQUEST, make_request())
    for cid in ("tp1", "tp2"):
        write_model(store, Layout.profile(cid), make_profile(cid))
    sel = run_step(store, report=False)
    planned = [p.id for p in make_plan(make_request()).candidates]
    assert {v.candidate_id for v in sel.verdicts} == set(planned) | {"tp1", "tp2"}
    missing = [v for v in sel.verdicts if v.status == "failed"]
    assert missing and all("is missing" in v.reason for v in missing)
    assert sel.prefill is not None and not store.exists(Layout.REPORT)


def test_run_step_on_s3(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = open_store("s3://fit-test/wf-1")
    _write_run(store)
    sel = run_step(store, report=False)
    keys = set(store.list())
    assert EXPECTED_KEYS - {Layout.REPORT} <= keys and Layout.REPORT not in keys
    assert Selection.model_validate_json(store.get_bytes(Layout.SELECTION)) == sel


def test_fit_command_writes_outputs_and_prints_lines(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    _write_run(LocalStore(run_dir))
    out = tmp_path / "out"
    assert main(["fit", "--profiles", str(run_dir), "--out", str(out), "--no-report"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Suggested prefill TP:") and printed[1].startswith("Suggested decode TP:")
    for key in EXPECTED_KEYS - {Layout.REPORT}:
        assert (out / key).is_file(), key
    assert not (out / Layout.REPORT).exists()
    # the output is self-contained for the render step
    assert (out / Layout.REQUEST).is_file() and (out / Layout.PLAN).is_file()


def test_select_retargets_from_stored_profiles(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    _write_run(LocalStore(run_dir), ids=("tp1", "tp2", "tp4"))
    assert main(["select", "--profiles", str(run_dir / "profiles"), "--ttft", "30", "--itl", "8", "--json"]) == 0
    loose = Selection.model_validate_json(capsys.readouterr().out)
    assert main(["select", "--profiles", str(run_dir), "--ttft", "1", "--itl", "1"]) == 0
    captured = capsys.readouterr()
    assert "Nearest achievable SLA: TTFT" in captured.out
    assert "No deployment within 8 GPUs satisfies the SLA (TTFT 1 ms, ITL 1 ms)" in captured.err
    assert loose.ttft_ms == 30 and loose.itl_ms == 8
    # a tighter TTFT target moves prefill to a bigger engine
    assert loose.prefill.candidate.num_gpus > 1
    # nothing was written to the run
    assert not (run_dir / Layout.SELECTION).exists()


def test_select_without_request_needs_a_model(tmp_path: Path, capsys):
    folder = tmp_path / "profiles"
    store = LocalStore(folder)
    write_model(store, "tp1.json", make_profile("tp1"))
    assert main(["select", "--profiles", str(folder), "--ttft", "50"]) == 2
    assert "no request.json" in capsys.readouterr().err
    assert main(["select", "--profiles", str(folder), "--model", str(MODELS / "Qwen3-32B"), "--itl", "30"]) == 0
    assert capsys.readouterr().out.startswith("Suggested prefill TP:1")
