"""ProfileRequest (DAG step `plan` input): what the user wants profiled and under which SLA.

Loads from our own YAML/JSON, from a Dynamo DynamoGraphDeploymentRequest (v1alpha1
`profilingConfig.config`, camelCase or snake_case, or v1beta1), and from CLI flags named as
in Dynamo's `profile_sla`. Flags override the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from steps import dynamo_releases
from steps.errors import UserError
from steps.gpus import GPU_NAMES

Backend = Literal["vllm", "sglang", "trtllm"]
Method = Literal["offline", "simulate", "online"]
Quantization = Literal["auto", "bf16", "fp8", "fp4"]
KvDtype = Literal["auto", "bf16", "fp8"]
Estimator = Literal["builtin", "aic"]
ServingMode = Literal["auto", "agg", "disagg"]
BACKENDS: tuple[str, ...] = ("vllm", "sglang", "trtllm")
DGDR_KIND = "DynamoGraphDeploymentRequest"
DGDR_API_VERSIONS: tuple[str, ...] = ("nvidia.com/v1alpha1", "nvidia.com/v1beta1")
ACCEPTED_DOCUMENTS = (
    f"a slaprof request (no `kind`), a Dynamo profile_sla config, or a {DGDR_KIND} ({', '.join(DGDR_API_VERSIONS)})"
)
SERVING_MODES: tuple[str, ...] = ("auto", "agg", "disagg")


class _Strict(BaseModel):
    # inf and nan are refused: an infinite target would pass every check, then break JSON and the planner
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SLA(_Strict):
    isl: int = Field(3000, gt=0, description="average input length, tokens")
    osl: int = Field(500, gt=0, description="average output length, tokens")
    ttft_ms: float = Field(50.0, gt=0, description="time-to-first-token target, ms")
    itl_ms: float = Field(10.0, gt=0, description="inter-token latency target, ms")
    request_rate: float | None = Field(None, gt=0, description="expected requests/s, for replica counts")
    confidence: float = Field(
        0.5, gt=0, lt=1, description="meet the targets at this quantile of the estimates' prediction intervals"
    )


class Hardware(_Strict):
    gpu: str = Field("h200_sxm", description="GPU type: " + ", ".join(GPU_NAMES))
    gpus_per_node: int = Field(8, gt=0, le=64)
    min_gpus_per_engine: int = Field(0, ge=0, description="0 = derived from the model's memory needs")
    max_gpus_per_engine: int = Field(0, ge=0, description="0 = one node (more for large MoE models)")
    total_gpus: int = Field(0, ge=0, description="GPUs the whole deployment may use; 0 = one node")

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
    quantization: Quantization = "auto"
    kv_cache_dtype: KvDtype = "auto"
    max_context_length: int = Field(0, ge=0, description="0 = the model's own maximum")


class Sweep(_Strict):
    prefill_granularity: int = Field(16, ge=2, le=128)
    decode_granularity: int = Field(6, ge=2, le=64)
    estimator: Estimator = "builtin"
    aic_system: str | None = None
    aic_hf_id: str | None = None
    aic_backend_version: str | None = None
    dry_run: bool = False


class Deployment(_Strict):
    namespace: str = Field("dynamo", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    name: str | None = Field(None, description="DGD name; default derived from model and backend")
    engine_image: str | None = Field(None, description="worker image; default per backend")
    frontend_image: str | None = None
    dynamo_version: str | None = Field(
        None, description="Dynamo release to render for (e.g. 0.9, 1.6); default from the images' tag, else newest"
    )
    dynamo_image: str | None = Field(
        None,
        description="a v1beta1 DGDR's spec.image (profiler/planner image): workers run its <backend>-runtime "
        "sibling and the Planner its dynamo-planner sibling, unless engine_image/frontend_image say otherwise",
    )
    model_cache_pvc: str | None = None
    model_cache_pvc_path: str | None = None
    model_cache_mount_path: str = "/opt/model-cache"
    hf_token_secret: str = "hf-token-secret"
    auto_apply: bool = False

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
    model: str = Field(..., min_length=1, description="Hugging Face id or local model directory")
    backend: Backend = "vllm"
    method: Method = "offline"
    serving: ServingMode = Field(
        "auto", description="auto: compare aggregated and disaggregated serving; agg or disagg: only that mode"
    )
    sla: SLA = Field(default_factory=SLA)
    hardware: Hardware = Field(default_factory=Hardware)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    sweep: Sweep = Field(default_factory=Sweep)
    deployment: Deployment = Field(default_factory=Deployment)

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


def _get(d: dict[str, Any], *names: str) -> Any:
    """First present key among camelCase and snake_case spellings."""
    for name in names:
        if name in d and d[name] is not None:
            return d[name]
    return None


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = path.split(".")
    for p in parents:
        target = target.setdefault(p, {})
    target[leaf] = value


def _from_profiling_config(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """Dynamo profile_sla's config keys (camelCase, snake_case fallbacks) into our nested shape."""
    sla = cfg.get("sla") or {}
    for ours, theirs in (("isl", ("isl",)), ("osl", ("osl",)), ("ttft_ms", ("ttft",)), ("itl_ms", ("itl",))):
        _set(out, f"sla.{ours}", _get(sla, *theirs))
    hw = cfg.get("hardware") or {}
    _set(out, "hardware.min_gpus_per_engine", _get(hw, "minNumGpusPerEngine", "min_num_gpus_per_engine"))
    _set(out, "hardware.max_gpus_per_engine", _get(hw, "maxNumGpusPerEngine", "max_num_gpus_per_engine"))
    _set(out, "hardware.gpus_per_node", _get(hw, "numGpusPerNode", "num_gpus_per_node"))
    _set(out, "hardware.total_gpus", _get(hw, "totalGpus", "total_gpus"))
    _set(out, "hardware.gpu", _get(hw, "gpuType", "gpu_type", "gpu"))
    sweep = cfg.get("sweep") or {}
    if _get(sweep, "useAiConfigurator", "use_ai_configurator"):
        _set(out, "sweep.estimator", "aic")
        _set(out, "method", "offline")
    aic_system = _get(sweep, "aicSystem", "aic_system")
    _set(out, "sweep.aic_system", aic_system)
    if aic_system and "gpu" not in out.get("hardware", {}):
        _set(out, "hardware.gpu", aic_system)
    _set(out, "sweep.aic_hf_id", _get(sweep, "aicHfId", "aic_hf_id"))
    _set(out, "sweep.aic_backend_version", _get(sweep, "aicBackendVersion", "aic_backend_version"))
    _set(
        out,
        "sweep.prefill_granularity",
        _get(sweep, "prefillInterpolationGranularity", "prefill_interpolation_granularity"),
    )
    _set(
        out,
        "sweep.decode_granularity",
        _get(sweep, "decodeInterpolationGranularity", "decode_interpolation_granularity"),
    )
    _set(out, "sweep.dry_run", _get(sweep, "dryRun", "dry_run"))
    dep = cfg.get("deployment") or {}
    _set(out, "model", _get(dep, "model"))
    _set(out, "deployment.namespace", _get(dep, "namespace"))
    _set(out, "deployment.engine_image", _get(dep, "dgdImage", "dgd_image"))
    cache = _get(dep, "modelCache", "model_cache") or {}
    _set(out, "deployment.model_cache_pvc", _get(cache, "pvcName", "pvc_name"))
    _set(out, "deployment.model_cache_pvc_path", _get(cache, "pvcPath", "pvc_path"))
    _set(out, "deployment.model_cache_mount_path", _get(cache, "mountPath", "mount_path"))
    eng = cfg.get("engine") or {}
    _set(out, "backend", _get(eng, "backend"))
    _set(out, "engine.max_context_length", _get(eng, "maxContextLength", "max_context_length"))


# The top-level keys of a v1beta1 DGDR spec (Dynamo 1.x `DynamoGraphDeploymentRequestSpec`), which
# `python -m dynamo.profiler --config` also takes bare.
V1BETA1_SPEC_KEYS = frozenset(
    {"model", "backend", "image", "runtimeVersionOverride", "modelCache", "hardware", "workload", "sla"}
    | {"overrides", "features", "searchStrategy", "autoApply"}
)


def _from_v1beta1_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    workload, sla, hw = spec.get("workload") or {}, spec.get("sla") or {}, spec.get("hardware") or {}
    _set(out, "sla.isl", workload.get("isl"))
    _set(out, "sla.osl", workload.get("osl"))
    _set(out, "sla.request_rate", workload.get("requestRate"))
    _set(out, "sla.ttft_ms", sla.get("ttft"))
    _set(out, "sla.itl_ms", sla.get("itl"))
    gpu = hw.get("gpuSku")
    _set(out, "hardware.gpu", gpu.lower() if isinstance(gpu, str) else gpu)
    _set(out, "hardware.gpus_per_node", hw.get("numGpusPerNode"))
    _set(out, "hardware.total_gpus", hw.get("totalGpus"))
    # spec.image is the profiler/planner image, not the workers' (Dynamo derives theirs from it)
    _set(out, "deployment.dynamo_image", spec.get("image"))
    cache = spec.get("modelCache") or {}
    _set(out, "deployment.model_cache_pvc", cache.get("pvcName"))
    _set(out, "deployment.model_cache_pvc_path", cache.get("pvcModelPath"))
    _set(out, "deployment.model_cache_mount_path", cache.get("pvcMountPath"))
    return out


def _from_dgdr(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    out: dict[str, Any] = {}
    version = str(doc.get("apiVersion", "")).rsplit("/", 1)[-1]
    if version == "v1beta1":
        out = _from_v1beta1_spec(spec)
    else:
        cfg = (spec.get("profilingConfig") or {}).get("config") or {}
        if isinstance(cfg, str):
            cfg = yaml.safe_load(cfg) or {}
        _from_profiling_config(cfg, out)
        overrides = spec.get("deploymentOverrides") or {}
        _set(out, "deployment.namespace", overrides.get("namespace"))
        _set(out, "deployment.name", overrides.get("name"))
        _set(out, "deployment.engine_image", overrides.get("workersImage"))
    _set(out, "model", spec.get("model"))
    backend = spec.get("backend")
    if backend and backend != "auto":
        _set(out, "backend", backend)
    _set(out, "deployment.auto_apply", spec.get("autoApply"))
    return out


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
        out: dict[str, Any] = {}
        _from_profiling_config(doc.get("profilingConfig", {}).get("config", doc), out)
        return out
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
