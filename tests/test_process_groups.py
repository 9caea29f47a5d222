"""No engine or AIPerf process outlives the bench that started it: a worker killed with SIGKILL (what
the OOM killer does) leaves nothing running, through the parent-death signal and the runner's
kill of the process groups the worker recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from slaprof.steps.measure.process_groups import GROUPS_ENV, kill_recorded_groups, start_group
from tests.conftest import ROOT, SIMULATE_CLI


def _gone(proc: psutil.Process, within_s: float = 20.0) -> bool:
    """Whether `proc` has exited (or is a zombie) within `within_s`; a bounded wait, not a timing check."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_group_leader_dies_with_the_process_that_started_it(tmp_path):
    record = tmp_path / "groups"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, time\n"
            "from slaprof.steps.measure.process_groups import start_group\n"
            "p = start_group(['sleep', '300'], stdout=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(300)\n",
        ],
        cwd=ROOT,
        env={**os.environ, GROUPS_ENV: str(record)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        leader = psutil.Process(int(starter.stdout.readline()))
        assert os.getpgid(leader.pid) == leader.pid  # its own group
        assert record.read_text().split()[0] == str(leader.pid)
        starter.send_signal(signal.SIGKILL)
        starter.wait(timeout=10)
        assert _gone(leader), "the child survived its parent's SIGKILL"
    finally:
        starter.kill()


def test_the_runner_kills_what_a_dead_worker_recorded(tmp_path, monkeypatch):
    """A group whose leader ignores SIGTERM and has a child: both are killed. A record whose start
    time does not match the process now holding that id is left alone."""
    record = tmp_path / "groups"
    monkeypatch.setenv(GROUPS_ENV, str(record))
    stubborn = start_group(["sh", "-c", "trap '' TERM; sleep 300 & wait"], stdout=subprocess.DEVNULL)
    monkeypatch.delenv(GROUPS_ENV)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        with record.open("a") as fh:
            fh.write(f"{bystander.pid} 1\n")  # a start time that is not the bystander's
        deadline = time.monotonic() + 10
        while len(psutil.Process(stubborn.pid).children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        members = [psutil.Process(stubborn.pid), *psutil.Process(stubborn.pid).children()]
        assert len(members) == 2
        assert kill_recorded_groups(record) == [stubborn.pid]
        stubborn.wait(timeout=10)
        assert all(_gone(p) for p in members)
        assert bystander.poll() is None  # not ours: untouched
    finally:
        bystander.kill()
        stubborn.kill()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def test_no_engine_survives_a_sigkilled_bench_worker(tmp_path, tiny_tokenizer):
    """`slaprof profile --method simulate`: once the worker runs its engine and AIPerf, SIGKILL the
    worker alone. The run goes on (the candidate fails) and no engine or AIPerf process is left."""
    cmd = [
        *SIMULATE_CLI,
        "--isl",
        "300",
        "--osl",
        "30",
        "--max-num-gpus-per-engine",
        "1",
        "--serving",
        "disagg",  # one candidate is enough to kill its worker
        "--out",
        str(tmp_path / "run"),
        "--progress",
        "plain",
    ]
    env = {**os.environ, "SLAPROF_TOKENIZER": str(tiny_tokenizer), "SLAPROF_SIM_TIME_SCALE": "20"}
    runner = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        measuring: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while runner.poll() is None and time.monotonic() < deadline:
            children = _descendants(runner.pid)
            measuring = [
                p for p in children if "slaprof.steps.measure.simengine" in _cmdline(p) or "aiperf" in _cmdline(p)
            ]
            kinds = {"engine" if "slaprof.steps.measure.simengine" in _cmdline(p) else "aiperf" for p in measuring}
            if kinds == {"engine", "aiperf"}:
                break
            time.sleep(0.1)
        assert measuring, "the bench worker never started its engine and AIPerf"
        groups = {os.getpgid(p.pid) for p in measuring}
        worker = next(p for p in psutil.Process(runner.pid).children() if measuring[0] in p.children(recursive=True))
        in_groups = [p for p in psutil.process_iter() if _pgid(p) in groups]  # AIPerf's workers too
        worker.send_signal(signal.SIGKILL)
        stdout, stderr = runner.communicate(timeout=180)
        assert "bench worker died (signal 9)" in stderr + stdout, stderr[-3000:]
        survivors = [p for p in {*measuring, *in_groups} if not _gone(p, within_s=10)]
        assert not survivors, [(p.pid, _cmdline(p)) for p in survivors]
        assert not [g for g in groups if _live_group(g)], "a process group of the worker is still alive"
    finally:
        runner.kill()


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def _live_group(pgid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
