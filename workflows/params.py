"""Workflow parameters of the `slaprof-profile` WorkflowTemplate, and the names it shares with the chart.

Argo concept: `spec.arguments.parameters` (https://argo-workflows.readthedocs.io/en/latest/walk-through/parameters/).
Each request parameter is a ProfileRequest field declared with `argo` (steps/core/request.py; name, enum
and description come from that declaration); an empty value means "take it from the `request`
document, else slaprof's default", so a request YAML and the UI form compose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.fields import RequestField, argo_description, get_path, request_fields, set_path
from slaprof.steps.dag.apply import RUN_LABEL as RUN_LABEL  # re-exported: one declaration
from slaprof.steps.dag.pipeline import AUTO_CHOICE as AUTO_CHOICE  # re-exported: one declaration
from slaprof.steps.fitting.pick import PICK_SLOTS as PICK_SLOTS  # re-exported: one declaration

VERSION = "0.1.0"
IMAGE = f"ghcr.io/slaprof/slaprof:{VERSION}"

TEMPLATE_NAME = "slaprof-profile"
CRON_NAME = "slaprof-reprofile"
SERVICE_ACCOUNT = "slaprof"  # every pod (token not mounted) and Argo's executor containers
DEPLOYER_SERVICE_ACCOUNT = "slaprof-deployer"  # apply and cleanup: DGDs and the run's ConfigMaps
# The chart installs these; a cluster without the chart needs them too (see the README, "Profiling on a cluster").
ARTIFACT_REPOSITORY_CONFIGMAP = "slaprof-artifact-repository"
ARTIFACT_REPOSITORY_KEY = "default"
S3_CONFIGMAP = "slaprof-s3"  # SLAPROF_S3_ENDPOINT, SLAPROF_S3_BUCKET, SLAPROF_S3_SECURE
S3_SECRET = "slaprof-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
SEMAPHORE_CONFIGMAP = "slaprof-semaphores"
# One semaphore per engine size, taken by online bench pods only: key gpus-<N> holds how many
# N-GPU engines may be measured at once (the chart derives it from the GPUs it is told about).
GPU_SEMAPHORE_KEY = "gpus-{{inputs.parameters.gpus}}"


@dataclass(frozen=True)
class RequestParam:
    """A workflow parameter that sets one ProfileRequest field (generated from the field's declaration)."""

    name: str
    field: RequestField

    @property
    def path(self) -> str:
        return self.field.path

    @property
    def description(self) -> str:
        return argo_description(self.field)

    @property
    def enum(self) -> tuple[str, ...] | None:
        """Empty first (take the value from `request`), then the field's choices."""
        choices = self.field.choices
        return ("", *choices) if choices else None

    def parse(self, text: str) -> Any:
        """The typed value of a non-empty parameter, or a UserError naming the parameter."""
        return self.field.parse(text, self.name)


def request_params() -> tuple[RequestParam, ...]:
    """A parameter per request field declared with `argo`, in the request's order."""
    return tuple(RequestParam(f.exposed.argo, f) for f in request_fields() if f.exposed.argo)


REQUEST_PARAMS: tuple[RequestParam, ...] = request_params()


@dataclass(frozen=True)
class ControlParam:
    """A workflow parameter that steers the DAG rather than the request."""

    name: str
    value: str
    description: str
    enum: tuple[str, ...] | None = None


CONTROL_PARAMS: tuple[ControlParam, ...] = (
    ControlParam(
        "pick",
        AUTO_CHOICE,
        "auto = deploy fit's recommendation; manual = pause after fit so a person picks one of the Pareto choices in the UI and resumes",
        (AUTO_CHOICE, "manual"),
    ),
    ControlParam(
        "drift-threshold",
        "0",
        "percent change of TTFT, ITL or throughput (or a changed choice) against the previous run of the same model, backend and GPU that fails the run; 0 = only report drift",
    ),
    ControlParam(
        "engine-in-main",
        "false",
        "online only: true when the engine image contains slaprof, so the benchmark and the engine share the main container",
        ("true", "false"),
    ),
    ControlParam("gpu-resource", "nvidia.com/gpu", "extended resource name of a GPU on the cluster's nodes"),
    ControlParam("gpu-node-selector", "{}", "online only: node selector of benchmark pods, as a JSON object"),
    ControlParam(
        "gpu-tolerations",
        '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        "online only: tolerations of benchmark pods, as a JSON list",
    ),
    ControlParam(
        "bench-timeout",
        "4h",
        "how long one candidate's benchmark pod may run (a duration such as 4h or 2h30m); time spent waiting "
        "for GPUs (semaphore, scheduler, Kueue) does not count",
    ),
    ControlParam(
        "pick-timeout",
        "12h",
        "pick=manual: how long the run waits for a person to pick; then it goes on with fit's recommendation",
    ),
    ControlParam("apply-timeout", "1800", "seconds to wait for an applied DGD to become ready"),
)

REQUEST_DOC_DESCRIPTION = (
    "the request as YAML or JSON: a slaprof request, a Dynamo DynamoGraphDeploymentRequest, or a profile_sla config; "
    "the parameters below override its fields when they are not empty"
)


@dataclass
class WorkflowSettings:
    """What `slaprof workflow render` and the chart may change in the generated manifests."""

    image: str = IMAGE
    service_account: str = SERVICE_ACCOUNT
    deployer_service_account: str = DEPLOYER_SERVICE_ACCOUNT
    active_deadline_seconds: int = 24 * 3600
    bench_cpu: str = "2"
    bench_memory: str = "4Gi"
    # requests of the container that runs the engine (online): weights are loaded through host
    # memory, and without a model-cache PVC they are downloaded into an emptyDir (ephemeral storage)
    engine_cpu: str = "4"
    engine_memory: str = "32Gi"
    engine_ephemeral_storage: str = "50Gi"
    cron_schedules: list[str] = field(default_factory=lambda: ["0 3 * * 1"])
    cron_timezone: str = "UTC"
    cron_suspend: bool = True  # set arguments (at least the model) before enabling


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str, name: str) -> int:
    """Seconds of a Go duration such as 4h, 2h30m or 90s (workflow parameter `name`)."""
    value = text.strip()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise UserError(f"workflow parameter {name}={text!r} must be a duration such as 4h, 2h30m or 45m")
    seconds = round(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))
    if seconds < 1:
        raise UserError(f"workflow parameter {name}={text!r} must be at least 1s")
    return seconds


def request_overrides(values: dict[str, str]) -> dict[str, Any]:
    """Nested ProfileRequest overrides from workflow parameter values (empty ones ignored)."""
    out: dict[str, Any] = {}
    for param in REQUEST_PARAMS:
        text = values.get(param.name, "")
        if text is None or not str(text).strip():
            continue
        set_path(out, param.path, param.parse(str(text)))
    return out


def parameter_values(request: Any) -> dict[str, str]:
    """The request parameters' values for a ProfileRequest (what `slaprof submit` shows in the UI)."""
    data = request.model_dump()
    out: dict[str, str] = {}
    for param in REQUEST_PARAMS:
        node = get_path(data, param.path)
        if node is None:
            continue
        out[param.name] = str(node).lower() if isinstance(node, bool) else str(node)
    return out
