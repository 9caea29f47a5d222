"""The one interface every backend implements (vllm, sglang, trtllm, simulated, or one you add).

Backend differences live only in `steps/engines/<backend>.py`, one registered EngineBackend
subclass (`steps/engines/registry.py`): how to start a server for a mapping, how to tell it is
ready, how much KV cache it has, the DynamoGraphDeployment's worker shape and arguments, its
memory and batching defaults, the key of its calibrated constants and its AI Configurator name.
Nothing else in slaprof says `if backend == ...`: it asks the backend.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import Any, Literal

import yaml

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.specs.models import EnginePrecision

# a disaggregated graph's prefill or decode worker, or an aggregated worker serving both phases
Role = Literal["prefill", "decode", "agg"]
ROLES: tuple[str, ...] = ("prefill", "decode", "agg")

DYNAMO_IMAGE_REPO = "nvcr.io/nvidia/ai-dynamo"
# Tokens per engine step of the bench's disaggregated engines and the DGD's prefill workers alike: a
# whole prompt of the prefill grid in one step (no chunked prefill), as Dynamo's profiler configures
# its prefill engines, up to this cap. Aggregated engines keep their own budget.
MAX_BATCHED_TOKENS = 32768


def batched_tokens(max_context: int) -> int:
    """Tokens per engine step for an engine whose context is `max_context`."""
    return min(max_context, MAX_BATCHED_TOKENS)


def dynamo_image(runtime: str) -> str:
    """`nvcr.io/nvidia/ai-dynamo/<runtime>`, e.g. runtime=vllm-runtime: a repository without a tag, which
    the request's Dynamo release supplies (`DynamoRelease.worker_image`)."""
    return f"{DYNAMO_IMAGE_REPO}/{runtime}"


@dataclass
class ServerOptions:
    """How the bench step wants a standalone server started (same for every backend)."""

    host: str = "127.0.0.1"
    prefix_caching: bool = True  # decode surface needs warm prefixes; prefill uses unseen prompts
    max_batched_tokens: int | None = None  # tokens per forward pass; large enough to avoid chunked prefill
    precision: EnginePrecision | None = None  # the plan's quantization / KV dtype overrides
    max_context: int | None = None  # engine's max model length
    memory_utilization: float | None = None
    profile_dir: str | None = None  # torch-profiler output directory (when --torch-profile)
    workdir: str = "."  # where files the command refers to are written


@dataclass
class ServerLaunch:
    """A server's command line, extra environment, and files to write into the workdir first."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # name relative to workdir -> text


_NUMBER = r"([0-9][0-9,]*)"


def to_int(text: str) -> int:
    return int(text.replace(",", ""))


def last_per_rank(matches: list[tuple[str | None, int]], attn_dp: int) -> int | None:
    """Engine-wide total from (rank tag, value) log matches, keeping only each rank's last value.

    Engines may print an intermediate estimate before the final allocation, so only the last
    line per rank counts. Ranks that did not print (e.g. only rank 0 logs) are assumed equal
    to the ones that did.
    """
    if not matches:
        return None
    last: dict[str | None, int] = {}
    for rank, value in matches:
        last[rank] = value
    tagged = {r: v for r, v in last.items() if r is not None}
    if tagged:
        values = list(tagged.values())
        if len(values) >= attn_dp:
            return sum(values)
        return round(sum(values) / len(values) * attn_dp)
    return last[None] * attn_dp


def prometheus_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` in Prometheus exposition text."""
    out: list[tuple[dict[str, str], float]] = []
    pattern = re.compile(r"^" + re.escape(name) + r"(\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)", re.M)
    for m in pattern.finditer(text):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group("labels") or ""))
        try:
            out.append((labels, float(m.group("value"))))
        except ValueError:
            continue
    return out


class EngineBackend(ABC):
    name: str  # its registry key: vllm | sglang | trtllm | simulated | ...
    dynamo_module: str  # python -m <module> in a Dynamo worker, e.g. dynamo.vllm
    runtime_image: str  # its Dynamo runtime image repository, untagged: the Dynamo release gives the tag
    # False: it stands in for a deployable backend (the simulated engine) and a request cannot name it
    deployable: bool = True

    # ---- the built-in DynamoGraphDeployment (used without --base) -------------
    dgd_template_file: str = "disagg.yaml"  # in steps/templates/, filled in by `dgd_template`
    dgd_workdir: str = "/workspace"  # working directory of the Frontend and the workers
    # Role flags per Dynamo release line where that release's workers take other ones than
    # `dgd_worker_args` writes ({line: {role: args}}); they replace `legacy_role_flags`.
    release_role_args: Mapping[str, Mapping[str, tuple[str, ...]]] = {}
    legacy_role_flags: tuple[str, ...] = ()

    # Flags that make the engine apply an EnginePrecision override: {("weights" | "kv_cache", dtype): flags}.
    # An override without an entry is refused when the request is planned, not dropped from the DGD.
    precision_flags: Mapping[tuple[str, str], tuple[str, ...]] = {}

    # ---- what the performance model and the planner assume ---------------------
    memory_utilization: float = 0.90  # fraction of GPU memory the engine claims by default
    profile_batched_tokens: int = 8192  # tokens of the forward pass the engine profiles its memory with
    calibrated_as: str = ""  # key of its constants in steps/perf/calibration.json; "" = its name
    # Uncalibrated constants (steps/perf/constants.py fields) its scheduler's defaults imply
    scheduler_defaults: Mapping[str, Any] = {}
    aic_name: str | None = None  # AI Configurator's name for it; None: AI Configurator does not cover it

    expected_startup_s: float = 120.0  # typical seconds from launch to ready (weights, graphs)
    health_path: str = "/health"
    models_path: str = "/v1/models"
    metrics_path: str | None = "/metrics"
    version_path: str | None = "/version"  # JSON {"version": ...}
    # torch-profiler control endpoints (POST); None where the backend has none
    profile_start_path: str | None = None
    profile_stop_path: str | None = None

    @property
    def calibration_key(self) -> str:
        return self.calibrated_as or self.name

    # ---- parallel mapping ---------------------------------------------------
    @abstractmethod
    def parallel_args(self, cand: Candidate) -> list[str]:
        """Engine CLI flags for the mapping (TP; TEP/DEP with EP and attention-DP flags)."""

    # ---- DynamoGraphDeployment worker -------------------------------------
    @abstractmethod
    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        """Arguments of a Dynamo worker (`python3 -m <dynamo_module> ...`) in `role`; `max_context`:
        the context (tokens) the plan sized the engine for, 0 = leave the engine's default."""

    def precision_args(self, precision: EnginePrecision | None) -> list[str]:
        """The engine's flags for `precision`; a UserError for an override it cannot be told."""
        args: list[str] = []
        p = precision or EnginePrecision()
        for what, value in (("weights", p.weights), ("kv_cache", p.kv_cache)):
            if value is None:
                continue
            flags = self.precision_flags.get((what, value))
            if flags is None:
                label = "weights" if what == "weights" else "KV cache"
                raise UserError(
                    f"{self.name} cannot be told to run {value} {label} on this checkpoint (it declares otherwise): "
                    "serve a checkpoint quantized that way, or leave --quantization / --kv-cache-dtype at auto "
                    "(`slaprof estimate` answers what-if questions without a deployment)"
                )
            args += flags
        return args

    def context_args(self, max_context: int) -> list[str]:
        """Engine CLI flags for a context of `max_context` tokens, 0 = the model's ([] for an engine
        configured otherwise)."""
        return []

    def step_tokens_args(self, tokens: int) -> list[str]:
        """Engine CLI flags for at most `tokens` prompt tokens per step ([] for an engine without them)."""
        return []

    def prefill_step_args(self, max_context: int) -> list[str]:
        """A DGD prefill worker's step budget: the one the bench ran its engines with (`batched_tokens`),
        so deployed prefill workers take whole prompts per step as measured (TRT-LLM's workers get it
        in their engine config)."""
        return self.step_tokens_args(batched_tokens(max_context)) if max_context else []

    def dgd_template(self, engine_image: str, frontend_image: str) -> dict[str, Any]:
        """The built-in disaggregated DGD (Frontend, prefill and decode workers, Planner) that render fills in."""
        text = resources.files("slaprof.steps").joinpath("templates", self.dgd_template_file).read_text()
        values = {
            "name": self.name,
            "engine_image": engine_image,
            "frontend_image": frontend_image,
            "workdir": self.dgd_workdir,
            "worker_module": self.dynamo_module,
        }
        return yaml.safe_load(Template(text).safe_substitute(values))

    def release_worker_args(self, line: str, role: str, args: list[str]) -> list[str]:
        """`args` (from `dgd_worker_args`) with the role flags of Dynamo release `line`."""
        by_role = self.release_role_args.get(line)
        if by_role is None:
            return args
        kept = [a for a in args if a not in self.legacy_role_flags]
        return [*kept, *by_role.get(role, ())]

    def release_role_flags(self) -> set[str]:
        """Role flags some release sets or retires: a base DGD's stale ones are dropped."""
        flags = set(self.legacy_role_flags)
        for roles in self.release_role_args.values():
            for args in roles.values():
                flags |= {a for a in args if a.startswith("--")}
        return flags

    def engine_config(
        self, cand: Candidate, role: Role, max_context: int = 0, precision: EnginePrecision | None = None
    ) -> dict[str, Any]:
        """Engine-args file content for backends that take settings in a YAML (TRT-LLM); else {}."""
        return {}

    def engine_config_path(self, role: Role) -> str | None:
        """Where `dgd_worker_args` expects the `engine_config` file inside the worker; None if unused."""
        return None

    # ---- standalone server (online / simulate bench) -----------------------
    @abstractmethod
    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        """Command, environment and files of an OpenAI-compatible server for this mapping on `port`."""

    @abstractmethod
    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        """Total KV-cache tokens from the start-up log (the final value, not an intermediate one)."""

    def kv_tokens_from_metrics(self, metrics_text: str) -> int | None:
        """Total KV-cache tokens from Prometheus /metrics text, when the backend exposes it."""
        return None

    def version_from_log(self, log_text: str) -> str | None:
        """Engine version printed at start-up, when the version endpoint is missing."""
        return None
