"""The engine-sidecar mode of the bench step (Argo `bench-online` pod), played on this machine.

The test plays the pod's `engine` container: a process running the sidecar's own command from
the workflow (`slaprof.workflows.bench.engine_boot`) against a shared folder, while the bench runs with
SLAPROF_ENGINE_SIDECAR pointing at the same folder. The engine is the simulated one, so the
whole contract runs without GPUs: launch script, readiness over localhost, KV capacity, the log
teed into the folder, a crash seen from the bench, and the stop and done files ending everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.request import build_request
from slaprof.steps.dag.bench import BenchOptions, measure_candidate
from slaprof.steps.dag.plan import make_plan
from slaprof.steps.engines import ServerOptions, get_backend, sidecar
from slaprof.steps.engines.process import EngineProcess, group_alive
from slaprof.steps.perf import get_estimator
from slaprof.steps.specs.gpus import get_gpu
from slaprof.workflows.bench import engine_boot
from tests.conftest import MODELS
from tests.plugins.timing import like_the_model

MODEL = str(MODELS / "Qwen3-0.6B")
TIME_SCALE = 50.0  # as in test_bench.py: CPU and HTTP jitter far below 10 % of a modelled step


class Sidecar:
    """The pod's engine container: `sh -c <engine_boot>` in its own session, output kept in a file."""

    def __init__(self, shared: Path, log: Path) -> None:
        shared.mkdir(parents=True, exist_ok=True)
        self.shared = shared
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", engine_boot(str(shared))], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def shared(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    monkeypatch.setenv(sidecar.SIDECAR_ENV, str(folder))
    return folder


def _request():
    return build_request(
        {
            "model": MODEL,
            "backend": "vllm",
            "method": "simulate",
            "sla": {"isl": 200, "osl": 8, "ttft_ms": 100, "itl_ms": 10},
            "hardware": {"gpu": "h100_sxm", "max_gpus_per_engine": 1},
            "engine": {"max_context_length": 1024},
            "sweep": {"prefill_granularity": 2, "decode_granularity": 2},
        }
    )


def test_bench_measures_an_engine_run_by_the_sidecar_and_everything_stops(tmp_path, shared, tiny_tokenizer):
    pod = Sidecar(shared, tmp_path / "engine-container.log")
    try:
        request = _request()
        plan = make_plan(request)
        opts = BenchOptions(
            tokenizer=str(tiny_tokenizer),
            time_scale=TIME_SCALE,
            sim_max_kv_tokens=1000,
            max_prefill_points=1,
            max_decode_isls=1,
            max_concurrency_points=1,
        )
        workdir = tmp_path / "work"
        profile = measure_candidate(request, plan, plan.runnable()[0], workdir, options=opts)
        # the sidecar exits by itself once the bench is done, so the pod can complete
        assert pod.wait(timeout=30) == 0
    finally:
        pod.kill()
    assert profile.status == "ok", profile.reason
    assert profile.max_kv_tokens == 1000  # read over localhost from the engine the sidecar started
    est = get_estimator(plan.model, get_gpu("h100_sxm"), "vllm", profile.candidate)
    assert len(profile.prefill) == 1 and len(profile.decode) == 1
    assert like_the_model(profile.prefill[0].ttft_ms, est.prefill_ttft_ms(profile.prefill[0].isl, 1))
    point = profile.decode[0]
    assert like_the_model(point.itl_ms, est.decode_itl_ms(point.concurrency, point.context))
    # the launch went through the shared folder and ran there; the engine's output was teed both to
    # the folder (read by the bench, copied into its own workdir) and to the engine container's log
    script = (shared / sidecar.SCRIPT).read_text()
    assert "slaprof.steps.measure.simengine" in script and str(shared) in script
    assert "simengine ready" in (shared / sidecar.LOG).read_text()
    assert "simengine ready" in (workdir / "engine" / "engine.log").read_text()
    assert "simengine ready" in pod.log.read_text()
    for name in (sidecar.STOP, sidecar.DONE, sidecar.FINISHED):
        assert (shared / name).is_file(), name
    # nothing of the engine is left: its process group (the sidecar started it with setsid) is gone
    engine_pid = int((shared / sidecar.PID).read_text())
    assert not group_alive(engine_pid) and not group_alive(pod.proc.pid)


def _engine(tokenizer: Path, workdir: Path) -> EngineProcess:
    backend = get_backend("simulated", emulate="vllm", gpu="h100_sxm", tokenizer=str(tokenizer), max_kv_tokens=700)
    return EngineProcess(backend, MODEL, Candidate.parse("tp1"), workdir, options=ServerOptions())


def test_a_crashed_sidecar_engine_is_seen_and_reported(tmp_path, shared, tiny_tokenizer):
    pod = Sidecar(shared, tmp_path / "engine-container.log")
    try:
        engine = _engine(tiny_tokenizer, tmp_path / "engine")
        assert engine.sidecar is not None and engine.pgid is None  # nothing started here
        engine.start()
        engine.wait_ready(60)
        assert engine.alive() and engine.kv_tokens() == 700
        os.killpg(int((shared / sidecar.PID).read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while engine.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not engine.alive()
        assert "killed by signal 9" in engine.exit_reason()
        engine.stop()
        sidecar.release()
        assert pod.wait(timeout=20) == 0  # the sidecar ends with its engine
        assert "simengine" in (tmp_path / "engine" / "engine.log").read_text()  # the log came back
    finally:
        pod.kill()


def test_the_sidecar_exits_when_the_bench_is_done_without_launching(tmp_path, shared):
    pod = Sidecar(shared, tmp_path / "engine-container.log")
    try:
        time.sleep(0.5)
        assert pod.proc.poll() is None  # waiting for a launch script
        sidecar.release()
        assert pod.wait(timeout=10) == 0
    finally:
        pod.kill()


def test_a_sidecar_that_never_starts_the_engine_fails_with_what_to_check(tmp_path, shared, tiny_tokenizer):
    engine = _engine(tiny_tokenizer, tmp_path / "engine")  # no engine container at all
    engine.start()
    with pytest.raises(Exception) as failed:
        engine.wait_ready(1.0)
    assert "engine sidecar did not start the launch script" in str(failed.value)
    assert "`engine` container" in str(failed.value)
