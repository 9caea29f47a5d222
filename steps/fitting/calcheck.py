"""Per-run calibration check (part of DAG step `fit`): where each measurement fell against the
offline estimate's prediction interval.

Input: the request, its plan and the measured (online or simulated) profiles; measured profiles
replace estimates in the selection, and this says how far the estimates would have been off.
Output: one IntervalCheck per measured prefill, decode and aggregated point: the measurement, the
built-in model's estimate for the same point and its 80% interval (`slaprof.steps.perf.intervals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from slaprof.steps.core.results import CandidateProfile
from slaprof.steps.fitting.confidence import LINE_COVERAGE, estimated
from slaprof.steps.perf.intervals import Context

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.dag.plan import Plan


class IntervalCheck(BaseModel):
    candidate_id: str
    point: str  # `prefill ISL 3000`, `decode 8 x context 3250`, `agg 16: TTFT`
    measured_ms: float
    estimate_ms: float
    lo_ms: float
    hi_ms: float

    @property
    def inside(self) -> bool:
        return self.lo_ms <= self.measured_ms <= self.hi_ms

    @property
    def where(self) -> str:
        if self.inside:
            return "inside"
        return "above" if self.measured_ms > self.hi_ms else "below"


def interval_checks(
    request: ProfileRequest, plan: Plan | None, profiles: Sequence[CandidateProfile]
) -> list[IntervalCheck]:
    """Every measured point against its estimate's interval (none without a plan to estimate from)."""
    measured = [p for p in profiles if p.status == "ok" and not estimated(p)]
    if plan is None or not measured:
        return []
    from slaprof.steps.perf import get_estimator
    from slaprof.steps.specs.gpus import get_gpu

    out: list[IntervalCheck] = []

    def add(cid: str, point: str, measured_ms: float, estimate: float, phase: str, load: float, isl: int) -> None:
        band = Context(plan.backend, isl, plan.model.structure).band(estimate, phase, load, LINE_COVERAGE)
        out.append(IntervalCheck(candidate_id=cid, point=point, measured_ms=measured_ms, estimate_ms=estimate,
                                 lo_ms=band.lo, hi_ms=band.hi))  # fmt: skip

    for prof in measured:
        cand, dp = prof.candidate, prof.candidate.attn_dp
        est = get_estimator(plan.model, get_gpu(plan.gpu), plan.backend, cand)
        for p in prof.prefill:
            add(prof.id, f"prefill ISL {p.isl}", p.ttft_ms, float(est.prefill_ttft_ms(p.isl, dp)), "ttft", 1.0, p.isl)
        for d in prof.decode:
            load = max(1.0, d.concurrency / dp)
            itl = float(est.decode_itl_ms(d.concurrency, d.context))
            add(prof.id, f"decode {d.concurrency} x context {d.context}", d.itl_ms, itl, "itl", load, d.isl)
        for a in prof.agg:
            load = max(1.0, a.concurrency / dp)
            e = est.agg(a.isl, a.osl, a.concurrency)
            add(prof.id, f"agg {a.concurrency}: TTFT", a.ttft_ms, e.ttft_ms, "ttft", load, a.isl)
            add(prof.id, f"agg {a.concurrency}: ITL", a.itl_ms, e.itl_ms, "itl", load, a.isl)
    return out
