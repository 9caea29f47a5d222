"""Data contracts between DAG steps: what `bench` writes and `fit` reads, what `fit` writes
and `render` reads. Every step reads and writes these as JSON through the artifact store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.specs.models import EnginePrecision

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


class PrefillLoadPoint(BaseModel):
    """A prefill engine kept busy by `concurrency` prompts in flight (closed loop, one ISL)."""

    isl: int
    concurrency: int
    ttft_ms: float
    thpt_per_gpu: float  # input tokens/s/GPU


class AggPoint(BaseModel):
    """An aggregated engine serving `concurrency` requests in flight (closed loop, the SLA's ISL/OSL)."""

    isl: int
    osl: int
    concurrency: int
    ttft_ms: float  # with the prompts queued ahead and the decode steps they share
    itl_ms: float  # with the other requests' chunked prefill mixed into the decode steps
    thpt_per_gpu: float  # output tokens/s/GPU


PointPhase = Literal["prefill", "decode", "prefill_load", "agg"]


class FailedPoint(BaseModel):
    """A sweep point that could not be measured (an overloaded engine, a failed AIPerf run); the
    candidate's other points stand."""

    phase: PointPhase
    isl: int
    concurrency: int | None = None  # every phase but prefill
    reason: str


class PointCheck(BaseModel):
    """A simulated point against the performance model that drove the simulated engine."""

    phase: Literal["prefill", "decode"]
    isl: int
    concurrency: int | None = None  # decode
    measured_ms: float  # TTFT (prefill) or ITL (decode)
    model_ms: float
    error: float  # measured / model - 1
    flagged: bool  # |error| above slaprof.steps.measure.simcheck.TOLERANCE
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
    """One candidate's measured (or estimated) surfaces: a disaggregated candidate's prefill
    (lone prompts over ISL, and under load at the SLA's ISL) and decode; an aggregated candidate's
    concurrency sweep at the SLA's ISL/OSL (`agg`)."""

    candidate: Candidate
    status: ProfileStatus
    reason: str = ""
    max_kv_tokens: int = 0
    prefill: list[PrefillPoint] = Field(default_factory=list)
    decode: list[DecodePoint] = Field(default_factory=list)
    prefill_load: list[PrefillLoadPoint] = Field(default_factory=list)
    agg: list[AggPoint] = Field(default_factory=list)
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
class PrefillOption(BaseModel):
    """One candidate's prefill at the request's ISL."""

    candidate: Candidate
    isl: int
    ttft_ms: float
    thpt_per_gpu: float
    interpolated: bool = False  # the profile lacked this ISL: values from the fitted curve


class DecodeOption(BaseModel):
    """One candidate's decode at the request's context and one concurrency."""

    candidate: Candidate
    context: int
    concurrency: int
    kv_usage: float
    itl_ms: float
    thpt_per_gpu: float
    max_kv_tokens: int
    interpolated: bool = False  # the profile lacked this context: values from the fitted surface


class PrefillChoice(PrefillOption):
    """The chosen prefill option, and whether it meets the SLA."""

    meets_sla: bool
    concurrency: int = 1  # prompts in flight per engine at this operating point

    @classmethod
    def of(cls, option: PrefillOption, meets_sla: bool, concurrency: int = 1) -> PrefillChoice:
        return cls(**dict(option), meets_sla=meets_sla, concurrency=concurrency)


class DecodeChoice(DecodeOption):
    """The chosen decode option, and whether it meets the SLA."""

    meets_sla: bool

    @classmethod
    def of(cls, option: DecodeOption, meets_sla: bool) -> DecodeChoice:
        return cls(**dict(option), meets_sla=meets_sla)


class ParetoPoint(BaseModel):
    candidate_id: str
    latency_ms: float  # TTFT for prefill, ITL for decode
    thpt_per_gpu: float
    concurrency: int = 1


class CandidateVerdict(BaseModel):
    candidate_id: str
    phase: Literal["prefill", "decode", "agg", "both"]
    status: Literal["chosen", "lost", "infeasible", "failed"]
    reason: str


class Replicas(BaseModel):
    request_rate: float
    prefill: int
    decode: int
    total_gpus: int


class EngineGroup(BaseModel):
    """`replicas` engines of one candidate at one operating point, within a deployment."""

    role: Literal["prefill", "decode", "agg"]
    candidate: Candidate
    replicas: int
    concurrency: int  # requests in flight per engine (prefill: prompts being prefilled)
    ttft_ms: float | None = None  # the engine's own TTFT (prefill, agg)
    itl_ms: float | None = None  # decode, agg
    thpt_per_gpu: float  # per GPU of one engine: input tokens/s for prefill, output tokens/s otherwise
    request_rate: float  # requests/s one engine serves at this point
    interpolated: bool = False


class DeploymentChoice(BaseModel):
    """A whole deployment within the GPU budget: one aggregated engine group, or prefill and decode
    groups rate-matched, with what it delivers."""

    mode: Literal["agg", "disagg"]
    engines: list[EngineGroup]
    gpus: int
    request_rate: float  # requests/s the deployment serves (the slower side, disaggregated)
    thpt_per_gpu: float  # output tokens/s per GPU of the whole deployment
    ttft_ms: float  # what a user sees (disaggregated: prefill TTFT + KV transfer + first decode step)
    itl_ms: float
    meets_sla: bool
    serves_rate: bool = True  # with a request rate: whether it serves that rate
    verdict: str = ""  # for the best of the other serving mode: why it was not recommended

    def group(self, role: str) -> EngineGroup | None:
        return next((e for e in self.engines if e.role == role), None)

    @property
    def shape(self) -> str:
        """`2 x prefill TP:2 + 1 x decode TP:4`, `2 x aggregated TP:4`."""
        names = {"prefill": "prefill", "decode": "decode", "agg": "aggregated"}
        return " + ".join(f"{e.replicas} x {names[e.role]} {e.candidate.label}" for e in self.engines)

    @property
    def ids(self) -> str:
        """`tp2+tp4`, `agg-tp4`: what the deployment's engines are, by candidate id."""
        return "+".join(e.candidate.id for e in self.engines)


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
    serving: str = "disagg"  # the request's serving mode: auto | agg | disagg
    gpu_budget: int = 0  # GPUs every deployment had to fit in
    deployment: DeploymentChoice | None = None  # the recommended deployment
    alternative: DeploymentChoice | None = None  # the best of the other serving mode
    comparison: str = ""  # how the other mode's best compares, and why it lost
    warnings: list[str] = Field(default_factory=list)
    recommendation: list[str] = Field(default_factory=list)  # the printed "Suggested ..." lines
    # the engine context (tokens) the plan sized the engines for; the DGD's workers get it (0: unknown)
    max_context: int = 0
    # the quantization / KV dtype overrides the engines ran with; the DGD's workers get them too
    precision: EnginePrecision = Field(default_factory=EnginePrecision)

    def planner_targets(self) -> tuple[float, float]:
        """(TTFT, ITL) in ms the deployment's planner scales for: the request's targets, or the
        nearest achievable ones the engines reach when a target cannot be met."""
        nearest = self.nearest_sla or {}
        return nearest.get("ttft_ms", self.ttft_ms), nearest.get("itl_ms", self.itl_ms)

    @property
    def planner_deployed(self) -> bool:
        """Whether the DGD runs Dynamo's SLA planner: only a disaggregated deployment's does."""
        return self.deployment is None or self.deployment.mode != "agg"

    def nearest_sla_use(self) -> str:
        """What becomes of the nearest achievable SLA: the planner's targets, or (aggregated, no planner)
        only what the deployment reaches."""
        return "the DGD's planner targets" if self.planner_deployed else "the aggregated deployment reaches"

    def sla_note(self) -> str | None:
        """One sentence when the request's SLA cannot be met, naming the nearest achievable one, else None."""
        if not self.nearest_sla:
            return None
        ttft, itl = self.planner_targets()
        return (
            f"the requested SLA (TTFT {self.ttft_ms:g} ms, ITL {self.itl_ms:g} ms) cannot be met; "
            f"{self.nearest_sla_use()} the nearest achievable SLA: TTFT {ttft:.2f} ms, ITL {itl:.2f} ms"
        )
