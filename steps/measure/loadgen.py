"""Load generation with AIPerf for the `bench` step: build `aiperf profile`, run it, parse, classify failures.

A `LoadSpec` describes one AIPerf run against an OpenAI-compatible engine: streaming chat,
fixed ISL/OSL (synthetic with zero stddev, or an explicit request trace), `ignore_eos`,
concurrency, request count, warm-up, seed, a local tokenizer, `--ui none`. `parse_artifacts`
reads `profile_export_aiperf.json` (summary), `profile_export.jsonl` (one record per request)
and `phase_manifest.json` (phase start/end), and turns a failed run into a `LoadResult` with
`ok=False`, a failure kind and a reason: a failed run is never reported as a measurement.

Hiding AIPerf's start-up (~10 s of imports, dataset and worker processes per run): a run can
be started *gated*. It then bootstraps completely and waits, just before its first request,
until the bench step opens the gate (`LoadRun.open_gate`). The bench starts the next run
while the engine starts or while the previous run measures, so the engine is not left idle.
The gate is a small wrapper around AIPerf's own CLI (`python -m slaprof.steps.measure.loadgen --gate FILE
-- <aiperf profile args>`) that holds the system controller's PROFILE_START until the file
exists; it is tied to aiperf 0.13 and falls back to an ungated run if that hook moves.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from slaprof.steps.measure.process_groups import start_group

FailureKind = Literal["engine_unreachable", "timeout", "errors", "missing_output", "aiperf_failed", "cancelled"]
DEFAULT_ERROR_THRESHOLD = 0.0  # any failed request fails the point: a partial point is not a measurement
SUMMARY_FILE = "profile_export_aiperf.json"
RECORDS_FILE = "profile_export.jsonl"
MANIFEST_FILE = "phase_manifest.json"
GATE_READY_SUFFIX = ".waiting"
ALL_DONE_MARKER = b"All credits completed"  # AIPerf 0.13 logs this once every response is in


class TraceEntry(BaseModel):
    """One request of an explicit trace (AIPerf `mooncake_trace` custom dataset).

    Entries with the same `session_id` are the turns of one conversation, each sent when the one
    before it has its response; `messages` makes a turn self-contained (no earlier turns prepended).
    `extra` is merged into the request body."""

    text_input: str | None = None
    messages: list[dict[str, str]] | None = None
    input_length: int | None = None
    hash_ids: list[int] | None = None
    output_length: int
    session_id: str | None = None
    extra: dict[str, Any] | None = None


class LoadSpec(BaseModel):
    """One AIPerf run."""

    label: str  # names the artifact folder, e.g. prefill, decode-isl1000-c8
    url: str
    model: str
    tokenizer: str  # local directory or Hugging Face id
    endpoint_type: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(1, gt=0)
    request_count: int = Field(1, gt=0)
    warmup_request_count: int = Field(0, ge=0)
    # AIPerf's concurrency-only mode busy-polls a core for the whole run; a (high) constant request
    # rate capped by `concurrency` sends the same load and leaves the CPU to the engine and others
    request_rate: float | None = Field(None, gt=0)
    isl: int | None = None  # synthetic prompts (when no trace)
    osl: int | None = None
    trace: list[TraceEntry] | None = None
    random_seed: int = 0
    request_timeout_s: float = 600.0
    extra_inputs: dict[str, Any] = Field(default_factory=lambda: {"ignore_eos": True})
    error_threshold: float = DEFAULT_ERROR_THRESHOLD  # fraction of failed requests tolerated
    conversations: int | None = Field(None, gt=0, description="sessions of a multi-turn trace (all their turns)")
    server_token_count: bool = Field(False, description="ISL/OSL from the engine's usage, not AIPerf's tokenizer")
    stream_records: bool = Field(False, description="write each request's record as soon as it is processed")


class RequestRecord(BaseModel):
    phase: str
    session: int
    conversation_id: str | None = None  # the trace's session_id
    turn_index: int | None = None
    isl: int | None = None
    osl: int | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    latency_ms: float | None = None
    cached_tokens: int | None = None
    start_ns: int = 0
    end_ns: int = 0
    error: str | None = None
    chunk_gaps_ms: list[float] = Field(default_factory=list)  # between consecutive streamed tokens

    def token_times_ns(self) -> list[float]:
        """Arrival time of every streamed token (the first at start + TTFT); empty when unknown."""
        if self.ttft_ms is None or not self.start_ns or not self.chunk_gaps_ms:
            return []
        times = [self.start_ns + self.ttft_ms * 1e6]
        for gap in self.chunk_gaps_ms:
            times.append(times[-1] + gap * 1e6)
        return times


class LoadResult(BaseModel):
    label: str
    ok: bool
    failure: FailureKind | None = None
    reason: str = ""
    returncode: int | None = None
    artifact_dir: str = ""
    aiperf_version: str | None = None
    summary: dict[str, float] = Field(default_factory=dict)  # ttft_ms, itl_ms, output_token_throughput, ...
    records: list[RequestRecord] = Field(default_factory=list)
    profiling_start_ns: int = 0
    profiling_end_ns: int = 0
    warmup_s: float = 0.0
    wall_s: float = 0.0

    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if r.phase == "profiling" and r.error is None]


MIN_STEADY_GAPS = 8  # fewer token gaps than this in the steady window: use whole requests instead


def steady_itl_ms(records: list[RequestRecord], robust: bool = False) -> float | None:
    """Mean gap between tokens while every request of the run was decoding, or None.

    A decode point means `concurrency` requests decoding together. Requests never all arrive in
    the same engine step (AIPerf sends them one by one; on a busy CPU over many steps), and a step
    that also prefills a newcomer lasts longer; whole-request ITL counts those ramp-up steps (and
    the ramp-down's shorter ones). The window from the last request's first token to the first
    request's last token holds only steps with the whole batch decoding: only gaps that lie in it
    are counted.

    `robust`: the median slope between any two tokens of a request in the window (Theil-Sen), for
    an engine whose steps there all last the same time (the simulated one). The mean gap is set by
    the window's first and last tokens alone, so a stall of a busy CPU at either end moves it; tokens
    read in bursts make single gaps 0 or double. Pairs of tokens further apart see neither."""
    times = [t for t in (r.token_times_ns() for r in records) if len(t) >= 2]
    if not times or len(times) < len(records):
        return None
    start, end = max(t[0] for t in times), min(t[-1] for t in times)
    gaps = [(b - a) / 1e6 for t in times for a, b in zip(t, t[1:]) if a >= start and b <= end]
    if len(gaps) < MIN_STEADY_GAPS:
        return None
    if not robust:
        return sum(gaps) / len(gaps)
    slopes = []
    for t in times:
        window = [(k, x) for k, x in enumerate(t) if start <= x <= end]
        slopes += [(xj - xi) / 1e6 / (kj - ki) for i, (ki, xi) in enumerate(window) for kj, xj in window[i + 1 :]]
    slope = statistics.median(slopes)
    return slope if slope > 0 else None


# ---------------------------------------------------------------------------
# command
# ---------------------------------------------------------------------------
def _extra_input_args(extra: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in extra.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        out += ["--extra-inputs", f"{key}:{text}"]
    return out


def build_command(spec: LoadSpec, artifact_dir: Path, input_file: Path | None = None) -> list[str]:
    """`aiperf profile ...` arguments (without the leading executable) for `spec`."""
    args = [
        "profile",
        "--model",
        spec.model,
        "--url",
        spec.url,
        "--endpoint-type",
        spec.endpoint_type,
        "--streaming",
        "--tokenizer",
        spec.tokenizer,
        "--concurrency",
        str(spec.concurrency),
        "--request-count",
        str(spec.request_count),
        "--random-seed",
        str(spec.random_seed),
        "--request-timeout-seconds",
        f"{spec.request_timeout_s:g}",
        "--artifact-dir",
        str(artifact_dir),
        "--ui",
        "none",
        "--no-server-metrics",
        "--no-gpu-telemetry",
        "--no-auto-plot",
        *_extra_input_args(spec.extra_inputs),
    ]
    if spec.trace is not None:
        if input_file is None:
            raise ValueError("a trace spec needs input_file")
        args += ["--input-file", str(input_file), "--custom-dataset-type", "mooncake_trace"]
    else:
        if spec.isl is None or spec.osl is None:
            raise ValueError("a synthetic spec needs isl and osl")
        args += [
            "--synthetic-input-tokens-mean",
            str(spec.isl),
            "--synthetic-input-tokens-stddev",
            "0",
            "--output-tokens-mean",
            str(spec.osl),
            "--output-tokens-stddev",
            "0",
            "--extra-inputs",
            f"min_tokens:{spec.osl}",
            "--num-dataset-entries",
            str(max(spec.request_count, spec.concurrency)),
        ]
    if spec.conversations:
        args += ["--conversation-num", str(spec.conversations)]
    if spec.server_token_count:
        args.append("--use-server-token-count")
    if spec.request_rate:
        args += ["--request-rate", f"{spec.request_rate:g}", "--arrival-pattern", "constant"]
    if spec.warmup_request_count:
        args += ["--warmup-request-count", str(spec.warmup_request_count)]
    return args


def write_trace(entries: list[TraceEntry], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for e in entries:
            fh.write(e.model_dump_json(exclude_none=True) + "\n")
    return path


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------
class LoadRun:
    """A running (possibly gated) AIPerf process; `wait()` gives its LoadResult."""

    def __init__(self, spec: LoadSpec, workdir: Path, *, gated: bool = False) -> None:
        self.spec = spec
        self.dir = workdir / spec.label
        self.artifact_dir = self.dir / "aiperf"
        self.gate_file = self.dir / "gate" if gated else None
        self.log_path = self.dir / "aiperf.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.gate_opened_at: float | None = None
        self._records_read = 0  # bytes of the records file already returned by new_records()

    def start(self) -> LoadRun:
        self.dir.mkdir(parents=True, exist_ok=True)
        input_file = write_trace(self.spec.trace, self.dir / "trace.jsonl") if self.spec.trace is not None else None
        args = build_command(self.spec, self.artifact_dir, input_file)
        if self.gate_file is not None:
            argv = [sys.executable, "-m", "slaprof.steps.measure.loadgen", "--gate", str(self.gate_file), "--", *args]
        else:
            argv = [sys.executable, "-m", "aiperf", *args]
        (self.dir / "command.json").write_text(json.dumps(argv, indent=1))
        env = dict(os.environ)
        env.pop("HF_HUB_OFFLINE", None)  # a local tokenizer path fails under offline mode (aiperf 0.13)
        env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # AIPerf's tokenizer import: no PyTorch advice
        if self.spec.stream_records:
            env["AIPERF_RECORD_EXPORT_BATCH_SIZE"] = "1"  # records reach the file one by one (default 100)
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = start_group(
                argv, stdout=log, env=env
            )  # dies with the bench (slaprof.steps.measure.process_groups)
        if self.gate_file is None:
            self.gate_opened_at = self.started
        return self

    @property
    def waiting_at_gate(self) -> bool:
        return self.gate_file is not None and Path(str(self.gate_file) + GATE_READY_SUFFIX).exists()

    def wait_at_gate(self, timeout_s: float = 120.0) -> bool:
        """Block until AIPerf has bootstrapped and waits at the gate (or exited); True when waiting."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.waiting_at_gate:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def open_gate(self) -> None:
        if self.gate_file is not None and self.gate_opened_at is None:
            self.gate_file.write_text("go")
            self.gate_opened_at = time.monotonic()

    def wait_requests_done(self, timeout_s: float | None = None) -> bool:
        """Block until AIPerf has every response (its log says so) or has exited; True if so.

        AIPerf then needs about a second to process records and exit; the engine is free already.
        """
        log = self.artifact_dir / "logs" / "aiperf.log"
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seen = 0
        while deadline is None or time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return True
            try:
                with log.open("rb") as fh:
                    fh.seek(seen)
                    chunk = fh.read()
            except OSError:
                chunk = b""
            if ALL_DONE_MARKER in chunk:
                return True
            seen += max(0, len(chunk) - len(ALL_DONE_MARKER))
            time.sleep(0.02)
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_records(self) -> list[RequestRecord]:
        """Records AIPerf has written since the last call (complete lines only), while it runs."""
        try:
            with (self.artifact_dir / RECORDS_FILE).open("rb") as fh:
                fh.seek(self._records_read)
                chunk = fh.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._records_read += len(complete)
        return [r for r in map(_record, complete.decode(errors="replace").splitlines()) if r is not None]

    def terminate(self) -> None:
        """Ask AIPerf to stop without waiting (`stop_all` or `kill` reap it later)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Stop AIPerf and all its worker processes (its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGINT, 3.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        _reap_group(self.proc.pid)

    def wait(self, timeout_s: float | None = None, error_threshold: float | None = None) -> LoadResult:
        assert self.proc is not None, "start() first"
        self.open_gate()
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            result = LoadResult(
                label=self.spec.label,
                ok=False,
                failure="timeout",
                reason=f"AIPerf run {self.spec.label} did not finish within {timeout_s:.0f} s",
                artifact_dir=str(self.artifact_dir),
            )
            result.wall_s = time.monotonic() - self.started
            return result
        _reap_group(self.proc.pid)
        threshold = self.spec.error_threshold if error_threshold is None else error_threshold
        result = parse_artifacts(self.artifact_dir, rc, self.spec.label, _tail(self.log_path), threshold)
        result.wall_s = time.monotonic() - self.started
        return result


def stop_all(runs: list[LoadRun], grace_s: float = 3.0) -> None:
    """Stop many AIPerf runs at once: SIGTERM every process group, SIGKILL what is left after `grace_s`."""
    alive = [r for r in runs if r.proc is not None and r.proc.poll() is None]
    for run in alive:
        try:
            os.killpg(run.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for run in alive:
        try:
            run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pass
    for run in runs:
        if run.proc is not None:
            _reap_group(run.proc.pid)
            try:
                run.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _reap_group(pgid: int) -> None:
    """AIPerf's worker processes share its process group: make sure none outlives it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, size: int = 20000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode(errors="replace")


def run_load(spec: LoadSpec, workdir: Path, timeout_s: float | None = None) -> LoadResult:
    """Run AIPerf once (ungated) and return its parsed result."""
    return LoadRun(spec, workdir).start().wait(timeout_s)


# ---------------------------------------------------------------------------
# parsing and failure classification
# ---------------------------------------------------------------------------
_UNREACHABLE = (
    "connection refused",
    "cannot connect",
    "clientconnectorerror",
    "connect call failed",
    "server disconnected",
    "connection reset",
    "serverdisconnectederror",
    "remote end closed",
    "clientoserror",
    "connectionreseterror",
    "brokenpipe",
)
_TIMEOUT = ("timeout", "timed out")


def classify_error_text(text: str) -> FailureKind:
    low = text.lower()
    if any(s in low for s in _UNREACHABLE):
        return "engine_unreachable"
    if any(s in low for s in _TIMEOUT):
        return "timeout"
    return "errors"


def _log_errors(log_text: str) -> str:
    """': <last ERROR line> (first: <first ERROR line>)' from an AIPerf log, without timestamps."""
    errors = [ln.split(" ERROR ", 1)[1].strip() for ln in log_text.splitlines() if " ERROR " in ln]
    if not errors:
        plain = [ln.strip() for ln in log_text.splitlines() if ln.strip() and ln.strip()[0].isalnum()]
        return f": {plain[-1][:300]}" if plain else ""
    text = f": {errors[-1][:300]}"
    return text + (f" (first: {errors[0][:200]})" if errors[0] != errors[-1] else "")


def _metric(summary: dict[str, Any], name: str, stat: str = "avg") -> float | None:
    value = summary.get(name)
    if isinstance(value, dict) and isinstance(value.get(stat), (int, float)):
        return float(value[stat])
    return None


def _record(line: str) -> RequestRecord | None:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        return None
    meta, metrics = raw.get("metadata") or {}, raw.get("metrics") or {}

    def value(name: str) -> float | None:
        v = (metrics.get(name) or {}).get("value")
        return float(v) if isinstance(v, (int, float)) else None

    error = raw.get("error")
    if isinstance(error, dict):
        error = f"{error.get('type') or ''} {error.get('code') or ''}: {error.get('message') or ''}".strip()
    isl, osl, cached = (
        value("input_sequence_length"),
        value("output_sequence_length"),
        value("usage_prompt_cache_read_tokens"),
    )
    turn = meta.get("turn_index")
    return RequestRecord(
        phase=str(meta.get("benchmark_phase") or meta.get("phase_kind") or "profiling"),
        session=int(meta.get("session_num") or 0),
        conversation_id=meta.get("conversation_id"),
        turn_index=int(turn) if isinstance(turn, int) else None,
        isl=int(isl) if isl is not None else None,
        osl=int(osl) if osl is not None else None,
        ttft_ms=value("time_to_first_token"),
        itl_ms=value("inter_token_latency"),
        latency_ms=value("request_latency"),
        cached_tokens=int(cached) if cached is not None else None,
        start_ns=int(meta.get("request_start_ns") or 0),
        end_ns=int(meta.get("request_end_ns") or 0),
        error=str(error) if error else None,
        chunk_gaps_ms=_gaps(metrics.get("inter_chunk_latency")),
    )


def _gaps(metric: Any) -> list[float]:
    """AIPerf's per-request inter_chunk_latency list (ms; converted when another unit is named)."""
    if not isinstance(metric, dict) or not isinstance(metric.get("value"), list):
        return []
    per_ms = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}.get(str(metric.get("unit") or "ms"), 1.0)
    return [float(v) * per_ms for v in metric["value"] if isinstance(v, (int, float))]


def parse_artifacts(
    artifact_dir: Path,
    returncode: int | None,
    label: str = "",
    log_tail: str = "",
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
) -> LoadResult:
    """The LoadResult of a finished AIPerf run; `ok` only for a complete, error-free (enough) run."""
    res = LoadResult(label=label, ok=False, returncode=returncode, artifact_dir=str(artifact_dir))
    summary_path = artifact_dir / SUMMARY_FILE
    if not summary_path.is_file():
        errors = "\n".join(ln for ln in log_tail.splitlines() if " ERROR " in ln)
        kind = classify_error_text(errors)
        res.failure = "aiperf_failed" if kind == "errors" and "request(s) failed" not in errors else kind
        res.reason = f"AIPerf exited with code {returncode} without {SUMMARY_FILE}" + _log_errors(log_tail)
        return res
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        res.failure, res.reason = "aiperf_failed", f"{summary_path} is not valid JSON: {exc}"
        return res
    res.aiperf_version = summary.get("aiperf_version")
    for ours, theirs in (
        ("ttft_ms", "time_to_first_token"),
        ("itl_ms", "inter_token_latency"),
        ("output_token_throughput", "output_token_throughput"),
        ("request_throughput", "request_throughput"),
        ("request_latency_ms", "request_latency"),
        ("error_rate_pct", "request_error_rate"),
        ("isl", "input_sequence_length"),
        ("osl", "output_sequence_length"),
    ):
        v = _metric(summary, theirs)
        if v is not None:
            res.summary[ours] = v
    records_path = artifact_dir / RECORDS_FILE
    if records_path.is_file():
        res.records = [r for r in map(_record, records_path.read_text().splitlines()) if r is not None]
    manifest_path = artifact_dir / MANIFEST_FILE
    if manifest_path.is_file():
        for phase in json.loads(manifest_path.read_text()).get("phases", []):
            if phase.get("phase_kind") == "profiling":
                res.profiling_start_ns, res.profiling_end_ns = int(phase["start_ns"]), int(phase["end_ns"])
            elif phase.get("phase_kind") == "warmup":
                res.warmup_s += (int(phase["end_ns"]) - int(phase["start_ns"])) / 1e9
    profiled = [r for r in res.records if r.phase == "profiling"]
    failed = [r for r in profiled if r.error]
    error_summary = summary.get("error_summary") or []
    n_err = sum(int(e.get("count", 1)) for e in error_summary if isinstance(e, dict)) or len(failed)
    total = len(profiled) or int(_metric(summary, "request_count") or 0) + n_err
    if summary.get("was_cancelled"):
        res.failure, res.reason = "cancelled", "AIPerf run was cancelled before it completed"
        return res
    if n_err and total and n_err / total > error_threshold:
        text = json.dumps(error_summary) + " ".join(r.error or "" for r in failed)
        res.failure = classify_error_text(text)
        first = failed[0].error if failed else json.dumps(error_summary[0])[:300]
        res.reason = f"{n_err} of {total} requests failed ({res.failure}): {first}"
        return res
    if returncode not in (0, None):
        res.failure, res.reason = "aiperf_failed", f"AIPerf exited with code {returncode}"
        return res
    if "ttft_ms" not in res.summary or not [r for r in profiled if r.error is None and r.ttft_ms is not None]:
        res.failure, res.reason = "missing_output", "AIPerf reported no time-to-first-token: no streamed output"
        return res
    res.ok = True
    return res


# ---------------------------------------------------------------------------
# gated entry point: python -m slaprof.steps.measure.loadgen --gate FILE -- <aiperf profile args>
# ---------------------------------------------------------------------------
def _install_gate(gate: Path) -> bool:
    """Hold AIPerf's PROFILE_START until `gate` exists; False when this aiperf has no such hook."""
    import asyncio

    try:
        from aiperf.controller.system_controller import SystemController
    except ImportError:
        return False
    original = getattr(SystemController, "_start_profiling_all_services", None)
    if original is None:
        return False

    async def gated(self: Any) -> None:
        Path(str(gate) + GATE_READY_SUFFIX).write_text("waiting")
        while not gate.exists():
            await asyncio.sleep(0.005)
        await original(self)

    SystemController._start_profiling_all_services = gated
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[0] != "--gate" or "--" not in argv:
        print("usage: python -m slaprof.steps.measure.loadgen --gate FILE -- <aiperf profile args>", file=sys.stderr)
        return 2
    gate = Path(argv[1])
    aiperf_args = argv[argv.index("--") + 1 :]
    if not _install_gate(gate):
        # no hook in this aiperf: wait here instead (start-up is then not hidden)
        Path(str(gate) + GATE_READY_SUFFIX).write_text("waiting")
        while not gate.exists():
            time.sleep(0.005)
    from aiperf.cli import app

    try:
        app(aiperf_args)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
