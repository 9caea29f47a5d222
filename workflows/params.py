"""Workflow parameters of the `slaprof-profile` WorkflowTemplate, and the names it shares with the chart.

Argo concept: `spec.arguments.parameters` (https://argo-workflows.readthedocs.io/en/latest/walk-through/parameters/).
Each request parameter maps onto one ProfileRequest field; an empty value means "take it from
the `request` document, else slaprof's default", so a request YAML and the UI form compose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from steps.apply import RUN_LABEL as RUN_LABEL  # re-exported: one declaration
from steps.dynamo_releases import supported
from steps.errors import UserError
from steps.gpus import GPU_NAMES
from steps.request import BACKENDS, SERVING_MODES

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

# RUN_LABEL (steps.apply) is on every pod and on what a run creates; what the exit handler undoes
# comes from the run's apply record, never from this label.
LABEL_PREFIX = "slaprof.io"

PICK_SLOTS = 6  # Pareto choices offered by the suspend node (Argo enums are static lists)
AUTO_CHOICE = "auto"


@dataclass(frozen=True)
class RequestParam:
    """A workflow parameter that sets one ProfileRequest field."""

    name: str
    path: str  # dotted path in ProfileRequest
    kind: type
    description: str
    enum: tuple[str, ...] | None = None

    def parse(self, text: str) -> Any:
        """The typed value of a non-empty parameter, or a UserError naming the parameter."""
        text = text.strip()
        try:
            if self.kind is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            return self.kind(text)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(self.kind, "text")
            raise UserError(f"workflow parameter {self.name}={text!r} must be {kind}") from None


_EMPTY = "empty = from `request`, else the default"

REQUEST_PARAMS: tuple[RequestParam, ...] = (
    RequestParam(
        "model",
        "model",
        str,
        "Hugging Face model id or a model folder in the image/PVC (required unless `request` names it)",
    ),
    RequestParam("backend", "backend", str, f"inference backend; {_EMPTY} (vllm)", ("", *BACKENDS)),
    RequestParam(
        "method",
        "method",
        str,
        f"offline = estimate without engines, simulate = simulated engines + AIPerf on CPUs, online = real engines on GPUs; {_EMPTY} (offline)",
        ("", "offline", "simulate", "online"),
    ),
    RequestParam(
        "serving",
        "serving",
        str,
        f"auto = compare aggregated and disaggregated serving, agg or disagg = profile and deploy only that mode; {_EMPTY} (auto)",
        ("", *SERVING_MODES),
    ),
    RequestParam("isl", "sla.isl", int, f"average input sequence length, tokens; {_EMPTY} (3000)"),
    RequestParam("osl", "sla.osl", int, f"average output sequence length, tokens; {_EMPTY} (500)"),
    RequestParam("ttft", "sla.ttft_ms", float, f"time-to-first-token target, ms; {_EMPTY} (50)"),
    RequestParam("itl", "sla.itl_ms", float, f"inter-token latency target, ms; {_EMPTY} (10)"),
    RequestParam(
        "confidence",
        "sla.confidence",
        float,
        f"meet the targets at this quantile of the estimates' prediction intervals; {_EMPTY} (0.5)",
    ),
    RequestParam("gpu", "hardware.gpu", str, f"GPU type of the cluster; {_EMPTY} (h200_sxm)", ("", *GPU_NAMES)),
    RequestParam("gpus-per-node", "hardware.gpus_per_node", int, f"GPUs per node; {_EMPTY} (8)"),
    RequestParam(
        "total-gpus",
        "hardware.total_gpus",
        int,
        f"GPUs the whole recommended deployment may use (0 = one node); {_EMPTY}",
    ),
    RequestParam(
        "min-gpus-per-engine",
        "hardware.min_gpus_per_engine",
        int,
        f"smallest engine to try, GPUs (0 = from the model's size); {_EMPTY}",
    ),
    RequestParam(
        "max-gpus-per-engine",
        "hardware.max_gpus_per_engine",
        int,
        f"largest engine to try, GPUs (0 = one node); {_EMPTY}",
    ),
    RequestParam(
        "engine-image",
        "deployment.engine_image",
        str,
        f"engine image for online benchmarks and the rendered DGD; {_EMPTY} (Dynamo's runtime image for the backend)",
    ),
    RequestParam(
        "dynamo-version",
        "deployment.dynamo_version",
        str,
        f"Dynamo release the DGD is rendered for ({supported()}); {_EMPTY} (the engine image's tag, else the newest)",
    ),
    RequestParam(
        "namespace", "deployment.namespace", str, f"namespace the DGD is rendered for and applied to; {_EMPTY} (dynamo)"
    ),
    RequestParam(
        "auto-apply",
        "deployment.auto_apply",
        bool,
        f"apply the rendered DGD to the cluster and wait until it is ready; {_EMPTY} (false)",
        ("", "true", "false"),
    ),
)


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
        *parents, leaf = param.path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = param.parse(str(text))
    return out


def parameter_values(request: Any) -> dict[str, str]:
    """The request parameters' values for a ProfileRequest (what `slaprof submit` shows in the UI)."""
    data = request.model_dump()
    out: dict[str, str] = {}
    for param in REQUEST_PARAMS:
        node: Any = data
        for part in param.path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue
        out[param.name] = str(node).lower() if isinstance(node, bool) else str(node)
    return out
