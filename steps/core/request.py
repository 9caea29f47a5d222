"""ProfileRequest (DAG step `plan` input): what the user wants profiled and under which SLA.

Loads from our own YAML/JSON, from a Dynamo DynamoGraphDeploymentRequest (v1alpha1
`profilingConfig.config`, camelCase or snake_case, or v1beta1), and from CLI flags named as
in Dynamo's `profile_sla`. Flags override the file. Each field's flags, workflow parameter and
DGDR keys are declared with it (`Exposed`, see steps/core/fields.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.fields import Exposed, from_profile_sla, from_v1alpha1_spec, from_v1beta1_spec
from slaprof.steps.dynamo import dynamo_releases
from slaprof.steps.engines import backend_names, plugin_error
from slaprof.steps.specs.gpus import GPU_NAMES

Method = Literal["offline", "simulate", "online"]
Quantization = Literal["auto", "bf16", "fp8", "fp4"]
KvDtype = Literal["auto", "bf16", "fp8"]
Estimator = Literal["builtin", "aic"]
ServingMode = Literal["auto", "agg", "disagg"]
DGDR_KIND = "DynamoGraphDeploymentRequest"
DGDR_API_VERSIONS: tuple[str, ...] = ("nvidia.com/v1alpha1", "nvidia.com/v1beta1")
ACCEPTED_DOCUMENTS = (
    f"a slaprof request (no `kind`), a Dynamo profile_sla config, or a {DGDR_KIND} ({', '.join(DGDR_API_VERSIONS)})"
)
SERVING_MODES: tuple[str, ...] = ("auto", "agg", "disagg")


class _Strict(BaseModel):
    # inf and nan are refused: an infinite target would pass every check, then break JSON and the planner
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _not_auto(value: Any) -> Any:
    return None if value == "auto" else value  # Dynamo's `auto` backend: slaprof's default


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value  # Dynamo's GPU SKUs are upper case


# Each field is declared once: the model says type, default, bounds and description; `Exposed` the
# CLI flags, the workflow parameter and the DGDR keys, from which steps/core/fields.py generates the rest.
class SLA(_Strict):
    isl: Annotated[int, Exposed("--isl", argo=True, profile_sla="sla.isl", v1beta1="workload.isl")] = Field(
        3000, gt=0, description="average input sequence length, tokens"
    )
    osl: Annotated[int, Exposed("--osl", argo=True, profile_sla="sla.osl", v1beta1="workload.osl")] = Field(
        500, gt=0, description="average output sequence length, tokens"
    )
    ttft_ms: Annotated[float, Exposed("--ttft", argo=True, profile_sla="sla.ttft", v1beta1="sla.ttft")] = Field(
        50.0, gt=0, description="time-to-first-token target, ms"
    )
    itl_ms: Annotated[float, Exposed("--itl", argo=True, profile_sla="sla.itl", v1beta1="sla.itl")] = Field(
        10.0, gt=0, description="inter-token latency target, ms"
    )
    request_rate: Annotated[float | None, Exposed("--request-rate", v1beta1="workload.requestRate")] = Field(
        None, gt=0, description="expected requests/s: recommend the fewest GPUs that serve it"
    )
    confidence: Annotated[float, Exposed("--confidence", argo=True)] = Field(
        0.5, gt=0, lt=1, description="meet the targets at this quantile of the estimates' prediction intervals"
    )


class Hardware(_Strict):
    gpu: Annotated[
        str,
        Exposed(
            "--gpu",
            argo=True,
            profile_sla=("hardware.gpuType", "hardware.gpu"),
            v1beta1="hardware.gpuSku",
            choices=GPU_NAMES,
            dgdr_value=_lower,
        ),
    ] = Field("h200_sxm", description="GPU type of the cluster")
    gpus_per_node: Annotated[
        int,
        Exposed(
            "--num-gpus-per-node",
            "--gpus-per-node",
            argo="gpus-per-node",
            profile_sla="hardware.numGpusPerNode",
            v1beta1="hardware.numGpusPerNode",
        ),
    ] = Field(8, gt=0, le=64, description="GPUs per node")
    min_gpus_per_engine: Annotated[
        int,
        Exposed(
            "--min-num-gpus-per-engine",
            "--min-gpus-per-engine",
            argo="min-gpus-per-engine",
            profile_sla="hardware.minNumGpusPerEngine",
        ),
    ] = Field(0, ge=0, description="smallest engine to try, GPUs (0 = from the model's size)")
    max_gpus_per_engine: Annotated[
        int,
        Exposed(
            "--max-num-gpus-per-engine",
            "--max-gpus-per-engine",
            argo="max-gpus-per-engine",
            profile_sla="hardware.maxNumGpusPerEngine",
        ),
    ] = Field(0, ge=0, description="largest engine to try, GPUs (0 = one node)")
    total_gpus: Annotated[
        int, Exposed("--total-gpus", argo=True, profile_sla="hardware.totalGpus", v1beta1="hardware.totalGpus")
    ] = Field(0, ge=0, description="GPUs the whole recommended deployment may use (0 = one node)")

    @property
    def gpu_budget(self) -> int:
        """GPUs every recommended deployment fits in: `total_gpus`, else one node."""
        return self.total_gpus or self.gpus_per_node

    @model_validator(mode="after")
    def _check(self) -> Hardware:
        if self.gpu not in GPU_NAMES:
            raise ValueError(f"unknown GPU {self.gpu!r}; choose one of: {', '.join(GPU_NAMES)}")
        if (
            self.min_gpus_per_engine
            and self.max_gpus_per_engine
            and self.min_gpus_per_engine > self.max_gpus_per_engine
        ):
            raise ValueError(
                f"min_gpus_per_engine ({self.min_gpus_per_engine}) > max_gpus_per_engine ({self.max_gpus_per_engine})"
            )
        return self


class EngineSettings(_Strict):
    quantization: Annotated[Quantization, Exposed("--quantization")] = Field(
        "auto", description="weights (auto = as the checkpoint declares)"
    )
    kv_cache_dtype: Annotated[KvDtype, Exposed("--kv-cache-dtype")] = Field(
        "auto", description="KV cache data type (auto = as the model declares)"
    )
    max_context_length: Annotated[int, Exposed("--max-context-length", profile_sla="engine.maxContextLength")] = Field(
        0, ge=0, description="cap on the engine's context (0 = the model's)"
    )


class Sweep(_Strict):
    prefill_granularity: Annotated[
        int,
        Exposed("--prefill-interpolation-granularity", profile_sla="sweep.prefillInterpolationGranularity"),
    ] = Field(16, ge=2, le=128, description="prefill ISL points")
    decode_granularity: Annotated[
        int,
        Exposed("--decode-interpolation-granularity", profile_sla="sweep.decodeInterpolationGranularity"),
    ] = Field(6, ge=2, le=64, description="decode context and concurrency points")
    estimator: Annotated[
        Estimator,
        Exposed(
            "--use-ai-configurator",
            switch="aic",
            profile_sla="sweep.useAiConfigurator",
            help="estimate with AI Configurator (offline, needs the 'aic' extra)",
        ),
    ] = Field("builtin", description="offline estimator: builtin (calibrated roofline) or aic (AI Configurator)")
    aic_system: Annotated[str | None, Exposed("--aic-system", profile_sla="sweep.aicSystem", default_text="--gpu")] = (
        Field(None, description="AI Configurator system name")
    )
    aic_hf_id: Annotated[str | None, Exposed("--aic-hf-id", profile_sla="sweep.aicHfId")] = Field(
        None, description="Hugging Face id AI Configurator should use for the model"
    )
    aic_backend_version: Annotated[
        str | None, Exposed("--aic-backend-version", profile_sla="sweep.aicBackendVersion")
    ] = Field(None, description="AI Configurator backend version")
    dry_run: Annotated[bool, Exposed("--dry-run", profile_sla="sweep.dryRun")] = Field(
        False, description="measure nothing: estimate every candidate offline, then fit and render as usual"
    )


class Deployment(_Strict):
    namespace: Annotated[
        str,
        Exposed("--namespace", argo=True, profile_sla="deployment.namespace", v1alpha1="deploymentOverrides.namespace"),
    ] = Field(
        "dynamo",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="namespace the DGD is rendered for and applied to",
    )
    name: Annotated[
        str | None,
        Exposed(
            "--name",
            v1alpha1="deploymentOverrides.name",
            default_text="<model>-<backend>, shortened to fit pod-name limits",
        ),
    ] = Field(None, description="DGD name")
    engine_image: Annotated[
        str | None,
        Exposed(
            "--engine-image",
            argo=True,
            profile_sla="deployment.dgdImage",
            v1alpha1="deploymentOverrides.workersImage",
            default_text="Dynamo's runtime image for the backend",
        ),
    ] = Field(None, description="engine image for online benchmarks and the rendered DGD")
    frontend_image: Annotated[str | None, Exposed("--frontend-image")] = Field(
        None, description="frontend/planner image"
    )
    dynamo_version: Annotated[
        str | None,
        Exposed(
            "--dynamo-version",
            argo=True,
            v1beta1="runtimeVersionOverride",
            default_text="the engine image's tag, else the newest",
        ),
    ] = Field(None, description=f"Dynamo release the DGD is rendered for ({dynamo_releases.supported()})")
    # spec.image is the profiler/planner image, not the workers' (Dynamo derives theirs from it)
    dynamo_image: Annotated[str | None, Exposed(v1beta1="image")] = Field(
        None,
        description="a v1beta1 DGDR's spec.image (profiler/planner image): workers run its <backend>-runtime "
        "sibling and the Planner its dynamo-planner sibling, unless engine_image/frontend_image say otherwise",
    )
    model_cache_pvc: Annotated[
        str | None,
        Exposed("--model-cache-pvc", profile_sla="deployment.modelCache.pvcName", v1beta1="modelCache.pvcName"),
    ] = Field(None, description="PVC holding the model weights")
    model_cache_pvc_path: Annotated[
        str | None,
        Exposed(
            "--model-cache-pvc-path", profile_sla="deployment.modelCache.pvcPath", v1beta1="modelCache.pvcModelPath"
        ),
    ] = Field(None, description="the model's folder in the PVC")
    model_cache_mount_path: Annotated[
        str,
        Exposed(
            "--model-cache-mount-path",
            profile_sla="deployment.modelCache.mountPath",
            v1beta1="modelCache.pvcMountPath",
        ),
    ] = Field("/opt/model-cache", description="where the workers mount the PVC")
    hf_token_secret: Annotated[str, Exposed("--hf-token-secret")] = Field(
        "hf-token-secret", description="Secret with HF_TOKEN for the workers"
    )
    auto_apply: Annotated[bool, Exposed("--auto-apply", argo=True, v1alpha1="autoApply", v1beta1="autoApply")] = Field(
        False, description="apply the rendered DGD to the cluster and wait until it is ready"
    )

    @field_validator("dynamo_version")
    @classmethod
    def _supported_release(cls, value: str | None) -> str | None:
        """Refused when the request is read, not at the end of a run."""
        if value is not None:
            try:
                dynamo_releases.get(value)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return value


class ProfileRequest(_Strict):
    model: Annotated[
        str,
        Exposed(
            "--model",
            argo=True,
            profile_sla="deployment.model",
            v1alpha1="model",
            v1beta1="model",
            argo_help="Hugging Face model id or a model folder in the image/PVC (required unless `request` names it)",
        ),
    ] = Field(..., min_length=1, description="Hugging Face model id or local model directory")
    backend: Annotated[
        str,
        Exposed(
            "--backend",
            argo=True,
            choices=backend_names,
            profile_sla="engine.backend",
            v1alpha1="backend",
            v1beta1="backend",
            dgdr_value=_not_auto,
        ),
    ] = Field("vllm", description="inference backend")
    method: Annotated[Method, Exposed("--method", argo=True)] = Field(
        "offline",
        description="offline = estimate without engines, simulate = simulated engines + AIPerf on CPUs, "
        "online = real engines on GPUs",
    )
    serving: Annotated[ServingMode, Exposed("--serving", argo=True)] = Field(
        "auto",
        description="auto = compare aggregated and disaggregated serving, agg or disagg = profile and deploy "
        "only that mode",
    )
    sla: SLA = Field(default_factory=SLA)
    hardware: Hardware = Field(default_factory=Hardware)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    sweep: Sweep = Field(default_factory=Sweep)
    deployment: Deployment = Field(default_factory=Deployment)

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        """Asked of the registry when the request is read, so a backend registered later is accepted."""
        if value not in backend_names():
            raise ValueError(plugin_error(value) or f"must be one of {', '.join(backend_names())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _dry_run_estimates(cls, data: Any) -> Any:
        """A dry run measures nothing: every candidate is estimated offline, on any runner."""
        if isinstance(data, dict):
            sweep = data.get("sweep")
            dry = sweep.get("dry_run") if isinstance(sweep, dict) else getattr(sweep, "dry_run", False)
            if dry:
                data = {**data, "method": "offline"}
        return data

    def measurement_key(self) -> str:
        """Hash of the fields that change what a candidate measures (not the SLA targets)."""
        relevant = {
            "model": self.model,
            "backend": self.backend,
            "method": self.method,
            "isl": self.sla.isl,
            "osl": self.sla.osl,
            # the GPU budget decides which candidates are planned, not what one of them measures
            "hardware": self.hardware.model_dump(exclude={"total_gpus"}),
            "engine": self.engine.model_dump(),
            "sweep": self.sweep.model_dump(exclude={"dry_run"}),
            "engine_image": self.deployment.engine_image,
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def _format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "request"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        msg = f"must be one of {err['ctx']['expected']}"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known setting"
    elif err["type"] == "finite_number":
        msg = "must be a finite number"
    return f"invalid request: {loc}{shown}: {msg}"


def build_request(data: dict[str, Any]) -> ProfileRequest:
    """Validate a nested request dict; a bad value raises UserError naming the field."""
    try:
        return ProfileRequest.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc)) from None


# The top-level keys of a v1beta1 DGDR spec (Dynamo 1.x `DynamoGraphDeploymentRequestSpec`), which
# `python -m dynamo.profiler --config` also takes bare.
V1BETA1_SPEC_KEYS = frozenset(
    {"model", "backend", "image", "runtimeVersionOverride", "modelCache", "hardware", "workload", "sla"}
    | {"overrides", "features", "searchStrategy", "autoApply"}
)


def _from_dgdr(doc: dict[str, Any]) -> dict[str, Any]:
    """A DGDR as our nested dict; which of its keys set which field is declared with the field."""
    spec = doc.get("spec") or {}
    if str(doc.get("apiVersion", "")).rsplit("/", 1)[-1] == "v1beta1":
        return from_v1beta1_spec(spec)
    profiling = spec.get("profilingConfig") or {}
    if isinstance(profiling.get("config"), str):  # Dynamo takes the config as a YAML string too
        profiling = {**profiling, "config": yaml.safe_load(profiling["config"]) or {}}
    return from_v1alpha1_spec({**spec, "profilingConfig": profiling})


def parse_request_document(doc: Any, origin: str = "request") -> dict[str, Any]:
    """Our request dict, a DGDR manifest, or a bare profile_sla config, as our nested dict."""
    if not isinstance(doc, dict):
        raise UserError(f"{origin}: expected a mapping at the top level, got {type(doc).__name__}")
    kind, version = doc.get("kind"), doc.get("apiVersion")
    if kind == DGDR_KIND:
        if version not in DGDR_API_VERSIONS:
            raise UserError(
                f"{origin}: a {DGDR_KIND} of apiVersion {version!r} is not supported; "
                f"slaprof reads apiVersion {', '.join(DGDR_API_VERSIONS)}"
            )
        return _from_dgdr(doc)
    if kind is not None:
        # a DGD is the output of a profile, not a request: the likeliest mix-up gets its own hint
        hint = "; a DynamoGraphDeployment is a deployment to start from: pass it to `slaprof render --base`"
        raise UserError(
            f"{origin}: found kind {kind} (apiVersion {version!r}), which is not a request; accepted: "
            f"{ACCEPTED_DOCUMENTS}{hint if kind == 'DynamoGraphDeployment' else ''}"
        )
    if _is_bare_v1beta1_spec(doc):
        return _from_dgdr({"apiVersion": "nvidia.com/v1beta1", "spec": doc})
    if "profilingConfig" in doc or ({"sla", "sweep", "hardware"} & doc.keys() and "ttft" in (doc.get("sla") or {})):
        return from_profile_sla(doc.get("profilingConfig", {}).get("config", doc))
    return doc


def _is_bare_v1beta1_spec(doc: dict[str, Any]) -> bool:
    """A DGDR v1beta1 spec on its own: only its keys, and one no slaprof request has (or its SLA spelling)."""
    if not doc.keys() <= V1BETA1_SPEC_KEYS:
        return False
    sla: dict[str, Any] = doc["sla"] if isinstance(doc.get("sla"), dict) else {}
    hw: dict[str, Any] = doc["hardware"] if isinstance(doc.get("hardware"), dict) else {}
    return bool(
        doc.keys() & {"image", "workload", "searchStrategy", "autoApply", "modelCache", "features", "overrides"}
        or sla.keys() & {"ttft", "itl", "e2eLatency", "optimizationType"}
        or hw.keys() & {"gpuSku", "numGpusPerNode", "totalGpus", "vramMb"}
    )


def load_request_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"cannot read request file {p}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise UserError(f"request file {p} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return parse_request_document(doc, origin=str(p))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: values in `override` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
