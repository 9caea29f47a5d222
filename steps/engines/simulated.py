"""Simulated backend: `python -m slaprof.steps.measure.simengine`, a CPU-only OpenAI server timed by `slaprof.steps.perf`.

It starts, answers readiness probes, reports KV capacity (on /metrics and in its log) and
stops exactly like a GPU engine, so the bench step cannot tell it apart. Its DGD parts are
those of the backend it emulates (a simulated run still renders a deployable manifest).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines.base import (
    EngineBackend,
    Role,
    ServerLaunch,
    ServerOptions,
    last_per_rank,
    prometheus_samples,
    to_int,
)
from slaprof.steps.engines.registry import get_backend, register_backend
from slaprof.steps.specs.models import EnginePrecision

KV_METRIC = "simengine:max_total_num_tokens"
_KV = re.compile(r"^[^\n]*?KV cache capacity:\s*(?P<n>[0-9][0-9,]*)\s*tokens", re.M)
_VERSION = re.compile(r"simengine version\s+(\S+)")


@dataclass
class SimulationSettings:
    """What the simulated engine emulates and how fast its clock runs."""

    emulate: str = "vllm"  # backend whose timing and DGD arguments it borrows
    gpu: str = "h100_sxm"
    tokenizer: str | None = None  # local tokenizer directory for token counts
    estimator: str = "builtin"
    time_scale: float = 1.0  # >1 slows every modelled step down (wall = model x time_scale)
    startup_s: float = 0.0  # simulated weight loading / CUDA graph capture
    max_kv_tokens: int | None = None  # override the modelled KV capacity
    model_path: str | None = None  # model directory (config.json) when `model` is a served name


# What the simulated engine takes from the backend it emulates: its DGD parts and the facts the
# performance model times it with.
_EMULATED_FACTS = (
    "dynamo_module",
    "runtime_image",
    "release_role_args",
    "legacy_role_flags",
    "memory_utilization",
    "profile_batched_tokens",
    "scheduler_defaults",
    "aic_name",
)


@register_backend
class SimulatedBackend(EngineBackend):
    name = "simulated"
    deployable = False  # it stands in for `emulate`, whose workers the DGD runs
    profile_start_path = "/start_profile"
    profile_stop_path = "/stop_profile"

    def __init__(self, settings: SimulationSettings | None = None, **overrides: Any) -> None:
        self.settings = settings or SimulationSettings(**overrides)
        self.emulated = get_backend(self.settings.emulate)
        for fact in _EMULATED_FACTS:
            setattr(self, fact, getattr(self.emulated, fact))
        self.calibrated_as = self.emulated.calibration_key

    @property
    def expected_startup_s(self) -> float:  # type: ignore[override]
        return self.settings.startup_s + 2.0  # python start-up and imports

    def parallel_args(self, cand: Candidate) -> list[str]:
        return ["--mapping", cand.id]

    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        return self.emulated.dgd_worker_args(model, cand, role, max_context)

    def dgd_template(self, engine_image: str, frontend_image: str) -> dict[str, Any]:
        return self.emulated.dgd_template(engine_image, frontend_image)

    def engine_config(
        self, cand: Candidate, role: Role, max_context: int = 0, precision: EnginePrecision | None = None
    ) -> dict[str, Any]:
        return self.emulated.engine_config(cand, role, max_context, precision)

    def engine_config_path(self, role: Role) -> str | None:
        return self.emulated.engine_config_path(role)

    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        s = self.settings
        argv = [
            sys.executable,
            "-m",
            "slaprof.steps.measure.simengine",
            "--model",
            s.model_path or model,
            "--served-model-name",
            model,
            "--host",
            options.host,
            "--port",
            str(port),
            *self.parallel_args(cand),
            "--gpu",
            s.gpu,
            "--emulate",
            s.emulate,
            "--estimator",
            s.estimator,
            "--time-scale",
            f"{s.time_scale:g}",
            "--startup-s",
            f"{s.startup_s:g}",
        ]
        if s.tokenizer:
            argv += ["--tokenizer", s.tokenizer]
        if not options.prefix_caching:
            argv.append("--no-prefix-caching")
        if options.max_batched_tokens:
            argv += ["--max-batched-tokens", str(options.max_batched_tokens)]
        precision = options.precision or EnginePrecision()
        if precision.weights:  # it times the model as the engine it stands in for would run it
            argv += ["--quantization", precision.weights]
        if precision.kv_cache:
            argv += ["--kv-cache-dtype", precision.kv_cache]
        if options.max_context:
            argv += ["--max-context", str(options.max_context)]
        if s.max_kv_tokens:
            argv += ["--max-kv-tokens", str(s.max_kv_tokens)]
        if options.profile_dir:
            argv += ["--profile-dir", options.profile_dir]
        return ServerLaunch(argv=argv)

    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        # simengine prints the whole engine's capacity once
        found: list[tuple[str | None, int]] = [(None, to_int(m.group("n"))) for m in _KV.finditer(log_text)]
        return last_per_rank(found, 1)

    def kv_tokens_from_metrics(self, metrics_text: str) -> int | None:
        samples = prometheus_samples(metrics_text, KV_METRIC)
        return int(samples[-1][1]) if samples else None

    def version_from_log(self, log_text: str) -> str | None:
        m = _VERSION.search(log_text)
        return m.group(1) if m else None
