"""Process groups a bench step starts (the engine server, AIPerf), so that none outlives its owner.

- `start_group` starts a command in a new session (its own process group: stopping it signals every
  process the command forked) whose leader gets SIGTERM when the thread that started it dies
  (Linux PR_SET_PDEATHSIG), e.g. a bench worker killed by the OOM killer. When the environment
  names a record file (GROUPS_ENV, set by the local runner for each worker), the group is
  appended to it as `<pgid> <leader start time>`.
- `kill_recorded_groups` is the runner's half: after a worker is gone, SIGKILL every group it
  recorded that still has a live process, so children that do not die with the leader (an
  engine's tensor-parallel workers, AIPerf's workers) go too.

Start groups from a thread that lives as long as they should (the main thread): the death
signal follows the thread, not the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

GROUPS_ENV = "SLAPROF_PROCESS_GROUPS"
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()  # looked up before any fork: the child only calls it


def set_parent_death_signal(sig: int, parent_pid: int) -> bool:
    """Have the kernel send `sig` to this process when its parent dies; if the parent is already
    gone (it died before this call), send it now. False where the kernel has no such feature."""
    if _PRCTL is None:
        return False
    _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def start_group(
    argv: Sequence[str], *, stdout: IO[bytes] | int | None, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(argv)` in its own session, stderr with stdout, dying with this thread, recorded."""
    parent = os.getpid()
    proc = subprocess.Popen(
        list(argv),
        stdout=stdout,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM, parent),
        **kwargs,
    )
    record = os.environ.get(GROUPS_ENV)
    if record:
        with contextlib.suppress(OSError), open(record, "a") as fh:
            fh.write(f"{proc.pid} {_start_time(proc.pid) or '-'}\n")
    return proc


def _members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group `pgid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def kill_recorded_groups(record: Path) -> list[int]:
    """SIGKILL every group listed in `record` that still has a live process; the groups killed.

    A group is ours while its leader runs with the recorded start time, or, once the leader is
    gone, while any process still carries its id (the kernel does not reuse an id that is still a
    group's)."""
    try:
        lines = record.read_text().splitlines()
    except OSError:
        return []
    killed = []
    for line in lines:
        pgid_text, _, started = line.partition(" ")
        if not pgid_text.isdigit():
            continue
        pgid = int(pgid_text)
        leader = _start_time(pgid)
        if leader is not None and started not in ("-", leader):
            continue  # the id belongs to another process now
        if not _members(pgid):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
    return killed
