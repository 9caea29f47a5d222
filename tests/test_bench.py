"""The bench step: `slaprof bench --method simulate` with real AIPerf against simengine, an
engine killed mid-sweep, and the offline method through `run_step` and the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import CandidateProfile
from slaprof.steps.core.store import Layout, LocalStore, write_model
from slaprof.steps.dag.bench import BenchOptions, measure_candidate, run_step
from slaprof.steps.dag.plan import make_plan
from slaprof.steps.specs.gpus import get_gpu
from tests.conftest import MODELS, ROOT
from tests.plugins.timing import like_the_model

MODEL = str(MODELS / "Qwen3-0.6B")
TIME_SCALE = 50.0  # modelled steps of ~2-30 ms take 0.1-1.5 s: HTTP and CPU jitter stay small
REQUEST = [
    "--model",
    MODEL,
    "--backend",
    "vllm",
    "--gpu",
    "h100_sxm",
    "--max-num-gpus-per-engine",
    "1",
    "--max-context-length",
    "1024",
    "--isl",
    "200",
    "--osl",
    "8",
    "--prefill-interpolation-granularity",
    "2",
    "--decode-interpolation-granularity",
    "2",
]


def _request(method: str):
    return build_request(
        {
            "model": MODEL,
            "backend": "vllm",
            "method": method,
            "sla": {"isl": 200, "osl": 8, "ttft_ms": 100, "itl_ms": 10},
            "hardware": {"gpu": "h100_sxm", "max_gpus_per_engine": 1},
            "engine": {"max_context_length": 1024},
            "sweep": {"prefill_granularity": 2, "decode_granularity": 2},
        }
    )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append(f"{entry.name}: {cmd[:160]}")
    return found


def test_cli_bench_simulate_matches_the_model(tmp_path, tiny_tokenizer):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "slaprof.steps.cli.main",
        "bench",
        *REQUEST,
        "--method",
        "simulate",
        "--candidate",
        "tp1",
        "--out",
        str(out),
        "--max-prefill-points",
        "2",
        "--max-decode-contexts",
        "1",
        "--tokenizer",
        str(tiny_tokenizer),
        "--time-scale",
        str(TIME_SCALE),
        "--sim-max-kv-tokens",
        "1000",
        "--keep-workdir",
        "--torch-profile",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PyTorch was not found" not in proc.stdout + proc.stderr  # no library noise on the terminal
    profile = CandidateProfile.model_validate_json((out / "tp1.json").read_text())
    assert profile.status == "ok" and profile.max_kv_tokens == 1000
    assert profile.provenance.method == "simulate" and profile.provenance.aiperf_version == "0.13.0"
    assert profile.provenance.measuring_s > 0 and profile.provenance.engine_up_s > profile.provenance.measuring_s

    plan = make_plan(_request("simulate"))
    from slaprof.steps.perf import get_estimator

    est = get_estimator(plan.model, get_gpu("h100_sxm"), "vllm", profile.candidate)
    assert [p.isl for p in profile.prefill] == [200, 512]
    for point in profile.prefill:  # TTFT at two ISLs of the grid
        assert like_the_model(point.ttft_ms, est.prefill_ttft_ms(point.isl, 1)), point
    assert [(p.isl, p.concurrency) for p in profile.decode] == [(200, 1), (200, 4)]
    for decode_point in profile.decode:  # ITL at two concurrencies
        assert like_the_model(decode_point.itl_ms, est.decode_itl_ms(decode_point.concurrency, decode_point.context)), (
            decode_point
        )
        assert decode_point.kv_usage == pytest.approx(decode_point.concurrency * decode_point.context / 1000)
    assert profile.decode[1].thpt_per_gpu > profile.decode[0].thpt_per_gpu

    # --torch-profile: a trace of the engine under a decode load point, stored next to the profile
    trace = Path(profile.artifacts["torch_trace"])
    assert trace.parent == out / "tp1-traces" and json.loads(trace.read_text())["traceEvents"]

    # nothing left running: neither the engine (by its port) nor any AIPerf process (by its folder)
    command = json.loads((out / "tp1-work" / "engine" / "engine-command.json").read_text())["argv"]
    port = command[command.index("--port") + 1]
    assert not _processes_mentioning(f"--port {port}")
    assert not _processes_mentioning(str(out))


@pytest.mark.parametrize("one_session", [False, True], ids=["run-per-point", "one-session"])
def test_engine_killed_mid_sweep_gives_failed_with_points_so_far(tmp_path, tiny_tokenizer, one_session):
    """A run per point (the online path) and one AIPerf run for the sweep (simulate) alike."""
    request = _request("simulate")
    plan = make_plan(request)
    workdir = tmp_path / "work"
    opts = BenchOptions(
        tokenizer=str(tiny_tokenizer),
        time_scale=TIME_SCALE,
        sim_max_kv_tokens=1000,
        max_prefill_points=1,
        max_decode_isls=1,
        one_session=one_session,
    )
    killed: list[int] = []
    # one session: the prefill point comes before any decode point can finish
    kill_at = ("prefill", 1) if one_session else ("decode", 1)

    def kill_after(phase: str, done: int, total: int) -> None:
        if (phase, done) == kill_at and not killed:
            pgid = int((workdir / "engine" / "engine.pid").read_text())
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)

    profile = measure_candidate(request, plan, plan.runnable()[0], workdir, kill_after, opts)
    assert killed
    assert profile.status == "failed"
    assert "engine died" in profile.reason and "signal 9" in profile.reason
    # what was measured before the kill
    assert len(profile.prefill) == 1 and len(profile.decode) == (0 if one_session else 1)
    # per point: prefill, prefill under load (4 prompts of ISL 200 fit the 1,000-token cache) and both decode points
    assert profile.provenance.aiperf_runs == (1 if one_session else 4)
    assert not _processes_mentioning(str(workdir))


def test_a_kv_cache_that_holds_no_request_makes_the_candidate_infeasible(tmp_path, tiny_tokenizer):
    """The engine reports fewer KV tokens than one decode request needs: infeasible (the workload does
    not fit), not failed (something broke)."""
    request = _request("simulate")
    plan = make_plan(request)
    opts = BenchOptions(tokenizer=str(tiny_tokenizer), time_scale=TIME_SCALE, sim_max_kv_tokens=40)
    profile = measure_candidate(request, plan, plan.runnable()[0], tmp_path / "work", None, opts)
    assert profile.status == "infeasible"
    assert "KV cache of 40 tokens holds no decode request" in profile.reason
    assert not _processes_mentioning(str(tmp_path / "work"))


def test_offline_run_step_writes_the_profile(tmp_path):
    store = LocalStore(tmp_path / "run")
    request = _request("offline")
    plan = make_plan(request)
    write_model(store, Layout.REQUEST, request)
    write_model(store, Layout.PLAN, plan)
    seen: list[tuple[str, int, int]] = []
    profile = run_step(store, "tp1", on_progress=lambda *a: seen.append(a))
    stored = CandidateProfile.model_validate_json(store.get_bytes(Layout.profile("tp1")))
    assert stored.status == profile.status == "ok" and stored.provenance.method == "offline"
    assert [p.isl for p in stored.prefill] == plan.grid.prefill_isls
    assert stored.decode and stored.max_kv_tokens > 0
    assert seen and seen[-1][0] == "decode"


def test_prompts_have_the_asked_length_and_distinct_first_blocks(tiny_tokenizer):
    from transformers import AutoTokenizer

    from slaprof.steps.dag.bench import PromptBuilder, _thin
    from slaprof.steps.measure.simengine import BLOCK_TOKENS

    builder = PromptBuilder(str(tiny_tokenizer))
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    prompts = [builder.make(300, f"{j} 300 abcd1234 decode") for j in range(12)]
    lengths = [len(tok.encode(p, add_special_tokens=False)) for p in prompts]
    assert all(abs(n - 300) <= 2 for n in lengths), lengths
    first_blocks = {tuple(tok.encode(p, add_special_tokens=False)[:BLOCK_TOKENS]) for p in prompts}
    assert len(first_blocks) == len(prompts)  # no prompt can reuse another's cached prefix
    assert _thin([100, 200, 300, 400, 500], 3, keep=200) == [100, 200, 500]
    assert _thin([100, 200], 5) == [100, 200]
