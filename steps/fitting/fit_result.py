"""What `fit` decided, with everything the report draws: the interface between `slaprof.steps.dag.fit` and
`slaprof.steps.fitting.report` (and its plots), so that neither imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field

from slaprof.steps.core.results import CandidateProfile, DecodeOption, DeploymentChoice, PrefillOption, Selection
from slaprof.steps.fitting.calcheck import IntervalCheck
from slaprof.steps.fitting.confidence import Judge, estimated
from slaprof.steps.fitting.deployments import AggOption
from slaprof.steps.fitting.interpolate import DecodeInterpolator, PrefillInterpolator
from slaprof.steps.fitting.planner_data import DecodePlannerData, PrefillPlannerData


@dataclass
class FitResult:
    """Everything `fit` decided, plus what the report draws."""

    selection: Selection
    prefill_data: PrefillPlannerData | None
    decode_data: DecodePlannerData | None
    prefill_options: list[PrefillOption] = field(default_factory=list)
    decode_options: list[DecodeOption] = field(default_factory=list)
    prefill_interpolators: dict[str, PrefillInterpolator] = field(default_factory=dict)
    decode_interpolators: dict[str, DecodeInterpolator] = field(default_factory=dict)
    profiles: list[CandidateProfile] = field(default_factory=list)
    agg_options: list[AggOption] = field(default_factory=list)
    # every deployment evaluated, per serving mode (the best per engine pair or aggregated option)
    deployments: dict[str, list[DeploymentChoice]] = field(default_factory=dict)
    judge: Judge | None = None  # the estimates' intervals at the request's confidence
    interval_checks: list[IntervalCheck] = field(default_factory=list)  # measurements against estimates

    def band(self, candidate_id: str, phase: str, concurrency: int, judged: float) -> tuple[float, float] | None:
        """The 80% interval around an estimated number (None for a measured one)."""
        prof = next((p for p in self.profiles if p.id == candidate_id), None)
        if self.judge is None or prof is None or not estimated(prof):
            return None
        b = self.judge.band(judged, phase, prof.candidate, concurrency)
        return b.lo, b.hi
