"""One engine server process for the bench step: start, readiness, KV capacity, profiling, clean stop.

Backend-neutral: the command, environment, readiness hints and KV parsing come from the
`EngineBackend`. Two ways to run it:

- subprocess (default): the server runs in its own session (process group) with its output in a
  log file; `stop()` signals the whole group (SIGTERM, then SIGKILL) and checks that nothing of
  it is left. It gets SIGTERM if the bench process dies first (`slaprof.steps.measure.process_groups`).
- sidecar (`SLAPROF_ENGINE_SIDECAR=DIR`, the Argo `bench-online` pod): the engine runs in another
  container of the pod (the engine image, with the GPUs) that shares DIR and the network with
  this one. The bench writes the launch into DIR (`slaprof.steps.engines.sidecar`); the sidecar runs it,
  teeing the engine's output to DIR/engine.log; readiness, KV capacity and profiling go over
  localhost as usual; `stop()` writes DIR/stop and waits for the sidecar to report the engine gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines import sidecar
from slaprof.steps.engines.base import EngineBackend, ServerOptions
from slaprof.steps.measure.process_groups import start_group

# Log phrases of an engine that ran out of GPU memory at start-up: the mapping does not fit.
_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|out of memory|No available memory for the cache blocks|"
    r"insufficient (?:GPU )?memory|Not enough memory|KV cache is needed, which is larger than the available",
    re.I,
)


class EngineFailed(Exception):
    """The engine did not start or died. `infeasible` when it ran out of memory at start-up."""

    def __init__(self, reason: str, infeasible: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.infeasible = infeasible


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, ""


def _post(url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, str]:
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace") if exc.fp else ""
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, str(exc)


class EngineProcess:
    """A started engine server; use as a context manager so it is always stopped."""

    def __init__(
        self,
        backend: EngineBackend,
        model: str,
        cand: Candidate,
        workdir: Path,
        *,
        options: ServerOptions | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        sidecar_dir: Path | str | None = None,
    ) -> None:
        self.backend, self.model, self.cand = backend, model, cand
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.options = options or ServerOptions()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        # sidecar mode: files the engine reads or writes must be in the folder both containers share;
        # the log and the traces are copied back into `workdir` when the engine stops
        shared = sidecar_dir if sidecar_dir is not None else sidecar.sidecar_dir()
        self.sidecar: sidecar.SidecarFolder | None = sidecar.SidecarFolder(shared) if shared else None
        self.local_profile_dir = self.options.profile_dir
        if self.sidecar is not None:
            self.options.workdir = str(self.sidecar.dir)
            if self.options.profile_dir:
                self.options.profile_dir = str(self.sidecar.dir / "traces")
            self.log_path = self.sidecar.log
        else:
            self.options.workdir = str(self.workdir)
            self.log_path = self.workdir / "engine.log"
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.stopped_at: float | None = None

    # ---- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "::") else self.options.host
        return f"http://{host}:{self.port}"

    def start(self) -> EngineProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        launch = self.backend.server_launch(self.model, self.cand, self.port, self.options)
        for name, text in launch.files.items():
            (Path(self.options.workdir) / name).write_text(text)
        (self.workdir / "engine-command.json").write_text(
            json.dumps({"argv": launch.argv, "env": launch.env}, indent=1)
        )
        if self.sidecar is not None:
            # the sidecar has its own environment (the engine image's); only what the launch asks for is added
            self.started_at = time.monotonic()
            self.sidecar.launch(launch.argv, {**launch.env, **self.extra_env})
            return self
        env = {**os.environ, **launch.env, **self.extra_env}
        self.started_at = time.monotonic()
        with self.log_path.open("wb") as log:
            try:
                # its own process group, dying with this process (an OOM-killed bench leaves no engine)
                self.proc = start_group(launch.argv, stdout=log, env=env)
            except FileNotFoundError:
                raise EngineFailed(
                    f"{self.backend.name} server command not found: {launch.argv[0]!r}; "
                    f"install {self.backend.name} or run where it is installed"
                ) from None
        (self.workdir / "engine.pid").write_text(str(self.proc.pid))  # also its process-group id
        return self

    def __enter__(self) -> EngineProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        if self.sidecar is not None:
            return self.started_at is not None and self.sidecar.exit_code() is None
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, tail: int | None = None) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return (data[-tail:] if tail else data).decode(errors="replace")

    def exit_reason(self) -> str:
        """Why the process is gone: exit code (or signal) and the most telling log line."""
        if self.sidecar is not None:
            code = self.sidecar.exit_code()
            # a shell reports death by signal N as 128 + N
            code = 128 - code if code is not None and code > 128 else code
        else:
            code = self.proc.poll() if self.proc else None
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        lines = [ln.strip() for ln in self.log_text(20000).splitlines() if ln.strip()]
        telling = [ln for ln in lines if _OOM.search(ln) or "error" in ln.lower()][-1:] or lines[-1:]
        return f"{self.backend.name} engine {how}" + (f": {telling[0][:300]}" if telling else "")

    def wait_ready(self, timeout_s: float = 1800.0, poll_s: float = 0.1) -> float:
        """Block until /health answers 200 and /v1/models lists the model; returns seconds since start."""
        assert self.started_at is not None, "start() first"
        deadline = self.started_at + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                reason = self.exit_reason()
                raise EngineFailed(reason, infeasible=bool(_OOM.search(self.log_text(50000))))
            status, _ = _get(self.url + self.backend.health_path, timeout=2.0)
            if status == 200:
                status, body = _get(self.url + self.backend.models_path, timeout=5.0)
                if status == 200 and self._lists_model(body):
                    self.ready_at = time.monotonic()
                    return self.ready_at - self.started_at
            time.sleep(poll_s)
        self.stop()
        if self.sidecar is not None and not self.sidecar.picked_up():
            raise EngineFailed(
                f"the engine sidecar did not start the launch script {self.sidecar.script} within "
                f"{timeout_s:.0f} s: is the pod's `engine` container running, and does it share "
                f"{self.sidecar.dir} with this one?"
            )
        raise EngineFailed(
            f"{self.backend.name} engine not ready after {timeout_s:.0f} s "
            f"(/health and /v1/models on {self.url}); see {self.log_path}"
        )

    def _lists_model(self, body: str) -> bool:
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except (json.JSONDecodeError, AttributeError):
            return False
        return self.model in ids or not ids

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace_s`; idempotent.

        Sidecar mode: ask the sidecar to do the same (DIR/stop) and wait until it reports the engine gone."""
        if self.sidecar is not None:
            self._stop_sidecar(grace_s)
            return
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # children that ignored SIGTERM (or were orphaned) still carry the group id
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            end = time.monotonic() + 10
            while group_alive(pgid) and time.monotonic() < end:
                time.sleep(0.05)
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def _stop_sidecar(self, grace_s: float) -> None:
        assert self.sidecar is not None
        if self.started_at is None or self.stopped_at is not None:
            return
        self.sidecar.stop(grace_s)
        self.stopped_at = time.monotonic()
        # keep the engine's log and traces with the bench's own files, as in subprocess mode
        local_log = self.workdir / "engine.log"
        self.sidecar.copy_out(self.sidecar.log, local_log)
        if self.local_profile_dir and self.options.profile_dir:
            self.sidecar.copy_out(Path(self.options.profile_dir), Path(self.local_profile_dir))
        self.log_path = local_log

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ---- what the engine reports -----------------------------------------
    def kv_tokens(self) -> int | None:
        """KV capacity: Prometheus metrics when the backend exposes them, else the start-up log."""
        if self.backend.metrics_path:
            status, text = _get(self.url + self.backend.metrics_path, timeout=5.0)
            if status == 200:
                found = self.backend.kv_tokens_from_metrics(text)
                if found:
                    return found
        return self.backend.kv_tokens_from_log(self.log_text(), attn_dp=self.cand.attn_dp)

    def version(self) -> str | None:
        if self.backend.version_path:
            status, body = _get(self.url + self.backend.version_path, timeout=5.0)
            if status == 200:
                try:
                    v = json.loads(body).get("version")
                    if v:
                        return str(v)
                except (json.JSONDecodeError, AttributeError):
                    pass
        return self.backend.version_from_log(self.log_text())

    def start_profile(self) -> None:
        self._profile_call(self.backend.profile_start_path, "start")

    def stop_profile(self) -> None:
        self._profile_call(self.backend.profile_stop_path, "stop")

    def _profile_call(self, path: str | None, what: str) -> None:
        if not path:
            raise EngineFailed(f"the {self.backend.name} server has no torch-profiler endpoint; drop --torch-profile")
        status, body = _post(self.url + path, {}, timeout=300.0)
        if status != 200:
            raise EngineFailed(f"{what} profiling failed: HTTP {status} from {path}: {body[:200]}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists (zombies of reaped children excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; look for a live member
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
