"""The profiling pipeline, declared once: plan -> bench x N -> fit -> [pick] -> render -> [apply], and record.

Each `Step` names the store keys it reads and writes, the steps it follows, whether it fans out
over the plan's candidates, the switch that turns it on, and the function it runs. Both runners
are derived from `STEPS`: the local runner (`slaprof.steps.runner.local`) walks it in this process; the Argo DAG
(`slaprof.workflows.profile`) builds one task per step from it, and each task's pod (`slaprof.workflows.tasks`)
calls the same function. So both write the same files for the same request: the labels the
cluster needs are added by `render` for both, and resume, drift recording and the pick are steps
of both.

A run is named by the last segment of its store's location (`{{workflow.name}}` on Argo, the
output folder locally); the drift history lives beside the runs, in `history/<model>/<backend>/<gpu>/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from slaprof.steps.core.errors import StepFailed, UserError
from slaprof.steps.core.store import (
    ArtifactStore,
    Layout,
    StoreUnavailable,
    StoreWriteError,
    delete,
    open_store,
    read_model,
)

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.results import CandidateProfile, Selection
    from slaprof.steps.dag.drift import DriftReport
    from slaprof.steps.dag.plan import Plan

AUTO_CHOICE = "auto"  # the pick that keeps fit's recommendation
AUTO_SELECTION = "selection.auto.json"  # fit's own selection, kept when a person picks another deployment
DRIFT = "drift.json"
HISTORY = "history"
PLANNER_DATA = (Layout.PREFILL_JSON, Layout.DECODE_JSON, Layout.PREFILL_NPZ, Layout.DECODE_NPZ)
Switch = Literal["pick", "auto_apply"]


@dataclass
class RunContext:
    """What every step gets: the run's store and name, and the run's choices that are not in the request."""

    store: ArtifactStore
    location: str  # the store's location: a folder or s3://bucket/prefix
    choice: str = AUTO_CHOICE  # pick: a label of `slaprof.steps.fitting.pick.pareto_choices`, or `<prefill>+<decode>`
    drift_threshold: float = 0.0  # record: percent of drift that fails the run; 0 = report only
    apply_timeout: float = 1800.0  # apply: seconds to wait until the deployment is ready
    force: bool = False  # bench: measure again even when a valid profile exists
    bench_options: Any = None  # bench: slaprof.steps.dag.bench.BenchOptions, None = its defaults and environment
    on_progress: Callable[[str, int, int], None] | None = None  # bench: (phase, done, total)
    note: Callable[[str, str], None] = lambda step, line: print(f"slaprof {step}: {line}")
    transient: Callable[[BaseException], bool] = lambda exc: False  # errors the runner retries instead

    @property
    def run(self) -> str:
        return run_name(self.location)

    def history(self, key: str) -> ArtifactStore:
        return open_store(history_location(self.location, key))


@dataclass(frozen=True)
class Step:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    run: Callable[..., Any]  # (RunContext) -> result; a fan-out step: (RunContext, candidate id) -> result
    after: tuple[str, ...] = ()
    fans_out: bool = False  # once per runnable candidate of the plan; a failed candidate does not stop the run
    when: Switch | None = None  # off unless the run asks for it (a pick; auto-apply)
    asks_person: bool = False  # its input (the choice) comes from a person: a prompt, or Argo's suspend node
    needs_recommendation: bool = False  # runs only when fit recommended a deployment
    help: str = field(default="", compare=False)


# ---------------------------------------------------------------------------
# names and places
# ---------------------------------------------------------------------------
def run_name(location: str) -> str:
    """The run's name: the last segment of its store's location."""
    from pathlib import Path

    if location.startswith("s3://"):
        return location.rstrip("/").rsplit("/", 1)[-1]
    return Path(location).resolve().name


def run_label(location: str) -> str:
    """The run's name as a Kubernetes label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends),
    made exactly as the workflow's `labelsFrom` expressions make theirs."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name(location))[:63].strip("-_.")


def history_location(location: str, key: str) -> str:
    """`history/<key>` beside the run: the runs' common root is the parent of the run's location."""
    from pathlib import Path

    if location.startswith("s3://"):
        parent = location.rstrip("/").rsplit("/", 1)[0]
        root = parent if parent != "s3:/" else location.rstrip("/")
        return f"{root}/{HISTORY}/{key}"
    return str(Path(location).resolve().parent / HISTORY / key)


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------
def reusable_profile(store: ArtifactStore, candidate_id: str, request_key: str) -> CandidateProfile | None:
    """The stored profile of `candidate_id` if it succeeded under this request key, else None."""
    from slaprof.steps.core.results import CandidateProfile

    key = Layout.profile(candidate_id)
    if not store.exists(key):
        return None
    try:
        profile = read_model(store, key, CandidateProfile)
    except (ValidationError, ValueError, UserError):
        return None  # unreadable or from an older format: measure again
    if profile.status != "ok" or profile.id != candidate_id or profile.provenance.request_key != request_key:
        return None
    return profile


def discard_stale_profiles(ctx: RunContext, plan: Plan) -> None:
    """Profiles of candidates that are not in this plan, left by a run of another request in the
    same store: fit reads every profile under profiles/, so they would compete with this run's."""
    from slaprof.steps.core.results import CandidateProfile

    ids = set(plan.runnable_ids())
    for key in ctx.store.list(Layout.PROFILES):
        cid = key[len(Layout.PROFILES) :].removesuffix(".json")
        if not key.endswith(".json") or "/" in cid or cid in ids:
            continue
        try:
            stored_key = read_model(ctx.store, key, CandidateProfile).provenance.request_key
        except (ValidationError, ValueError, UserError):
            stored_key = ""
        if stored_key != plan.request_key:
            delete(ctx.store, key)
            ctx.note("resume", f"removed {key}: measured under another request, {cid} is not in this plan")


def failed_profile(request: ProfileRequest, plan: Plan, candidate_id: str, reason: str) -> CandidateProfile:
    """What is recorded for a candidate whose bench step could not write a profile, so that fit
    lists it with its reason instead of silently dropping it."""
    from slaprof.steps.core.results import CandidateProfile, Provenance, utc_now

    return CandidateProfile(
        candidate=plan.get(candidate_id).candidate,
        status="failed",
        reason=reason,
        provenance=Provenance(
            method=request.method,
            estimator=request.sweep.estimator if request.method == "offline" else None,
            backend=request.backend,
            finished_at=utc_now(),
            request_key=plan.request_key,
        ),
    )


def record_failure(store: ArtifactStore, candidate_id: str, reason: str, details: str = "") -> CandidateProfile:
    """Write the failed profile of `candidate_id` (its traceback, when there is one, as a log)."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import write_model
    from slaprof.steps.dag.plan import Plan

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    profile = failed_profile(request, read_model(store, Layout.PLAN, Plan), candidate_id, reason)
    if details:
        log_key = f"logs/{candidate_id}-bench-error.txt"
        store.put_bytes(log_key, details.encode(), "text/plain")
        profile.artifacts["error_log"] = log_key
    write_model(store, Layout.profile(candidate_id), profile)
    return profile


# ---------------------------------------------------------------------------
# the step functions
# ---------------------------------------------------------------------------
def plan(ctx: RunContext) -> Plan:
    """request.json -> plan.json; profiles measured under another request are removed."""
    from slaprof.steps.dag import plan as plan_step

    the_plan = plan_step.run_step(ctx.store)
    discard_stale_profiles(ctx, the_plan)
    return the_plan


@dataclass
class BenchOutcome:
    profile: CandidateProfile
    reused: bool = False


def bench(ctx: RunContext, candidate_id: str) -> BenchOutcome:
    """profiles/<id>.json for one candidate: the stored one when it is valid for this request (resume),
    else measured; a step error becomes a failed profile that fit reports."""
    from slaprof.steps.dag import bench as bench_step
    from slaprof.steps.dag.plan import Plan

    if not ctx.force:
        stored = reusable_profile(ctx.store, candidate_id, read_model(ctx.store, Layout.PLAN, Plan).request_key)
        if stored is not None:
            return BenchOutcome(stored, reused=True)
    kwargs: dict[str, Any] = {}
    if ctx.on_progress is not None:
        kwargs["on_progress"] = ctx.on_progress
    if ctx.bench_options is not None:
        kwargs["options"] = ctx.bench_options
    try:
        return BenchOutcome(bench_step.run_step(ctx.store, candidate_id, **kwargs))
    except (StoreWriteError, StoreUnavailable):
        raise  # nothing could record the failure either
    except (UserError, StepFailed) as exc:
        if ctx.transient(exc):
            raise  # the runner retries the step: the candidate did not fail
        return BenchOutcome(record_failure(ctx.store, candidate_id, str(exc)))


def fit(ctx: RunContext) -> Selection:
    """Every profile -> selection.json, planner data, plots, report.html."""
    from slaprof.steps.dag import fit as fit_step

    return fit_step.run_step(ctx.store)


def pick(ctx: RunContext) -> Selection:
    """selection.json and planner data for the chosen deployment; fit's own selection stays in
    selection.auto.json. Choosing fit's recommendation (or `auto`) changes nothing."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.results import Selection
    from slaprof.steps.core.store import write_model
    from slaprof.steps.dag.fit import load_plan, load_profiles, write_outputs
    from slaprof.steps.fitting.pick import apply_choice

    request = read_model(ctx.store, Layout.REQUEST, ProfileRequest)
    selection = read_model(ctx.store, Layout.SELECTION, Selection)
    profiles = {p.id: p for p in load_profiles(ctx.store)}
    result = apply_choice(request, load_plan(ctx.store, request), selection, profiles, ctx.choice)
    if result is None:
        return selection
    write_model(ctx.store, AUTO_SELECTION, selection)
    write_outputs(ctx.store, result, request, report=False)
    return result.selection


def render(ctx: RunContext) -> str:
    """dgd.yaml, every manifest labelled with the run (what the exit handler and `undo` look for)."""
    from slaprof.steps.dag import render as render_step
    from slaprof.steps.dag.apply import RUN_LABEL

    return render_step.run_step(ctx.store, labels={RUN_LABEL: run_label(ctx.location)})


def record(ctx: RunContext) -> DriftReport:
    """drift.json against the previous run of the same model, backend and GPU; this run becomes the reference."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.dag import drift

    request = read_model(ctx.store, Layout.REQUEST, ProfileRequest)
    history = ctx.history(drift.history_key(request.model, request.backend, request.hardware.gpu))
    return drift.run_step(ctx.store, history, ctx.run, threshold_pct=ctx.drift_threshold)


def apply(ctx: RunContext) -> Any:
    """dgd.yaml into the request's namespace, waiting until it is ready."""
    from slaprof.steps.dag import apply as apply_step

    return apply_step.run_step(ctx.store, wait=True, timeout=ctx.apply_timeout)


# ---------------------------------------------------------------------------
# the declaration
# ---------------------------------------------------------------------------
PROFILE = Layout.profile("<candidate>")
STEPS: tuple[Step, ...] = (
    Step("plan", reads=(Layout.REQUEST,), writes=(Layout.PLAN,), run=plan, help="candidates and sweep grids"),
    Step(
        "bench",
        reads=(Layout.REQUEST, Layout.PLAN, PROFILE),
        writes=(PROFILE,),
        run=bench,
        after=("plan",),
        fans_out=True,
        help="one candidate measured (or estimated)",
    ),
    Step(
        "fit",
        reads=(Layout.REQUEST, Layout.PLAN, Layout.PROFILES),
        writes=(Layout.SELECTION, *PLANNER_DATA, Layout.PLOTS, Layout.REPORT),
        run=fit,
        after=("bench",),
        help="the best deployment under the SLA",
    ),
    Step(
        "pick",
        reads=(Layout.REQUEST, Layout.PLAN, Layout.SELECTION, Layout.PROFILES),
        writes=(Layout.SELECTION, AUTO_SELECTION, *PLANNER_DATA),
        run=pick,
        after=("fit",),
        when="pick",
        asks_person=True,
        help="a person's choice among the Pareto choices",
    ),
    Step(
        "render",
        reads=(Layout.REQUEST, Layout.SELECTION, Layout.PREFILL_JSON, Layout.DECODE_JSON),
        writes=(Layout.DGD,),
        run=render,
        after=("fit", "pick"),
        needs_recommendation=True,
        help="the DynamoGraphDeployment",
    ),
    Step(
        "record",
        reads=(Layout.REQUEST, Layout.SELECTION),
        writes=(DRIFT, f"../{HISTORY}/<model>/<backend>/<gpu>/"),
        run=record,
        after=("fit", "pick"),
        needs_recommendation=True,
        help="history and drift",
    ),
    Step(
        "apply",
        reads=(Layout.REQUEST, Layout.DGD),
        writes=("applied.json",),
        run=apply,
        after=("render",),
        when="auto_apply",
        help="the deployment applied and ready",
    ),
)
BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}


def step(name: str) -> Step:
    return BY_NAME[name]


def switched_on(s: Step, request: ProfileRequest, choice: str) -> bool:
    """Whether a step with a switch runs for this request and pick."""
    if s.when == "pick":
        return choice != AUTO_CHOICE
    if s.when == "auto_apply":
        return request.deployment.auto_apply
    return True
