"""The S3 store going away: transient errors are retried with back-off for a bounded time, then one
line and exit 2; what was written stays; the run completes when the store comes back in time, and
a run started again resumes when it did not. A real S3 server (`weed mini`) is stopped and started."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import slaprof.steps.dag.plan
from slaprof.steps.cli.main import main
from slaprof.steps.core.request import build_request
from slaprof.steps.core.store import S3Store, StoreUnavailable, open_store
from slaprof.steps.runner.local import RunOptions, run_profile
from tests.conftest import MODELS
from tests.plugins.clock import FakeClock

REQUEST: dict[str, Any] = {
    "model": str(MODELS / "Qwen3-32B"),
    "sla": {"isl": 2000, "osl": 200, "ttft_ms": 400, "itl_ms": 25},
    "hardware": {"max_gpus_per_engine": 2},
    "sweep": {"prefill_granularity": 4, "decode_granularity": 3},
    "serving": "disagg",  # two candidates are enough to cross an outage
}
DEAD_ENDPOINT = "127.0.0.1:1"  # nothing listens: every connection is refused at once


def _dead_store(clock: FakeClock, retry_s: float = 60.0) -> S3Store:
    return S3Store(DEAD_ENDPOINT, "bucket", "run", "k", "s", retry_s=retry_s, sleep=clock.sleep, clock=clock.monotonic)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.put_bytes("plan.json", b"{}"),
        lambda s: s.get_bytes("plan.json"),
        lambda s: s.exists("plan.json"),  # caught only S3Error: a dead endpoint was a traceback
        lambda s: s.list("profiles/"),  # the listing was read outside the retries
    ],
    ids=["put", "get", "exists", "list"],
)
def test_every_call_retries_with_back_off_then_gives_one_clear_error(call):
    clock = FakeClock()
    store = _dead_store(clock, retry_s=60.0)
    with pytest.raises(StoreUnavailable) as info:
        call(store)
    message = str(info.value)
    assert "\n" not in message and "127.0.0.1:1 is unreachable" in message and "run again" in message
    assert sum(clock.sleeps) == pytest.approx(60.0)  # the whole budget, no more
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 4.0] and max(clock.sleeps) <= 15.0  # exponential, capped


def test_a_wrong_key_is_not_retried(s3_server):
    clock = FakeClock()
    store = S3Store(
        s3_server.endpoint, "slaprof-test", "r", s3_server.access_key, "wrong", sleep=clock.sleep, clock=clock.monotonic
    )
    with pytest.raises(Exception) as info:
        store.exists("x.json")
    assert not isinstance(info.value, StoreUnavailable) and "S3" in str(info.value)
    assert clock.sleeps == []


def _s3_env(monkeypatch: pytest.MonkeyPatch, server: Any, retry_s: str) -> None:
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLAPROF_S3_RETRY_S", retry_s)


def _stop_after_plan(monkeypatch: pytest.MonkeyPatch, server: Any, restart_after_s: float | None) -> None:
    """Stop the S3 server as soon as plan has written plan.json (mid-run: bench, fit and render still
    write); start it again `restart_after_s` later, or never."""
    real = slaprof.steps.dag.plan.run_step

    def plan_then_outage(store: Any, *args: Any, **kwargs: Any) -> Any:
        ids = real(store, *args, **kwargs)
        server.stop()
        if restart_after_s is not None:
            threading.Timer(restart_after_s, server.start).start()
        return ids

    monkeypatch.setattr(slaprof.steps.dag.plan, "run_step", plan_then_outage)


def test_a_run_completes_when_the_store_comes_back(restartable_s3, monkeypatch, tmp_path):
    _s3_env(monkeypatch, restartable_s3, "90")
    _stop_after_plan(monkeypatch, restartable_s3, restart_after_s=2.0)
    result = run_profile(build_request(REQUEST), RunOptions(out="s3://outage/run-a"))
    assert result.recommended and not result.errors
    assert [o.status for o in result.outcomes] == ["ok", "ok"]
    store = open_store("s3://outage/run-a")
    keys = store.list()
    for key in ("request.json", "plan.json", "profiles/tp1.json", "profiles/tp2.json", "selection.json", "dgd.yaml"):
        assert key in keys, key


def test_a_run_stops_with_one_line_and_a_rerun_resumes(restartable_s3, monkeypatch, capsys):
    args = ["profile", "--model", REQUEST["model"], "--isl", "2000", "--osl", "200", "--ttft", "400", "--itl", "25"]
    args += ["--max-num-gpus-per-engine", "2", "--out", "s3://outage/run-b", "--progress", "none"]
    _s3_env(monkeypatch, restartable_s3, "1")
    with monkeypatch.context() as patch:
        _stop_after_plan(patch, restartable_s3, restart_after_s=None)
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "unreachable" in err and "run again to resume" in err
    restartable_s3.start()
    written = open_store("s3://outage/run-b").list()
    assert "request.json" in written and "plan.json" in written  # what was written before is kept
    # the same command again, with the store back; a restarted server may answer 5xx for a few
    # seconds while its volume registers, which the store's retries are there to absorb
    monkeypatch.setenv("SLAPROF_S3_RETRY_S", "60")
    assert main(args) == 0
    assert {"profiles/tp1.json", "profiles/tp2.json", "selection.json"} <= set(open_store("s3://outage/run-b").list())
