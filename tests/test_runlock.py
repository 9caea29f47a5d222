"""The run lock: one writer per run folder or S3 prefix, stale holders taken over, leases that expire."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import LocalStore, open_store
from slaprof.steps.runner.runlock import LOCK_KEY, RunInUse, RunLock, current_holder, ensure_free, hold
from tests.plugins.clock import FakeClock


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path, monkeypatch):
    """The same run location as a local folder and as an S3 prefix on a real S3 server."""
    if request.param == "folder":
        return open_store(str(tmp_path / "run"))
    s3 = request.getfixturevalue("s3_server")
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return open_store(f"s3://slaprof-locks/{request.node.name.replace('[', '-').strip(']')}")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_holder_is_refused_with_the_holders_identity(store):
    clock = FakeClock(start=1_700_000_000.0)
    first = RunLock(store, clock=clock.time)  # this process: alive, on this host
    assert first.acquire() is None
    assert store.exists(LOCK_KEY)
    holder = current_holder(store)
    assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()

    second = RunLock(store, clock=clock.time, pid=os.getpid() + 1)
    with pytest.raises(RunInUse) as err:
        second.acquire()
    message = str(err.value)
    assert store.uri().rstrip("/") in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "2023-11-14T22:13:20Z" in message  # the holder's start time
    with pytest.raises(RunInUse):
        ensure_free(store, clock=clock.time)
    first.release()
    assert not store.exists(LOCK_KEY)
    ensure_free(store, clock=clock.time)
    assert second.acquire() is None


def test_lock_of_a_dead_process_on_this_host_is_taken_over(store):
    dead = _dead_pid()
    RunLock(store, pid=dead).acquire()
    taker = RunLock(store)
    warning = taker.acquire()
    assert warning is not None and f"pid {dead}" in warning and "no longer running" in warning
    holder = current_holder(store)
    assert holder is not None and holder.pid == os.getpid() and holder.token == taker.token


def test_a_reused_pid_does_not_keep_a_stale_lock(store):
    """The pid is alive, but it is another process than the one that took the lock."""
    old = RunLock(store, pid=os.getpid())
    old.acquire()
    data = json.loads(store.get_bytes(LOCK_KEY))
    data["pid_start"] = "1"  # the start time of a process long gone
    store.put_bytes(LOCK_KEY, json.dumps(data).encode())
    warning = RunLock(store, pid=os.getpid() + 1).acquire()
    assert warning is not None and "no longer running" in warning


def test_lease_of_another_host_expires_unless_renewed(store):
    clock = FakeClock(start=1_700_000_000.0)
    remote = RunLock(store, clock=clock.time, host="gpu-node-7", pid=4242, ttl_s=120)
    remote.acquire()
    local = RunLock(store, clock=clock.time, ttl_s=120)

    clock.sleep(100)
    with pytest.raises(RunInUse, match="gpu-node-7, pid 4242"):
        local.acquire()  # another host's pid cannot be checked: only the lease decides
    assert remote.renew()
    clock.sleep(100)  # 200 s after the start, 100 s after the renewal: still held
    with pytest.raises(RunInUse, match=r"renewed 100 s ago"):
        local.acquire()

    clock.sleep(121)  # the holder stopped renewing
    warning = local.acquire()
    assert warning is not None and "gpu-node-7" in warning and "stopped renewing its lease 221 s ago" in warning

    # the old holder wakes up: it has lost the lock, says so, and its release leaves the new lock alone
    assert not remote.renew()
    with pytest.raises(UserError, match="lost the lock .* host .*, pid"):
        remote.check()
    remote.release()
    holder = current_holder(store)
    assert holder is not None and holder.token == local.token
    local.check()


def test_hold_renews_and_releases(tmp_path):
    store = LocalStore(tmp_path)
    clock = FakeClock(start=1_700_000_000.0)
    warnings: list[str] = []
    with hold(store, warnings.append, clock=clock.time, renew_every_s=None) as lock:
        clock.sleep(50)
        assert lock.renew()
        holder = current_holder(store)
        assert holder is not None and holder.renewed_at == 1_700_000_050.0
    assert not store.exists(LOCK_KEY) and warnings == []


def test_hold_releases_when_the_run_fails(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError), hold(store, print):
        raise RuntimeError("boom")
    assert not store.exists(LOCK_KEY)


def test_unreadable_lock_is_reported_not_ignored(tmp_path):
    store = LocalStore(tmp_path)
    (tmp_path / LOCK_KEY).write_text("not json")
    with pytest.raises(RunInUse, match="unreadable"):
        RunLock(store).acquire()
