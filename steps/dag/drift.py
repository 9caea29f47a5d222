"""DAG step `record`: keep each run's result under a stable key and report drift against the last one.

Inputs: the run's selection.json and request.json; the previous result and its request in the
history store at `history/<model>/<backend>/<gpu>/` (absent on the first run).
Outputs: drift.json in the run (percent change of TTFT, ITL and throughput per GPU at the chosen
configurations, whether the choice changed, and which of the request's inputs changed); the
history entry replaced by this run's result and request.
A threshold > 0 turns drift beyond it (or a changed choice) into a failed step, after recording,
unless the request itself changed: a new SLA or GPU budget changes the answer, not the system.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from slaprof.steps.core.errors import StepFailed
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import Selection, utc_now
from slaprof.steps.core.store import ArtifactStore, BadArtifact, Layout, read_model, write_model

DRIFT_KEY = "drift.json"
HISTORY_SELECTION = "selection.json"
HISTORY_RUN = "run.json"
HISTORY_REQUEST = "request.json"
# where and how the result is deployed: changing these changes no number of the answer
DEPLOY_ONLY = {
    "namespace",
    "name",
    "frontend_image",
    "model_cache_pvc",
    "model_cache_pvc_path",
    "model_cache_mount_path",
    "hf_token_secret",
    "auto_apply",
}


class MetricDrift(BaseModel):
    name: str  # prefill_ttft_ms | prefill_thpt_per_gpu | decode_itl_ms | decode_thpt_per_gpu
    previous: float
    current: float
    change_pct: float


class HistoryEntry(BaseModel):
    run: str
    recorded_at: str = Field(default_factory=utc_now)


class DriftReport(BaseModel):
    history_key: str
    run: str
    previous_run: str | None = None
    compared: bool = False  # False on the first run of this model/backend/GPU
    # the request's inputs that differ from the previous run's (`sla.ttft_ms: 200 -> 5`): its
    # numbers answer another question, so they are reported but not held to the threshold
    changed_inputs: list[str] = Field(default_factory=list)
    previous_choice: str | None = None
    current_choice: str | None = None
    choice_changed: bool = False
    metrics: list[MetricDrift] = Field(default_factory=list)
    max_abs_change_pct: float = 0.0
    threshold_pct: float = 0.0  # 0 = report only
    exceeded: bool = False
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        if not self.compared:
            return f"first result for {self.history_key}; nothing to compare"
        changes = ", ".join(f"{m.name} {m.change_pct:+.1f}%" for m in self.metrics) or "no comparable numbers"
        choice = (
            f"choice changed {self.previous_choice} -> {self.current_choice}"
            if self.choice_changed
            else f"choice unchanged ({self.current_choice})"
        )
        verdict = f"; exceeds {self.threshold_pct:g}%" if self.exceeded else ""
        changed = (
            f" (request changed: {', '.join(self.changed_inputs)}; not held to the threshold)"
            if self.changed_inputs
            else ""
        )
        return f"drift vs {self.previous_run or 'the previous run'}{changed}: {changes}; {choice}{verdict}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def history_key(model: str, backend: str, gpu: str) -> str:
    """Stable key of a (model, backend, GPU): `qwen-qwen3-32b/vllm/h200_sxm`."""
    return f"{_slug(model)}/{backend}/{gpu}"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def answer_inputs(request: ProfileRequest) -> dict[str, Any]:
    """The request's fields the answer depends on, by dotted name (`sla.ttft_ms`): all but where the
    result is deployed (`DEPLOY_ONLY`) and whether the run was a dry run."""
    return _flatten(request.model_dump(mode="json", exclude={"deployment": DEPLOY_ONLY, "sweep": {"dry_run"}}))


def changed_inputs(previous: ProfileRequest, current: ProfileRequest) -> list[str]:
    """`name: before -> after` for each input of the answer that differs between two requests."""
    before, after = answer_inputs(previous), answer_inputs(current)
    return [
        f"{name}: {before.get(name)} -> {after.get(name)}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


def choice_of(selection: Selection) -> str | None:
    """`tp2+tp4` (prefill+decode) or `agg-tp8`; with engine counts when fit sized a deployment:
    `2xtp2+1xtp4`."""
    chosen = selection.deployment
    if chosen is not None:
        return "+".join(f"{e.replicas}x{e.candidate.id}" for e in chosen.engines)
    if selection.prefill is None and selection.decode is None:
        return None
    p = selection.prefill.candidate.id if selection.prefill else "-"
    d = selection.decode.candidate.id if selection.decode else "-"
    return f"{p}+{d}"


def _numbers(selection: Selection) -> dict[str, float]:
    out: dict[str, float] = {}
    if selection.prefill:
        out["prefill_ttft_ms"] = selection.prefill.ttft_ms
        out["prefill_thpt_per_gpu"] = selection.prefill.thpt_per_gpu
    if selection.decode:
        out["decode_itl_ms"] = selection.decode.itl_ms
        out["decode_thpt_per_gpu"] = selection.decode.thpt_per_gpu
    if selection.deployment is not None:
        out["deployment_ttft_ms"] = selection.deployment.ttft_ms
        out["deployment_itl_ms"] = selection.deployment.itl_ms
        out["deployment_thpt_per_gpu"] = selection.deployment.thpt_per_gpu
    return out


def _selection_changes(previous: Selection, current: Selection) -> list[str]:
    """What a selection alone tells of a changed request: its workload and SLA."""
    notes = []
    if (previous.isl, previous.osl) != (current.isl, current.osl):
        notes.append(f"workload changed: ISL/OSL {previous.isl}/{previous.osl} -> {current.isl}/{current.osl}")
    if (previous.ttft_ms, previous.itl_ms) != (current.ttft_ms, current.itl_ms):
        notes.append(
            f"SLA changed: TTFT/ITL {previous.ttft_ms:g}/{previous.itl_ms:g} ms -> "
            f"{current.ttft_ms:g}/{current.itl_ms:g} ms"
        )
    return notes


def compare(
    previous: Selection | None,
    current: Selection,
    *,
    key: str,
    run: str,
    previous_run: str | None = None,
    threshold_pct: float = 0.0,
    requests: tuple[ProfileRequest, ProfileRequest] | None = None,
) -> DriftReport:
    """Drift of `current` against `previous` (None on the first run). `requests`: the previous and
    the current run's requests, when both are known (a history from before they were recorded has
    only the selection's workload and SLA to go by)."""
    report = DriftReport(
        history_key=key,
        run=run,
        previous_run=previous_run,
        current_choice=choice_of(current),
        threshold_pct=threshold_pct,
    )
    if previous is None:
        return report
    report.compared = True
    report.previous_choice = choice_of(previous)
    report.choice_changed = report.previous_choice != report.current_choice
    if requests is not None:
        report.changed_inputs = changed_inputs(*requests)
    else:
        report.notes += _selection_changes(previous, current)
    before, after = _numbers(previous), _numbers(current)
    for name in before.keys() & after.keys():
        if before[name] == 0:
            continue
        change = (after[name] - before[name]) / before[name] * 100.0
        report.metrics.append(
            MetricDrift(name=name, previous=before[name], current=after[name], change_pct=round(change, 2))
        )
    report.metrics.sort(key=lambda m: m.name)
    report.max_abs_change_pct = max((abs(m.change_pct) for m in report.metrics), default=0.0)
    drifted = report.max_abs_change_pct > threshold_pct or report.choice_changed
    report.exceeded = threshold_pct > 0 and drifted and not report.changed_inputs
    return report


def _previous_request(history: ArtifactStore) -> ProfileRequest | None:
    """The request of the run in the history, or None: none recorded, or one an older slaprof wrote
    that this one cannot read (its selection is still compared, by workload and SLA)."""
    if not history.exists(HISTORY_REQUEST):
        return None
    try:
        return read_model(history, HISTORY_REQUEST, ProfileRequest)
    except BadArtifact:
        return None


def run_step(store: ArtifactStore, history: ArtifactStore, run: str, threshold_pct: float = 0.0) -> DriftReport:
    """DAG step `record`: write drift.json, replace the history entry, fail when drift exceeds the threshold.

    `history` is the store rooted at the stable key (see `history_key`); the caller opens it."""
    current = read_model(store, Layout.SELECTION, Selection)
    request = read_model(store, Layout.REQUEST, ProfileRequest)
    key = history_key(request.model, request.backend, request.hardware.gpu)
    previous = read_model(history, HISTORY_SELECTION, Selection) if history.exists(HISTORY_SELECTION) else None
    previous_run = read_model(history, HISTORY_RUN, HistoryEntry).run if history.exists(HISTORY_RUN) else None
    before = _previous_request(history)
    report = compare(
        previous,
        current,
        key=key,
        run=run,
        previous_run=previous_run,
        threshold_pct=threshold_pct,
        requests=(before, request) if before is not None else None,
    )
    write_model(store, DRIFT_KEY, report)
    # the newest result always becomes the reference: a drift alarm fires once, not on every later run
    write_model(history, HISTORY_SELECTION, current)
    write_model(history, HISTORY_REQUEST, request)
    write_model(history, HISTORY_RUN, HistoryEntry(run=run))
    if report.exceeded:
        raise StepFailed(report.summary())
    return report
