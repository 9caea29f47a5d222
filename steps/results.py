"""Data contracts between DAG steps: what `bench` writes and `fit` reads, what `fit` writes
and `render` reads. Every step reads and writes these as JSON through the artifact store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from steps.candidates import Candidate

ProfileStatus = Literal["ok", "infeasible", "failed"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PrefillPoint(BaseModel):
    isl: int
    ttft_ms: float
    thpt_per_gpu: float  # input tokens/s/GPU


class DecodePoint(BaseModel):
    isl: int  # prompt length of the sweep
    context: int  # mean context during decode: isl + osl/2
    concurrency: int
    kv_usage: float  # concurrency * context / max_kv_tokens, 0..1
    itl_ms: float
    thpt_per_gpu: float  # output tokens/s/GPU


class FailedPoint(BaseModel):
    """A sweep point that could not be measured (an overloaded engine, a failed AIPerf run); the
    candidate's other points stand."""

    phase: Literal["prefill", "decode"]
    isl: int
    concurrency: int | None = None  # decode
    reason: str


class PointCheck(BaseModel):
    """A simulated point against the performance model that drove the simulated engine."""

    phase: Literal["prefill", "decode"]
    isl: int
    concurrency: int | None = None  # decode
    measured_ms: float  # TTFT (prefill) or ITL (decode)
    model_ms: float
    error: float  # measured / model - 1
    flagged: bool  # |error| above steps.simcheck.TOLERANCE
    time_scale: float  # wall ms per modelled ms the point ran at


class Provenance(BaseModel):
    method: Literal["offline", "simulate", "online"]
    estimator: str | None = None  # offline: builtin | aic
    backend: str
    engine_version: str | None = None
    aiperf_version: str | None = None
    started_at: str = Field(default_factory=utc_now)
    finished_at: str | None = None
    engine_up_s: float = 0.0  # seconds the engine was up (online/simulate)
    measuring_s: float = 0.0  # seconds spent measuring
    aiperf_runs: int = 0  # AIPerf processes started (each costs ~10 s of start-up)
    request_key: str = ""  # ProfileRequest.measurement_key() this profile was measured under


class CandidateProfile(BaseModel):
    """One candidate's measured (or estimated) prefill and decode surfaces."""

    candidate: Candidate
    status: ProfileStatus
    reason: str = ""
    max_kv_tokens: int = 0
    prefill: list[PrefillPoint] = Field(default_factory=list)
    decode: list[DecodePoint] = Field(default_factory=list)
    failed_points: list[FailedPoint] = Field(default_factory=list)
    checks: list[PointCheck] = Field(default_factory=list)  # simulate: each point against its driving model
    provenance: Provenance
    artifacts: dict[str, str] = Field(default_factory=dict)  # name -> key/path (logs, traces)

    @property
    def id(self) -> str:
        return self.candidate.id


# ---------------------------------------------------------------------------
# fit outputs
# ---------------------------------------------------------------------------
class PrefillChoice(BaseModel):
    candidate: Candidate
    isl: int
    ttft_ms: float
    thpt_per_gpu: float
    meets_sla: bool
    interpolated: bool = False  # the profile lacked this ISL: values from the fitted curve


class DecodeChoice(BaseModel):
    candidate: Candidate
    context: int
    concurrency: int
    kv_usage: float
    itl_ms: float
    thpt_per_gpu: float
    max_kv_tokens: int
    meets_sla: bool
    interpolated: bool = False  # the profile lacked this context: values from the fitted surface


class ParetoPoint(BaseModel):
    candidate_id: str
    latency_ms: float  # TTFT for prefill, ITL for decode
    thpt_per_gpu: float
    concurrency: int = 1


class CandidateVerdict(BaseModel):
    candidate_id: str
    phase: Literal["prefill", "decode", "both"]
    status: Literal["chosen", "lost", "infeasible", "failed"]
    reason: str


class Replicas(BaseModel):
    request_rate: float
    prefill: int
    decode: int
    total_gpus: int


class Selection(BaseModel):
    """What `fit` decided (selection.json) and what `render` turns into a DGD."""

    model: str
    backend: str
    gpu: str
    isl: int
    osl: int
    ttft_ms: float  # target
    itl_ms: float  # target
    prefill: PrefillChoice | None
    decode: DecodeChoice | None
    prefill_pareto: list[ParetoPoint] = Field(default_factory=list)
    decode_pareto: list[ParetoPoint] = Field(default_factory=list)
    verdicts: list[CandidateVerdict] = Field(default_factory=list)
    replicas: Replicas | None = None
    nearest_sla: dict[str, float] | None = None  # {"ttft_ms": .., "itl_ms": ..} when a target cannot be met
    warnings: list[str] = Field(default_factory=list)
    recommendation: list[str] = Field(default_factory=list)  # the printed "Suggested ..." lines
