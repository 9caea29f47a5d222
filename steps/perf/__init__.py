"""Offline performance estimates for one (model, GPU, backend, mapping).

`get_estimator` returns a PerfEstimator: the built-in calibrated roofline model
(`roofline.py`, the default) or the AI Configurator adapter (`aic.py`, optional extra `aic`).
Used by the offline `bench` (`surfaces.py`), the simulated engine and `slaprof estimate`.
Importing this package stays light: numpy and pydantic only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.perf.roofline import AggEstimate, BuiltinEstimator
from slaprof.steps.specs.gpus import GpuSpec
from slaprof.steps.specs.models import ModelInfo

ESTIMATORS: tuple[str, ...] = ("builtin", "aic")

__all__ = ["AggEstimate", "BuiltinEstimator", "ESTIMATORS", "PerfEstimator", "get_estimator"]


@runtime_checkable
class PerfEstimator(Protocol):
    name: str

    def prefill_ttft_ms(self, isl: int, batch: int = 1) -> float:
        """Time to prefill `batch` prompts of `isl` tokens in one engine step, framework overhead included."""

    def decode_itl_ms(self, batch: int, context: int) -> float:
        """One decode step for `batch` sequences at mean context `context`."""

    def max_kv_tokens(self) -> int:
        """KV capacity of the whole engine, tokens."""

    def agg(self, isl: int, osl: int, concurrency: int) -> AggEstimate:
        """Aggregated serving at `concurrency`: TTFT (with interference and queueing), ITL, throughput/GPU."""


def get_estimator(
    model: ModelInfo,
    gpu: GpuSpec,
    backend: str,
    cand: Candidate,
    estimator: str = "builtin",
    step_tokens: int | None = None,
    **opts: Any,
) -> PerfEstimator:
    """The estimator named `estimator` for this model on `cand.size` GPUs of `gpu` with `backend`.

    step_tokens: the engine's tokens per step when the deployment sets it (`Plan.step_tokens`), None
    for the backend's default; the built-in model chunks prefills by it (AI Configurator's static
    estimates prefill a prompt in one step anyway).
    opts for `aic`: system (AI Configurator system name, default the GPU's), hf_id (the model id
    AI Configurator knows it by), backend_version.
    """
    if estimator == "builtin":
        return BuiltinEstimator(model, gpu, backend, cand, step_tokens=step_tokens)
    if estimator == "aic":
        from slaprof.steps.perf.aic import AicEstimator

        return AicEstimator(model, gpu, backend, cand, **opts)
    raise UserError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
