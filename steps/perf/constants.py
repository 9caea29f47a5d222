"""Calibrated constants of the built-in performance model (read by `slaprof.steps.perf.roofline`).

The constants are few and physical (efficiencies, per-layer and per-step latencies, fixed
overheads) so they carry over to GPUs they were not fitted on. They live in
`steps/perf/calibration.json`, written by `bench/calibrate.py` with its data source, date and
fit error, keyed by each backend's `calibration_key` (steps/engines/); a backend the file does not
list gets the defaults below with its scheduler's own (`EngineBackend.scheduler_defaults`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slaprof.steps.engines import get_backend

CALIBRATION_FILE = "calibration.json"


class BackendConstants(BaseModel):
    """How close one backend gets to the hardware, and what it costs on top."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    gemm_eff: float = Field(0.60, description="fraction of dense peak FLOP/s reached by large linear layers")
    moe_eff: float = Field(0.45, description="fraction of peak reached by grouped expert GEMMs")
    attn_eff: float = Field(0.45, description="fraction of bf16 peak reached by prefill attention kernels")
    mem_eff: float = Field(0.75, description="fraction of HBM bandwidth reached streaming weights and KV")
    link_eff: float = Field(0.70, description="fraction of NVLink bandwidth reached by collectives")
    act_passes: float = Field(
        0.0,
        description="activation read/write passes per layer of the memory-bound "
        "elementwise kernels (norms, activations, rotary, quantisation)",
    )
    comm_latency_us: float = Field(12.0, description="latency of one all-reduce or all-to-all, microseconds")
    layer_overhead_us: float = Field(15.0, description="per-layer per-step launch and sync cost, microseconds")
    prefill_layer_us: float = Field(0.0, description="per-layer cost of a prefill step (eager launches), microseconds")
    prefill_moe_layer_us: float = Field(
        0.0, description="extra per-MoE-layer cost of a prefill step (routing, token permutation), microseconds"
    )
    step_overhead_ms: float = Field(3.0, description="fixed cost of one engine step (scheduler, sampling), ms")
    request_overhead_ms: float = Field(
        10.0, description="fixed TTFT cost of a lone request (launch: tokenise, schedule, sample, stream), ms"
    )
    admission_ms: float = Field(
        0.0, description="queueing and admission of a prompt per doubling of the prompts in flight on its rank, ms"
    )
    request_token_us: float = Field(
        0.0,
        description="host-side cost per prompt token before the prompt reaches "
        "the GPU (tokenisation, input processing, prefix-cache block hashing), "
        "microseconds; it does not shrink on a faster GPU",
    )
    prefill_chunk_tokens: int = Field(8192, description="tokens per prefill chunk (max batched tokens)")
    prefill_chunk_tokens_160g: int = Field(
        8192,
        description="tokens per prefill chunk on GPUs with 160 GiB or "
        "more (SGLang's default chunked-prefill size grows with GPU memory)",
    )
    chunk_shared_by_dp: bool = Field(
        False,
        description="the chunk budget is the engine's and is split over its "
        "attention-DP ranks (SGLang divides its chunked-prefill size by the DP size)",
    )
    agg_mix_factor: float = Field(
        1.0, description="share of other requests' prefill work that lands in each decode step"
    )
    burst_fraction: float = Field(
        0.15,
        description="share of prompts that arrive in a wave with the others in "
        "flight and are prefilled with them (closed-loop load keeps arrivals in waves)",
    )
    kv_transfer_gbps: float = Field(25.0, description="disaggregated KV transfer bandwidth, GB/s (not fitted)")


def engine_defaults(backend: str) -> BackendConstants:
    """Uncalibrated constants with the backend's own scheduler defaults."""
    return BackendConstants(**get_backend(backend).scheduler_defaults)


class Calibration(BaseModel):
    """The file: constants per backend plus where they came from."""

    version: int = 1
    source: str = "uncalibrated defaults"
    fitted_at: str = ""
    systems: list[str] = Field(default_factory=list)
    method: str = ""
    fit_error: dict[str, Any] = Field(default_factory=dict)
    backends: dict[str, BackendConstants] = Field(default_factory=dict)


@lru_cache(maxsize=1)
def load_calibration() -> Calibration:
    """The packaged calibration file, or uncalibrated defaults when it is absent."""
    try:
        text = resources.files("slaprof.steps.perf").joinpath(CALIBRATION_FILE).read_text()
    except (FileNotFoundError, OSError):
        return Calibration()
    return Calibration.model_validate(json.loads(text))


def constants_for(backend: str) -> BackendConstants:
    """Constants for `backend`: its calibrated ones, else its engine defaults (`simulated`: the emulated
    backend's)."""
    calibrated = load_calibration().backends.get(get_backend(backend).calibration_key)
    return calibrated or engine_defaults(backend)
