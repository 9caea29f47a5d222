"""`slaprof profile --method simulate`: simulated engines measured with real AIPerf, two candidates
in worker processes, checked against the offline run; and Ctrl-C in the middle of a measurement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import CandidateProfile
from slaprof.steps.perf import get_estimator
from slaprof.steps.runner.local import RunOptions, run_profile
from slaprof.steps.runner.progress import PlainProgress
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info
from tests.conftest import MODELS, ROOT, SIMULATE_CLI
from tests.plugins.timing import like_the_model

# Qwen3-0.6B on one or two H200s; short prompts and coarse grids keep AIPerf runs few (3 a candidate)
REQUEST: dict[str, Any] = {
    "model": str(MODELS / "Qwen3-0.6B"),
    "serving": "disagg",
    "sla": {"isl": 300, "osl": 30, "ttft_ms": 200, "itl_ms": 50},
    "hardware": {"gpu": "h200_sxm", "max_gpus_per_engine": 2},
    "engine": {"max_context_length": 1024},
    "sweep": {"prefill_granularity": 2, "decode_granularity": 2},
}
# time_scale 50: each modelled millisecond lasts 50 wall ms, so HTTP and CPU noise on a busy
# 2-core machine stay small against a modelled step of a few ms; a 10k-token KV cache caps the
# concurrency at 30, so streaming to AIPerf does not starve the CPU either. The prefill ISLs are
# the plan's (one AIPerf run measures them all), so both runs fit the same prefill points.
QUICK_SWEEP = {
    "time_scale": 50.0,
    "sim_max_kv_tokens": 10_000,
    "max_decode_isls": 1,
    "max_concurrency_points": 2,
    # 3 prompts of 300 tokens fit one step of the 1,024-token budget the disaggregated engines get
    # (Plan.step_tokens): the engine admits whole prompts, the model splits a step evenly into chunks
    "prefill_load_per_rank": (3,),
}


def _close(measured: float, expected: float) -> bool:
    return like_the_model(measured, expected)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    base = tmp_path_factory.mktemp("simulate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLAPROF_TOKENIZER", str(tiny_tokenizer))  # inherited by the worker processes
        simulate = run_profile(
            build_request({**REQUEST, "method": "simulate"}),
            RunOptions(out=str(base / "simulate"), parallel=2, bench_overrides=QUICK_SWEEP),
            PlainProgress(sys.stderr),
        )
        offline = run_profile(build_request({**REQUEST, "method": "offline"}), RunOptions(out=str(base / "offline")))
    return base, offline, simulate


def test_simulate_measures_both_candidates_in_parallel_workers(runs):
    base, offline, simulate = runs
    assert [o.candidate_id for o in simulate.outcomes] == ["tp1", "tp2"]
    assert all(o.status == "ok" for o in simulate.outcomes), simulate.outcomes
    for cid in ("tp1", "tp2"):
        profile = CandidateProfile.model_validate_json((base / "simulate" / "profiles" / f"{cid}.json").read_text())
        assert profile.provenance.method == "simulate" and profile.provenance.aiperf_version == "0.13.0"
        assert profile.max_kv_tokens == QUICK_SWEEP["sim_max_kv_tokens"] and len(profile.decode) == 2
    assert (base / "simulate" / "report.html").is_file() and (base / "simulate" / "decode" / "raw_data.npz").is_file()


def test_simulate_agrees_with_offline(runs):
    base, offline, simulate = runs
    # the same engines are chosen (the offline sweep of prefill loads is denser than the measured
    # one, so the prefill load and the engine counts may differ)
    assert simulate.selection.prefill.candidate == offline.selection.prefill.candidate
    assert simulate.selection.decode.candidate == offline.selection.decode.candidate
    isl = REQUEST["sla"]["isl"]
    for cid in ("tp1", "tp2"):
        sim = CandidateProfile.model_validate_json((base / "simulate" / "profiles" / f"{cid}.json").read_text())
        off = CandidateProfile.model_validate_json((base / "offline" / "profiles" / f"{cid}.json").read_text())
        # the request's ISL, one request at a time, is directly comparable
        sim_lone = next(p for p in sim.prefill if p.isl == isl)
        off_lone = next(p for p in off.prefill if p.isl == isl)
        assert _close(sim_lone.ttft_ms, off_lone.ttft_ms)
        # throughput is the inverse of time: a slow machine lowers it
        assert _close(off_lone.thpt_per_gpu, sim_lone.thpt_per_gpu)
        # the prefill engine under load: 3 prompts in flight per rank, measured after the first wave
        (load,) = sim.prefill_load
        off_load = {p.concurrency: p for p in off.prefill_load}[load.concurrency]
        assert load.isl == isl and load.concurrency == 3 * Candidate.parse(cid).attn_dp
        assert _close(load.ttft_ms, off_load.ttft_ms) and load.ttft_ms > sim_lone.ttft_ms
    # the planner's prefill data at the ISLs both runs measured
    sim_pre = json.loads((base / "simulate" / "prefill_raw_data.json").read_text())
    off_pre = json.loads((base / "offline" / "prefill_raw_data.json").read_text())
    off_ttft = dict(zip(off_pre["prefill_isl"], off_pre["prefill_ttft"]))
    common = [(isl, t) for isl, t in zip(sim_pre["prefill_isl"], sim_pre["prefill_ttft"]) if isl in off_ttft]
    assert common
    for isl, ttft in common:
        assert _close(ttft, off_ttft[isl]), (isl, ttft, off_ttft[isl])
    # every measured point against what the offline run estimates for the same point (the
    # simulated KV cache is smaller, so decode concurrencies differ from the offline grid)
    model = load_model_info(REQUEST["model"])
    for cid in ("tp1", "tp2"):
        sim = CandidateProfile.model_validate_json((base / "simulate" / "profiles" / f"{cid}.json").read_text())
        off = CandidateProfile.model_validate_json((base / "offline" / "profiles" / f"{cid}.json").read_text())
        off_prefill = {p.isl: p.ttft_ms for p in off.prefill}
        est = get_estimator(model, get_gpu("h200_sxm"), "vllm", Candidate.parse(cid))
        for p in sim.prefill:
            assert _close(p.ttft_ms, off_prefill.get(p.isl) or est.prefill_ttft_ms(p.isl, 1)), (cid, p)
        for d in sim.decode:
            assert _close(d.itl_ms, est.decode_itl_ms(d.concurrency, d.context)), (cid, d)
            assert d.kv_usage == pytest.approx(d.concurrency * d.context / sim.max_kv_tokens, rel=1e-3)


# a smaller KV cache (12 requests of ISL 300) keeps the aggregated sweep's top point short
AGG_SWEEP = {**QUICK_SWEEP, "sim_max_kv_tokens": 4_000}


@pytest.fixture(scope="module")
def agg_runs(tmp_path_factory, tiny_tokenizer):
    """One aggregated engine (Qwen3-0.6B on one H200), simulated and measured with AIPerf, and offline."""
    base = tmp_path_factory.mktemp("simulate-agg")
    request = {**REQUEST, "serving": "agg", "hardware": {"gpu": "h200_sxm", "max_gpus_per_engine": 1}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLAPROF_TOKENIZER", str(tiny_tokenizer))
        simulate = run_profile(
            build_request({**request, "method": "simulate"}),
            RunOptions(out=str(base / "simulate"), bench_overrides=AGG_SWEEP),
            PlainProgress(sys.stderr),
        )
        offline = run_profile(build_request({**request, "method": "offline"}), RunOptions(out=str(base / "offline")))
    return base, offline, simulate


def test_simulate_measures_an_aggregated_engine_with_aiperf(agg_runs):
    base, offline, simulate = agg_runs
    assert [(o.candidate_id, o.status) for o in simulate.outcomes] == [("agg-tp1", "ok")]
    profile = CandidateProfile.model_validate_json((base / "simulate" / "profiles" / "agg-tp1.json").read_text())
    assert profile.provenance.method == "simulate" and profile.provenance.aiperf_version == "0.13.0"
    assert profile.provenance.aiperf_runs == 1  # the whole sweep in one AIPerf session
    # a concurrency sweep at the SLA's ISL/OSL, up to what the (simulated) KV cache holds
    isl, osl = REQUEST["sla"]["isl"], REQUEST["sla"]["osl"]
    concurrencies = [p.concurrency for p in profile.agg]
    assert len(concurrencies) == 2 and concurrencies[0] == 1
    assert concurrencies[-1] == AGG_SWEEP["sim_max_kv_tokens"] // (isl + osl // 2)
    assert all((p.isl, p.osl) == (isl, osl) for p in profile.agg)
    # more requests in flight: longer TTFT and ITL, more tokens/s per GPU
    low, high = profile.agg
    assert high.ttft_ms > low.ttft_ms and high.itl_ms > low.itl_ms and high.thpt_per_gpu > 5 * low.thpt_per_gpu
    # each point against what the performance model says for the same engine and load
    est = get_estimator(load_model_info(REQUEST["model"]), get_gpu("h200_sxm"), "vllm", Candidate.parse("agg-tp1"))
    for p in profile.agg:
        assert _close(p.itl_ms, est.decode_itl_ms(p.concurrency, isl + osl / 2)), p
    assert _close(low.ttft_ms, est.prefill_ttft_ms(isl, 1)), low
    # fit turns the sweep into an aggregated deployment, and render into its DGD
    sel = simulate.selection
    assert sel.deployment.mode == "agg" and sel.deployment.group("agg").candidate.id == "agg-tp1"
    assert sel.recommendation[0].startswith("Suggested aggregated TP:1 (TTFT ")
    assert sel.deployment.gpus == 8  # one-GPU engines fill the node: 8 replicas
    dgd = (base / "simulate" / "dgd.yaml").read_text()
    assert "replicas: 8" in dgd and "subComponentType" not in dgd
    assert offline.selection.deployment.group("agg").candidate.id == "agg-tp1"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# one tp1 candidate of the tiny model, simulated: what the interruption tests run
SIMULATE_CMD = [
    *SIMULATE_CLI,
    "--isl",
    "300",
    "--osl",
    "30",
    "--ttft",
    "200",
    "--itl",
    "50",
    "--max-num-gpus-per-engine",
    "1",
]


def test_ctrl_c_stops_every_measurement_process_and_exits_130(tmp_path, tiny_tokenizer):
    out = tmp_path / "run"
    cmd = [*SIMULATE_CMD, "--out", str(out)]
    env = {**os.environ, "SLAPROF_TOKENIZER": str(tiny_tokenizer), "SLAPROF_SIM_TIME_SCALE": "20"}
    # its own process group, like a terminal's foreground job: Ctrl-C reaches every process in it
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 90
    measuring = False  # the worker has started its measurement processes (AIPerf first, then the engine)
    while time.monotonic() < deadline and proc.poll() is None and not measuring:
        for child in _descendants(proc.pid):
            seen[child.pid] = child
            try:
                measuring = measuring or any("aiperf" in part or "simengine" in part for part in child.cmdline())
            except psutil.Error:
                pass
        time.sleep(0.2)
    assert measuring, "the bench worker never started measuring"
    time.sleep(2.0)
    for child in _descendants(proc.pid):
        seen[child.pid] = child
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "slaprof: interrupted" in stderr and "tp1" in stderr and "run the same command again to resume" in stderr
    assert stdout == ""
    time.sleep(0.5)
    left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.cmdline()) for p in left]
    assert not (out / "profiles" / "tp1.json").exists()  # nothing presented as measured


PROFILE_CMD = [
    *SIMULATE_CMD,
    "--gpu",
    "h200_sxm",
    "--prefill-interpolation-granularity",
    "2",
    "--decode-interpolation-granularity",
    "3",
    "--progress",
    "plain",
]


def _partial_points(path) -> int:
    try:
        profile = CandidateProfile.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return 0
    return len(profile.prefill) + len(profile.decode)


def test_an_interrupted_run_resumes_at_the_point_where_it_stopped(tmp_path, tiny_tokenizer):
    out = tmp_path / "run"
    cmd = [*PROFILE_CMD, "--tokenizer", str(tiny_tokenizer), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("SLAPROF_TOKENIZER", "SLAPROF_SIM_TIME_SCALE")}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    partial = out / "partial" / "tp1.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and _partial_points(partial) < 1:
        time.sleep(0.05)
    assert _partial_points(partial) >= 1, proc.communicate()[1] if proc.poll() is not None else "no point yet"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the middle of the candidate's sweep
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert not (out / "profiles" / "tp1.json").exists()
    before = CandidateProfile.model_validate_json(partial.read_text())

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    after = CandidateProfile.model_validate_json((out / "profiles" / "tp1.json").read_text())
    assert after.status == "ok" and not partial.parent.exists()  # the checkpoint is gone with its folder
    # the points measured before the interruption are kept as they were, not measured again ...
    assert all(p in after.prefill for p in before.prefill) and all(p in after.decode for p in before.decode)
    assert all(c in after.checks for c in before.checks)
    # ... and the rest of the sweep was measured by the second run
    assert len(after.prefill) + len(after.decode) > len(before.prefill) + len(before.decode)
    assert len(after.checks) == len(after.prefill) + len(after.decode)
    plan_isls = json.loads((out / "plan.json").read_text())["grid"]["prefill_isls"]
    assert [p.isl for p in after.prefill] == [i for i in plan_isls if i <= 1024 - 2]


def test_a_point_the_engine_refuses_is_failed_and_the_others_stand(tmp_path, tiny_tokenizer):
    """The decode sweep's largest context does not fit the engine: that context's points fail, the
    candidate keeps every other point and stays usable."""
    from slaprof.steps.dag.bench import BenchOptions, measure_candidate
    from slaprof.steps.dag.plan import decode_concurrencies, make_plan

    request = build_request(
        {**REQUEST, "method": "simulate", "hardware": {"gpu": "h200_sxm", "max_gpus_per_engine": 1}}
    )
    plan = make_plan(request)
    too_long = plan.grid.max_context + 500  # the engine refuses prompts longer than its context
    plan.grid.decode_isls = [300, too_long]
    opts = BenchOptions(tokenizer=str(tiny_tokenizer), sim_max_kv_tokens=10_000, max_concurrency_points=2)
    profile = measure_candidate(request, plan, plan.runnable()[0], tmp_path / "work", options=opts)
    assert profile.status == "ok", profile.reason
    grid = {isl: decode_concurrencies(10_000, isl, plan.grid.decode_osl, 2) for isl in plan.grid.decode_isls}
    assert profile.prefill and [(p.isl, p.concurrency) for p in profile.decode] == [(300, c) for c in grid[300]]
    failed = [(f.phase, f.isl, f.concurrency) for f in profile.failed_points]
    assert failed == [("decode", too_long, c) for c in grid[too_long]] and failed
    assert all("exceeds the context length" in f.reason for f in profile.failed_points)
    # one session for the prefill, prefill-under-load (4 and 16 prompts) and decode points
    assert [p.concurrency for p in profile.prefill_load] == [4, 16]
    assert profile.provenance.aiperf_runs == 1
