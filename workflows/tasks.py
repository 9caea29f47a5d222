"""Runner scripts: what each task of the `slaprof-profile` DAG runs inside the slaprof image.

Argo concept: script templates run by Hera's runner (`python -m hera.workflows.runner -e
slaprof.workflows.tasks:<function> <inputs.json>`, https://hera.readthedocs.io/en/stable/user-guides/script-runner-io/).
Each function opens the run's artifact store, the S3 prefix `<bucket>/<run>/` (endpoint, bucket
and keys from the environment: the `slaprof-s3` ConfigMap and Secret), and calls the step
entry point the local runner calls too. Output parameters and the files the Argo UI previews go
to Hera's outputs directory; the store stays the source of truth, so `fit` can read every
profile under the prefix (Argo cannot fan in artifacts).

Exit codes: 0 done, 1 step failed, 2 bad request, 75 transient (S3 or API unreachable): the
templates retry only 75 and pod-level errors.

No `from __future__ import annotations` here: Hera reads these annotations at run time.
"""

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from hera.workflows import Input, NoneArchiveStrategy, Output, Parameter, S3Artifact
from pydantic import BaseModel, create_model

from slaprof.steps.core.errors import StepFailed, Unreachable, UserError
from slaprof.workflows.params import (
    AUTO_CHOICE,
    CONTROL_PARAMS,
    PICK_SLOTS,
    REQUEST_DOC_DESCRIPTION,
    REQUEST_PARAMS,
    duration_seconds,
    request_overrides,
)

TRANSIENT_EXIT = 75  # EX_TEMPFAIL: the only step exit code the templates retry
OUTPUTS_ENV = "hera__outputs_directory"
DEFAULT_OUTPUTS = "/tmp/hera-outputs"
RUN_DESCRIPTION = "the run's key prefix in the artifact bucket ({{workflow.name}})"


# ---------------------------------------------------------------------------
# plumbing shared by every task
# ---------------------------------------------------------------------------
def outputs_dir() -> Path:
    return Path(os.environ.get(OUTPUTS_ENV, DEFAULT_OUTPUTS))


def run_location(run: str, *parts: str) -> str:
    """Where a run's artifacts live: `<root>/<run>[/parts]`.

    The root is SLAPROF_STORE_ROOT when set (a folder or s3://bucket/prefix, e.g. to run a task by
    hand), else `s3://$SLAPROF_S3_BUCKET`, the workflow's artifact bucket."""
    root = os.environ.get("SLAPROF_STORE_ROOT", "").strip().rstrip("/")
    if not root:
        bucket = os.environ.get("SLAPROF_S3_BUCKET", "").strip()
        if not bucket:
            raise UserError(
                "SLAPROF_S3_BUCKET is not set: install the slaprof-s3 ConfigMap (see the chart) "
                "or set SLAPROF_STORE_ROOT"
            )
        root = f"s3://{bucket}"
    if not run.strip("/"):
        raise UserError("empty run id: the task's `run` parameter must be {{workflow.name}}")
    return "/".join([root, run.strip("/"), *parts])


def run_store(run: str):
    """The run's store; refused while a local `slaprof profile` holds its lock (steps/runner/runlock.py)."""
    from slaprof.steps.core.store import open_store
    from slaprof.steps.runner.runlock import ensure_free

    store = open_store(run_location(run))
    ensure_free(store)
    return store


def run_context(run: str, **choices: Any):
    """The declared steps' context for the run (slaprof.steps.dag.pipeline): its store, and errors the templates retry."""
    from slaprof.steps.dag.pipeline import RunContext

    return RunContext(run_store(run), run_location(run), transient=_is_transient, **choices)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, Unreachable)):
        return True
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, HTTPError)


@contextmanager
def step_errors(task: str) -> Iterator[None]:
    """One line on stderr and the documented exit code, instead of a traceback, for known errors."""
    try:
        yield
    except SystemExit:
        raise
    except Exception as exc:
        if _is_transient(exc):
            print(f"slaprof {task}: transient error, will be retried: {exc}", file=sys.stderr)
            sys.exit(TRANSIENT_EXIT)
        if isinstance(exc, (UserError, StepFailed)):
            print(f"slaprof {task}: error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise


def _store_text(store: Any, key: str) -> str | None:
    return store.get_bytes(key).decode() if store.exists(key) else None


def _copy_prefix(store: Any, prefix: str, artifact: str) -> None:
    """Copy every object under `prefix` into the outputs directory as the directory artifact `artifact`."""
    target = outputs_dir() / "artifacts" / artifact
    shutil.rmtree(target, ignore_errors=True)
    for key in store.list(prefix):
        path = target / key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get_bytes(key))


def _artifact(name: str, key: str) -> S3Artifact:
    """A key-only S3 output in the workflow's artifact repository, stored as-is so the UI previews it."""
    return S3Artifact(name=name, key="{{workflow.name}}/" + key, archive=NoneArchiveStrategy(), optional=True)


RunParam = Annotated[str, Parameter(name="run", description=RUN_DESCRIPTION)]


# ---------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------
PlanInput = create_model(  # type: ignore[call-overload]
    "PlanInput",
    __base__=Input,
    run=(RunParam, ...),
    request=(Annotated[str, Parameter(name="request", description=REQUEST_DOC_DESCRIPTION)], ""),
    bench_timeout=(
        Annotated[str, Parameter(name="bench-timeout", description="how long one bench pod may run, e.g. 4h")],
        next(c.value for c in CONTROL_PARAMS if c.name == "bench-timeout"),
    ),
    **{
        p.name.replace("-", "_"): (Annotated[str, Parameter(name=p.name, description=p.description)], "")
        for p in REQUEST_PARAMS
    },
)


class BenchItem(BaseModel):
    """One item of the bench fan-out."""

    id: str
    gpus: int  # GPUs of the candidate's engine; 0 without an engine (offline, simulate)


class PlanOutput(Output):
    candidates: Annotated[
        list[BenchItem], Parameter(name="candidates", description="bench fan-out: JSON list of {id, gpus}")
    ] = []
    candidate_ids: Annotated[
        list[str], Parameter(name="candidate-ids", description="runnable candidates, JSON list of ids")
    ] = []
    dropped: Annotated[str, Parameter(name="dropped", description="candidates left out and why")] = ""
    method: Annotated[str, Parameter(name="method", description="offline | simulate | online")] = "offline"
    auto_apply: Annotated[bool, Parameter(name="auto-apply", description="apply the DGD when rendered")] = False
    engine_image: Annotated[str, Parameter(name="engine-image", description="engine image for online benchmarks")] = ""
    model: Annotated[str, Parameter(name="model", description="the model profiled")] = ""
    history_key: Annotated[str, Parameter(name="history-key", description="stable key of model/backend/GPU")] = ""
    bench_deadline: Annotated[
        int, Parameter(name="bench-deadline-seconds", description="bench-timeout in seconds (activeDeadlineSeconds)")
    ] = 0
    request_json: Annotated[str | None, _artifact("request", "request.json")] = None
    plan_json: Annotated[str | None, _artifact("plan", "plan.json")] = None


def build_request_from_parameters(request_doc: str, values: dict[str, str]):
    """The ProfileRequest of a run: the `request` document overridden by non-empty parameters."""
    import yaml

    from slaprof.steps.core.request import build_request, merge, parse_request_document

    base: dict[str, Any] = {}
    if request_doc.strip():
        try:
            doc = yaml.safe_load(request_doc)
        except yaml.YAMLError as exc:
            raise UserError(
                f"workflow parameter `request` is not valid YAML/JSON: {str(exc).splitlines()[0]}"
            ) from None
        base = parse_request_document(doc, origin="workflow parameter `request`")
    data = merge(base, request_overrides(values))
    if not data.get("model"):
        raise UserError("no model given: set the workflow parameter `model` or name it in `request`")
    return build_request(data)


def plan(inputs: PlanInput) -> PlanOutput:
    """Task `plan`: request.json from the parameters, then the declared step `plan` -> plan.json."""
    from slaprof.steps.core.store import Layout, write_model
    from slaprof.steps.dag import pipeline
    from slaprof.steps.dag.drift import history_key
    from slaprof.steps.dag.render import default_worker_image

    with step_errors("plan"):
        deadline = duration_seconds(inputs.bench_timeout, "bench-timeout")  # type: ignore[attr-defined]
        values = {p.name: getattr(inputs, p.name.replace("-", "_")) for p in REQUEST_PARAMS}
        request = build_request_from_parameters(inputs.request, values)  # type: ignore[attr-defined]
        ctx = run_context(inputs.run)  # type: ignore[attr-defined]
        write_model(ctx.store, Layout.REQUEST, request)
        the_plan = pipeline.plan(ctx)
        ids = the_plan.runnable_ids()
        online = request.method == "online"
        dropped = "; ".join(f"{p.id}: {p.reason}" for p in the_plan.candidates if p.status != "runnable")
        return PlanOutput(
            candidates=[BenchItem(id=c, gpus=the_plan.get(c).candidate.num_gpus if online else 0) for c in ids],
            candidate_ids=ids,
            dropped=dropped or "none",
            method=request.method,
            auto_apply=request.deployment.auto_apply,
            engine_image=request.deployment.engine_image or default_worker_image(request),
            model=request.model,
            history_key=history_key(request.model, request.backend, request.hardware.gpu),
            bench_deadline=deadline,
            request_json=_store_text(ctx.store, Layout.REQUEST),
            plan_json=_store_text(ctx.store, Layout.PLAN),
        )


# ---------------------------------------------------------------------------
# bench (one pod per candidate)
# ---------------------------------------------------------------------------
class BenchInput(Input):
    run: RunParam
    candidate: Annotated[str, Parameter(name="candidate", description="candidate id, e.g. tp4")]
    gpus: Annotated[int, Parameter(name="gpus", description="GPUs of the engine (0 without an engine)")] = 0


class BenchOutput(Output):
    status: Annotated[str, Parameter(name="status", description="ok | infeasible | failed")] = "failed"
    reason: Annotated[str, Parameter(name="reason", description="why it is not ok")] = ""
    max_kv_tokens: Annotated[int, Parameter(name="max-kv-tokens", description="engine KV cache, tokens")] = 0
    profile_json: Annotated[str | None, _artifact("profile", "profiles/{{inputs.parameters.candidate}}.json")] = None


def bench(inputs: BenchInput) -> BenchOutput:
    """Task `bench`: the declared step `bench` for one candidate -> profiles/<id>.json.

    A valid profile of an earlier attempt of this run is kept (resume). A step error still leaves
    a failed profile (with its reason) for fit to report; the pod then exits 1, and the DAG's
    continueOn lets the other candidates and fit go on."""
    from slaprof.steps.core.store import Layout
    from slaprof.steps.dag import pipeline

    with step_errors("bench"):
        ctx = run_context(inputs.run)
        profile = pipeline.bench(ctx, inputs.candidate).profile
        return BenchOutput(
            status=profile.status,
            reason=profile.reason or "",
            max_kv_tokens=profile.max_kv_tokens,
            profile_json=_store_text(ctx.store, Layout.profile(inputs.candidate)),
            exit_code=1 if profile.status == "failed" else 0,
        )


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------
def _choice_fields() -> dict[str, Any]:
    return {
        f"choice_{i}": (Annotated[str, Parameter(name=f"choice-{i}", description=f"Pareto choice {i}")], AUTO_CHOICE)
        for i in range(1, PICK_SLOTS + 1)
    }


_FitOutputBase = create_model("_FitOutputBase", __base__=Output, **_choice_fields())


class FitOutput(_FitOutputBase):
    prefill: Annotated[str, Parameter(name="prefill", description="chosen prefill mapping, e.g. TP:2")] = "none"
    decode: Annotated[str, Parameter(name="decode", description="chosen decode mapping, e.g. TP:4")] = "none"
    ttft_ms: Annotated[str, Parameter(name="ttft-ms", description="TTFT a user of the deployment sees, ms")] = ""
    itl_ms: Annotated[str, Parameter(name="itl-ms", description="ITL of the deployment, ms")] = ""
    prefill_thpt: Annotated[str, Parameter(name="prefill-thpt-per-gpu", description="input tokens/s/GPU")] = ""
    decode_thpt: Annotated[str, Parameter(name="decode-thpt-per-gpu", description="output tokens/s/GPU")] = ""
    meets_sla: Annotated[str, Parameter(name="meets-sla", description="true when the deployment meets the SLA")] = (
        "false"
    )
    serving: Annotated[str, Parameter(name="serving", description="the recommended serving mode: agg or disagg")] = ""
    deployment: Annotated[
        str, Parameter(name="deployment", description="the recommended deployment: engines, GPUs, tokens/s/GPU")
    ] = ""
    other_mode: Annotated[
        str, Parameter(name="other-mode", description="how the best of the other serving mode compares")
    ] = ""
    recommendation: Annotated[str, Parameter(name="recommendation", description="the suggested deployment")] = ""
    choices: Annotated[
        list[str], Parameter(name="choices", description="Pareto choices offered to pick, JSON list")
    ] = []
    selection_json: Annotated[str | None, _artifact("selection", "selection.json")] = None
    report_html: Annotated[str | None, _artifact("report", "report.html")] = None


def fit_outputs(selection: Any) -> dict[str, Any]:
    """Output parameter values of fit for a Selection (what the node panel shows)."""
    from slaprof.steps.fitting.pick import pareto_choices

    choices = pareto_choices(selection)
    slots = (choices + [choices[0] if choices else AUTO_CHOICE] * PICK_SLOTS)[:PICK_SLOTS]
    out: dict[str, Any] = {f"choice_{i + 1}": label for i, label in enumerate(slots)}
    out["choices"] = choices
    p, d, chosen = selection.prefill, selection.decode, selection.deployment
    meets = chosen.meets_sla if chosen is not None else bool(p and d and p.meets_sla and d.meets_sla)
    out.update(
        prefill=p.candidate.label if p else "none",
        decode=d.candidate.label if d else "none",
        ttft_ms=f"{chosen.ttft_ms:.2f}" if chosen else f"{p.ttft_ms:.2f}" if p else "",
        itl_ms=f"{chosen.itl_ms:.3f}" if chosen else f"{d.itl_ms:.3f}" if d else "",
        prefill_thpt=f"{p.thpt_per_gpu:.1f}" if p else "",
        decode_thpt=f"{d.thpt_per_gpu:.1f}" if d else "",
        meets_sla=str(meets).lower(),
        serving=chosen.mode if chosen else ("disagg" if p and d else ""),
        deployment=f"{chosen.shape} on {chosen.gpus} GPUs, {chosen.thpt_per_gpu:.1f} tokens/s/GPU" if chosen else "",
        other_mode=selection.comparison,
        recommendation="\n".join(selection.recommendation) or "; ".join(selection.warnings) or "no recommendation",
    )
    return out


def fit(run: RunParam) -> FitOutput:
    """Task `fit`: the declared step `fit` over every profile under the run -> selection.json, report, plots."""
    from slaprof.steps.core.store import Layout
    from slaprof.steps.dag import pipeline

    with step_errors("fit"):
        ctx = run_context(run)
        selection = pipeline.fit(ctx)
        _copy_prefix(ctx.store, Layout.PLOTS, "plots")
        return FitOutput(
            **fit_outputs(selection),
            selection_json=_store_text(ctx.store, Layout.SELECTION),
            report_html=_store_text(ctx.store, Layout.REPORT),
        )


# ---------------------------------------------------------------------------
# pick (after the suspend node, pick=manual only)
# ---------------------------------------------------------------------------
class PickOutput(Output):
    picked: Annotated[str, Parameter(name="picked", description="the deployment picked")] = ""
    selection_json: Annotated[str | None, _artifact("selection", "selection.json")] = None


def pick(
    run: RunParam,
    choice: Annotated[str, Parameter(name="choice", description="the label picked on resume")] = AUTO_CHOICE,
) -> PickOutput:
    """Task `pick`: the declared step `pick` for the person's choice (fit's own stays in selection.auto.json)."""
    from slaprof.steps.core.store import Layout
    from slaprof.steps.dag import pipeline

    with step_errors("pick"):
        ctx = run_context(run, choice=choice)
        selection = pipeline.pick(ctx)
        label = "; ".join(selection.recommendation) or choice
        print(f"slaprof pick: {label}")
        return PickOutput(picked=label, selection_json=_store_text(ctx.store, Layout.SELECTION))


# ---------------------------------------------------------------------------
# render, apply
# ---------------------------------------------------------------------------
class RenderOutput(Output):
    dgd_yaml: Annotated[str | None, _artifact("dgd", "dgd.yaml")] = None


def render(run: RunParam) -> RenderOutput:
    """Task `render`: the declared step `render` -> dgd.yaml (labelled with the run by the step itself)."""
    from slaprof.steps.dag import pipeline

    with step_errors("render"):
        return RenderOutput(dgd_yaml=pipeline.render(run_context(run)))


def apply(
    run: RunParam,
    timeout: Annotated[str, Parameter(name="timeout", description="seconds to wait until the DGD is ready")] = "1800",
) -> None:
    """Task `apply` (auto-apply only): the declared step `apply` into the request's namespace, waiting until ready."""
    from slaprof.steps.dag import pipeline

    with step_errors("apply"):
        pipeline.apply(run_context(run, apply_timeout=float(timeout)))


# ---------------------------------------------------------------------------
# record (history + drift)
# ---------------------------------------------------------------------------
class RecordOutput(Output):
    drift: Annotated[
        str, Parameter(name="drift", description="drift against the previous run of this model/backend/GPU")
    ] = ""
    drift_json: Annotated[str | None, _artifact("drift", "drift.json")] = None


def record(
    run: RunParam,
    threshold: Annotated[str, Parameter(name="drift-threshold", description="percent; 0 = report only")] = "0",
) -> RecordOutput:
    """Task `record`: the declared step `record` against history/<key>/; fails only when drift exceeds the threshold."""
    from slaprof.steps.dag import pipeline

    with step_errors("record"):
        try:
            limit = float(threshold or 0)
        except ValueError:
            raise UserError(
                f"workflow parameter drift-threshold={threshold!r} must be a number of percent (0 = report only)"
            ) from None
        ctx = run_context(run, drift_threshold=limit)
        try:
            report = pipeline.record(ctx)
        except StepFailed as exc:
            # keep the report visible in the node even though the step fails
            return RecordOutput(drift=str(exc), drift_json=_store_text(ctx.store, pipeline.DRIFT), exit_code=1)
        print(f"slaprof record: {report.summary()}")
        return RecordOutput(drift=report.summary(), drift_json=_store_text(ctx.store, pipeline.DRIFT))


# ---------------------------------------------------------------------------
# exit handler
# ---------------------------------------------------------------------------
class CleanupOutput(Output):
    undone: Annotated[str, Parameter(name="undone", description="what the exit handler deleted or restored")] = ""


def cleanup(
    run: RunParam = "{{workflow.name}}",
    status: Annotated[str, Parameter(name="status", description="how the run ended")] = "{{workflow.status}}",
) -> CleanupOutput:
    """Exit handler: when the run did not succeed, undo what its apply did (slaprof.steps.dag.undo).

    Only objects the run's record names are touched: those it created are deleted, those it
    updated get their replaced values back, and nothing is undone once its deployment became
    ready (a drift verdict in `record` fails the run but not the deployment). Engines of online
    benchmarks are sidecars and die with their pods. A cluster it cannot reach exits 75, so the
    template's retry tries again."""
    with step_errors("cleanup"):
        if status == "Succeeded":
            return CleanupOutput(undone="nothing: the run succeeded")
        from slaprof.steps.dag import undo

        lines = undo.run_step(run_store(run))
        for line in lines:
            print(f"slaprof cleanup: {line}")
        return CleanupOutput(undone="; ".join(lines))
