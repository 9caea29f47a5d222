"""The local runner: the whole profiling pipeline on one machine (`slaprof profile`).

It walks the step declaration `slaprof.steps.dag.pipeline.STEPS` (the one the Argo DAG is built from) on one
artifact store (a folder, or an S3 prefix) and calls the same step functions the workflow's pods
call: plan -> bench for every runnable candidate -> fit -> [pick] -> render -> record [-> apply].
Outputs: the run's artifacts in the store (see `slaprof.steps.core.store.Layout`), and the drift history beside it.

The run holds the store's run lock (`slaprof.steps.runner.runlock`) from start to end, so a second run into the
same output exits 2 naming this one instead of mixing its files with ours. A store that cannot be
written (a full disk) stops the run with that one error, instead of failing every later step.

Candidates run in a small pool of worker processes (one process per candidate, so a crash,
a stuck engine or Ctrl-C stays contained and the engine is always stopped); offline estimates
take milliseconds, so by default they run in this process. Profiles already in the store are
reused when they were measured under the same request key and succeeded, unless `force`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slaprof.steps.core.errors import StepFailed, Unreachable, UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import CandidateProfile, Selection
from slaprof.steps.core.store import ArtifactStore, Layout, StoreUnavailable, StoreWriteError, open_store, write_model
from slaprof.steps.dag import pipeline
from slaprof.steps.dag.pipeline import AUTO_CHOICE, RunContext, reusable_profile
from slaprof.steps.measure import process_groups
from slaprof.steps.runner.progress import ProgressReporter, SilentProgress

if TYPE_CHECKING:
    from slaprof.steps.dag.plan import Plan
    from slaprof.steps.runner.runlock import RunLock

Outcome = Literal["ok", "infeasible", "failed", "reused"]
STOP_GRACE_S = 30.0  # how long a worker gets to stop its engine after Ctrl-C before it is killed
POLL_S = 0.2


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the run; running candidates were stopped."""

    exit_code = 130


@dataclass
class RunOptions:
    out: str
    parallel: int | None = None  # candidates measured at once; None = sensible for the method
    force: bool = False  # re-measure candidates even when a valid profile exists
    # BenchOptions fields given to every bench step (e.g. point caps and the simulated engine's
    # time scale for quick simulated sweeps); None = the bench step's defaults and environment
    bench_overrides: dict[str, Any] | None = None
    pick: str = AUTO_CHOICE  # auto = fit's recommendation, else a choice: `tp2+tp4` (prefill+decode) or `agg-tp4`
    ask: Callable[[list[str]], str] | None = None  # when set: shows fit's Pareto choices, returns the one taken
    drift_threshold: float = 0.0  # percent of drift that fails the run; 0 = report only


@dataclass
class CandidateOutcome:
    candidate_id: str
    status: Outcome
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RunResult:
    location: str
    request: ProfileRequest
    plan: Plan
    outcomes: list[CandidateOutcome] = field(default_factory=list)
    selection: Selection | None = None
    report: str | None = None  # uri of report.html when written
    dgd: str | None = None  # uri of dgd.yaml when written
    drift: str | None = None  # the record step's summary
    errors: list[str] = field(default_factory=list)  # steps after bench that failed
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def recommended(self) -> bool:
        return bool(self.selection and self.selection.recommendation)


# ---------------------------------------------------------------------------
# parallelism and GPUs
# ---------------------------------------------------------------------------
def default_parallel(method: str, n_candidates: int, cpus: int | None = None) -> int:
    """Offline: 1 (in this process; a worker costs more to start than an estimate takes).
    Simulate: one candidate per core: a candidate's one AIPerf run keeps a core busy while it
    starts (~10 s), then its measurement mostly waits on the simulated clock; two at once on 2 cores
    measure the default sweep of Qwen3-0.6B in about half the time, as accurately (bench/simulate_speed.py).
    Online: every candidate at once; the GPU pool queues those that do not fit."""
    cpus = cpus or os.cpu_count() or 2
    if method == "offline":
        return 1
    if method == "simulate":
        return max(1, min(n_candidates, cpus))
    return max(1, n_candidates)


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
        # CUDA stops at the first invalid entry (-1 hides every GPU)
        out: list[str] = []
        for g in ids:
            if g.startswith("-"):
                break
            out.append(g)
        return out
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        res = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if res.returncode != 0:
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


class GpuPool:
    """Hands out disjoint GPU sets; a candidate waits in the queue until enough are free."""

    def __init__(self, gpus: list[str]) -> None:
        self.all = list(gpus)
        self.free = list(gpus)

    @property
    def total(self) -> int:
        return len(self.all)

    def acquire(self, n: int) -> list[str] | None:
        if n > len(self.free):
            return None
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def release(self, gpus: list[str]) -> None:
        self.free.extend(g for g in gpus if g not in self.free)
        self.free.sort(key=self.all.index)


# ---------------------------------------------------------------------------
# the bench step, in this process or in a worker process
# ---------------------------------------------------------------------------
ProgressFn = Callable[[str, int, int], None]


def _call_bench(
    store: ArtifactStore,
    location: str,
    candidate_id: str,
    on_progress: ProgressFn | None,
    overrides: dict[str, Any] | None = None,
) -> pipeline.BenchOutcome:
    """The declared bench step for one candidate, with the progress callback and option overrides."""
    from slaprof.steps.dag.bench import BenchOptions

    options = BenchOptions.from_env(**overrides) if overrides else None
    ctx = RunContext(store, location, bench_options=options, on_progress=on_progress)
    return pipeline.bench(ctx, candidate_id)


def _interrupt_once(signum: int, frame: Any) -> None:
    """First SIGINT/SIGTERM: stop measuring. Later ones are ignored, so they cannot cut short the
    cleanup that stops the engine (a terminal's Ctrl-C and the runner's SIGTERM both arrive)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this worker when the runner dies (even by SIGKILL), so its cleanup still stops
    the engine instead of leaving it running for nobody."""
    process_groups.set_parent_death_signal(signal.SIGTERM, parent_pid)


def _bench_worker(
    location: str,
    candidate_id: str,
    env: dict[str, str],
    overrides: dict[str, Any] | None,
    events: Any,
    parent_pid: int,
) -> None:
    """Worker process: measure one candidate and report through the `events` queue.

    SIGTERM is turned into KeyboardInterrupt, so the bench step's cleanup (stopping the engine's
    process group) runs whether the runner was interrupted on a terminal or killed in a pod."""
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES for online candidates, before anything touches CUDA
    output = _capture_output(candidate_id)
    store: ArtifactStore | None = None
    try:
        _die_with_parent(parent_pid)
        store = open_store(location, create=False)
        profile = _call_bench(
            store,
            location,
            candidate_id,
            lambda phase, done, total: events.put(("progress", candidate_id, phase, int(done), int(total))),
            overrides,
        ).profile
        events.put(("done", candidate_id, profile.status, profile.reason, _summary(profile)))
    except KeyboardInterrupt:
        events.put(("error", candidate_id, "interrupted", ""))
    except StoreUnavailable as exc:  # the run cannot go on without its store: the runner stops it
        events.put(("store-unavailable", candidate_id, str(exc), ""))
        store = None  # and the worker's log would only wait for it again
    except (UserError, StepFailed) as exc:
        events.put(("error", candidate_id, str(exc), ""))
    except BaseException as exc:
        events.put(("error", candidate_id, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        _keep_output(store, candidate_id, output)


def _capture_output(candidate_id: str) -> str:
    """Send this worker's stdout/stderr (and its children's: library warnings, AIPerf) to a file, so
    they neither garble the live display nor interleave in the log; kept as logs/<id>-worker.log."""
    fd, path = tempfile.mkstemp(prefix=f"slaprof-{candidate_id}-", suffix=".log")
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path


def _keep_output(store: ArtifactStore | None, candidate_id: str, path: str) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        data = Path(path).read_bytes()
        if data and store is not None:
            store.put_bytes(f"logs/{candidate_id}-worker.log", data, "text/plain")
    except (OSError, UserError):
        pass  # the measurement's own result is already reported; its chatter is not worth a failure
    finally:
        Path(path).unlink(missing_ok=True)


def _summary(profile: CandidateProfile) -> str:
    from slaprof.steps.measure.simcheck import summary as off_the_model

    if profile.status != "ok":
        return profile.reason
    failed = len(profile.failed_points)
    notes = [f"{failed} point{'s' if failed != 1 else ''} failed"] if failed else []
    notes += [off_the_model(profile)] if off_the_model(profile) else []
    return (
        f"{len(profile.prefill)} prefill and {len(profile.decode)} decode points, max KV {profile.max_kv_tokens:,} "
        f"tokens" + "".join(f"; {n}" for n in notes)
    )


@dataclass
class _Job:
    process: Any
    gpus: list[str]
    started: float
    groups: Path  # where the worker records the process groups it starts (engine, AIPerf)


class _BenchScheduler:
    """Runs candidates in worker processes, at most `parallel` at a time and, for online runs,
    only when the GPU pool has enough free GPUs for the candidate."""

    def __init__(self, run: _Run, ids: list[str], parallel: int, gpu_pool: GpuPool | None) -> None:
        self.run = run
        self.pending = deque(ids)
        self.parallel = parallel
        self.gpu_pool = gpu_pool
        self.ctx = mp.get_context("spawn")  # no fork: the parent may hold threads (live display, S3 pools)
        self.events = self.ctx.Queue()
        self.jobs: dict[str, _Job] = {}

    def execute(self) -> None:
        try:
            while self.pending or self.jobs:
                self._start_ready()
                self._drain(block=True)
                self._reap()
        except KeyboardInterrupt:
            stopped = sorted(self.jobs)
            self.stop_all()
            raise Interrupted(", ".join(stopped)) from None
        except BaseException:  # e.g. the store went away: no worker may go on measuring for nobody
            self.stop_all()
            raise

    def _start_ready(self) -> None:
        while self.pending and len(self.jobs) < self.parallel:
            cid = self.pending[0]
            gpus: list[str] = []
            if self.gpu_pool is not None:
                assert self.run.plan is not None  # candidates are pending only once the plan exists
                need = self.run.plan.get(cid).candidate.num_gpus
                if need > self.gpu_pool.total:
                    self.pending.popleft()
                    self.run.record_failure(
                        cid,
                        f"needs {need} GPUs; this machine has {self.gpu_pool.total} visible "
                        f"({','.join(self.gpu_pool.all) or 'none'})",
                        0.0,
                    )
                    continue
                got = self.gpu_pool.acquire(need)
                if got is None:
                    return  # queued until a running candidate frees its GPUs
                gpus = got
            self.pending.popleft()
            env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if self.gpu_pool is not None else {}
            fd, groups = tempfile.mkstemp(prefix=f"slaprof-{cid}-", suffix=".groups")
            os.close(fd)
            env[process_groups.GROUPS_ENV] = groups
            proc = self.ctx.Process(
                target=_bench_worker,
                args=(self.run.location, cid, env, self.run.bench_overrides, self.events, os.getpid()),
                name=f"slaprof-bench-{cid}",
                daemon=False,
            )
            proc.start()
            self.jobs[cid] = _Job(proc, gpus, time.monotonic(), Path(groups))
            self.run.reporter.candidate_started(cid, f"GPUs {','.join(gpus)}" if gpus else "")

    def _drain(self, block: bool) -> None:
        timeout = POLL_S if block else 0.0
        while True:
            try:
                event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
            except queue_mod.Empty:
                return
            timeout = 0.0
            self._handle(event)

    def _handle(self, event: tuple) -> None:
        kind, cid = event[0], event[1]
        job = self.jobs.get(cid)
        if kind == "progress":
            self.run.reporter.phase(cid, event[2], event[3], event[4])
            return
        if job is None:
            return
        self._finish(cid, job)
        seconds = time.monotonic() - job.started
        if kind == "store-unavailable":
            raise StoreUnavailable(event[2])
        if kind == "done":
            status, reason, summary = event[2], event[3], event[4]
            self.run.record(cid, status, reason, summary, seconds)
        else:
            self.run.record_failure(cid, event[2], seconds, event[3])

    def _finish(self, cid: str, job: _Job) -> None:
        del self.jobs[cid]
        job.process.join(timeout=STOP_GRACE_S)
        self._kill_leftovers(job)
        if self.gpu_pool is not None:
            self.gpu_pool.release(job.gpus)

    def _kill_leftovers(self, job: _Job) -> None:
        """Whatever the worker started and did not stop (it was killed, or an engine's child escaped
        its stop): SIGKILL its process groups, before their GPUs go to the next candidate."""
        if job.process.is_alive():
            job.process.kill()
            job.process.join(timeout=5)
        killed = process_groups.kill_recorded_groups(job.groups)
        if killed:
            self.run.reporter.warn(f"killed {len(killed)} process group(s) left by a bench worker: {killed}")
        job.groups.unlink(missing_ok=True)

    def _reap(self) -> None:
        """A worker that died without reporting (killed, out of memory) fails its candidate."""
        dead = [cid for cid, job in self.jobs.items() if not job.process.is_alive()]
        if not dead:
            return
        self._drain(block=False)  # its last words may still be in the queue
        for cid in dead:
            job = self.jobs.get(cid)
            if job is None:
                continue
            self._finish(cid, job)
            code = job.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            self.run.record_failure(
                cid, f"bench worker died ({how}) before writing a profile", time.monotonic() - job.started
            )

    def stop_all(self) -> None:
        """Ctrl-C: workers got SIGINT from the terminal too (or get SIGTERM here); each stops its
        engine; after a grace period whatever is left is killed."""
        for job in self.jobs.values():
            if job.process.is_alive():
                try:
                    os.kill(job.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for job in self.jobs.values():
            job.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._kill_leftovers(job)
        self.jobs.clear()


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------
class _Run:
    def __init__(
        self, request: ProfileRequest, store: ArtifactStore, location: str, reporter: ProgressReporter
    ) -> None:
        self.request = request
        self.store = store
        self.location = location
        self.reporter = reporter
        self.plan: Plan | None = None
        self.outcomes: dict[str, CandidateOutcome] = {}
        self.bench_overrides: dict[str, Any] | None = None

    def record(self, cid: str, status: str, reason: str, summary: str, seconds: float) -> None:
        self.outcomes[cid] = CandidateOutcome(cid, status, reason, seconds)  # type: ignore[arg-type]
        message = summary if status in ("ok", "reused") else reason
        self.reporter.candidate_finished(cid, status, f"{message} ({seconds:.1f} s)" if seconds >= 0.05 else message)

    def record_failure(self, cid: str, reason: str, seconds: float, details: str = "") -> None:
        """A bench step that raised or died: write a failed profile (with the traceback kept as a log)."""
        try:
            pipeline.record_failure(self.store, cid, reason, details)
        except (StoreWriteError, StoreUnavailable):
            raise  # the output cannot be written at all: nothing later can be either
        except UserError as exc:
            self.reporter.warn(f"could not record the failure of {cid}: {exc}")
        self.record(cid, "failed", reason, "", seconds)


def bench_overrides(options: RunOptions) -> dict[str, Any] | None:
    """BenchOptions fields for every bench step; --force measures every point again, not only the
    candidates (no resuming from the points of an unfinished run)."""
    return {**(options.bench_overrides or {}), **({"resume": False} if options.force else {})} or None


def check_s3_endpoint(location: str, timeout_s: float = 5.0) -> None:
    """Fail in a moment, not after the S3 client's retries, when an s3:// output's endpoint refuses
    connections (the store's own call gives the same message after ~6 s of back-off)."""
    if not location.startswith("s3://"):
        return
    endpoint = os.environ.get("SLAPROF_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL", "")
    endpoint = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
    if not endpoint:
        return  # open_store explains what to set
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        host, port = endpoint, "443" if os.environ.get("SLAPROF_S3_SECURE", "0") in ("1", "true") else "80"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise Unreachable(
            f"S3 endpoint {endpoint} is unreachable ({exc.strerror or type(exc).__name__}); "
            "check SLAPROF_S3_ENDPOINT and the network"
        ) from None


def run_profile(
    request: ProfileRequest,
    options: RunOptions,
    reporter: ProgressReporter | None = None,
    store: ArtifactStore | None = None,
) -> RunResult:
    """The declared steps (slaprof.steps.dag.pipeline.STEPS) in order; see the module docstring.

    Raises UserError for problems the user can fix (unwritable output; StoreUnavailable when the S3
    store stays unreachable for its retry budget, with everything written so far kept for a rerun to
    resume from) and Interrupted on Ctrl-C; a failing candidate or a failing step after bench is
    recorded in the result instead, so whatever could be decided is still reported. The store's run
    lock is held throughout: a live run already writing there is a RunInUse error (exit 2)."""
    from slaprof.steps.runner import runlock

    reporter = reporter or SilentProgress()
    t0 = time.monotonic()
    if store is None:
        check_s3_endpoint(options.out)
        store = open_store(options.out)
    with runlock.hold(store, reporter.warn) as lock:
        return _run_locked(request, options, reporter, store, lock, t0)


def _run_locked(
    request: ProfileRequest,
    options: RunOptions,
    reporter: ProgressReporter,
    store: ArtifactStore,
    lock: RunLock,
    t0: float,
) -> RunResult:
    run = _Run(request, store, options.out, reporter)
    run.bench_overrides = bench_overrides(options)
    ctx = RunContext(
        store,
        options.out,
        choice=options.pick,
        drift_threshold=options.drift_threshold,
        force=options.force,
        note=reporter.step,
    )
    write_model(store, Layout.REQUEST, request)
    plan = pipeline.plan(ctx)  # a plan that cannot be made is the user's to fix: it stops the run
    run.plan = plan
    ids = plan.runnable_ids()
    dropped = [p for p in plan.candidates if p.status != "runnable"]
    reporter.step(
        "plan",
        f"{plan.model.name} on {plan.gpu} ({request.backend}, {request.method}): "
        f"{len(ids)} candidate{'s' if len(ids) != 1 else ''} ({', '.join(ids)})"
        + (f"; {len(dropped)} dropped" if dropped else ""),
    )
    result = RunResult(options.out, request, plan, timings={"plan": time.monotonic() - t0})
    done = {"plan": "ok"}
    for step in pipeline.STEPS[1:]:
        if any(done.get(name) == "failed" for name in step.after) or not all(name in done for name in step.after):
            done[step.name] = "failed"  # what it needs is missing: it does not run, nor do the steps after it
            continue
        if step.needs_recommendation and not result.recommended:
            done[step.name] = "failed"
            continue
        if step.asks_person and options.ask is not None and result.selection is not None:
            from slaprof.steps.fitting.pick import pareto_choices

            ctx.choice = options.ask(pareto_choices(result.selection))
        if not pipeline.switched_on(step, request, ctx.choice):
            done[step.name] = "skipped"
            continue
        if step.fans_out:
            t = time.monotonic()
            _bench(run, _resume(run, ids, options.force), options)
            result.timings[step.name] = time.monotonic() - t
            result.outcomes = [run.outcomes[c] for c in ids if c in run.outcomes]
            lock.check()  # a run that lost its lock while measuring must not write the results
            done[step.name] = "ok"
            continue
        ok, value = _step(run, result, step.name, partial(step.run, ctx))
        done[step.name] = "ok" if ok else "failed"
        if ok:
            _took(result, step.name, value, store)
    result.timings["total"] = time.monotonic() - t0
    return result


def _took(result: RunResult, name: str, value: Any, store: ArtifactStore) -> None:
    """What a finished step adds to the run's result."""
    if name in ("fit", "pick"):
        result.selection = value
        if store.exists(Layout.REPORT):
            result.report = store.uri(Layout.REPORT)
    elif name == "render":
        result.dgd = store.uri(Layout.DGD)
    elif name == "record":
        result.drift = value.summary()


def _resume(run: _Run, ids: list[str], force: bool) -> list[str]:
    assert run.plan is not None
    if force:
        return list(ids)
    todo = []
    for cid in ids:
        profile = reusable_profile(run.store, cid, run.plan.request_key)
        if profile is None:
            todo.append(cid)
        else:
            run.record(cid, "reused", "", f"measured earlier ({_summary(profile)})", 0.0)
    return todo


def _bench(run: _Run, ids: list[str], options: RunOptions) -> None:
    if not ids:
        return
    method = run.request.method
    parallel = options.parallel or default_parallel(method, len(ids))
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: must be at least 1")
    if method == "offline" and parallel == 1:
        _bench_in_process(run, ids)
        return
    pool = None
    if method == "online":
        gpus = visible_gpus()
        if not gpus:
            raise UserError(
                "--method online needs local GPUs and none are visible (nvidia-smi found none, "
                "or CUDA_VISIBLE_DEVICES hides them); use --method offline or simulate on this machine, "
                "or run the Argo workflow on a GPU cluster"
            )
        pool = GpuPool(gpus)
    from slaprof.steps.dag.bench import BenchOptions, check_tokenizer

    check_tokenizer(run.request, BenchOptions.from_env(**(run.bench_overrides or {})))
    _BenchScheduler(run, ids, parallel, pool).execute()


def _bench_in_process(run: _Run, ids: list[str]) -> None:
    for cid in ids:
        started = time.monotonic()
        try:
            # an estimate takes milliseconds: one line when it is done says all a progress row would
            profile = _call_bench(run.store, run.location, cid, None, run.bench_overrides).profile
        except KeyboardInterrupt:
            raise Interrupted(cid) from None
        except (StoreWriteError, StoreUnavailable):
            raise
        except (UserError, StepFailed) as exc:
            run.record_failure(cid, str(exc), time.monotonic() - started)
            continue
        except Exception as exc:
            run.record_failure(cid, f"{type(exc).__name__}: {exc}", time.monotonic() - started, traceback.format_exc())
            continue
        run.record(cid, profile.status, profile.reason, _summary(profile), time.monotonic() - started)


def _step(run: _Run, result: RunResult, name: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one step after bench; a failure becomes an error line (its traceback a log artifact)."""
    t = time.monotonic()
    try:
        value = fn()
    except (StoreWriteError, StoreUnavailable):
        raise  # nothing after this could be written either: stop with one line
    except (UserError, StepFailed) as exc:
        result.errors.append(f"{name}: {exc}")
        return False, None
    except Exception as exc:
        key = f"logs/{name}-error.txt"
        try:
            run.store.put_bytes(key, traceback.format_exc().encode(), "text/plain")
        except UserError:
            key = "the log could not be written"
        result.errors.append(f"{name} step crashed: {type(exc).__name__}: {exc} (traceback: {run.store.uri(key)})")
        return False, None
    result.timings[name] = time.monotonic() - t
    return True, value
