"""What a run's numbers are: measured on GPUs (online), simulated (engines timed by the performance
model) or estimated (offline and dry runs), and, for modelled numbers, the estimator's error band
(`slaprof.steps.perf.error_band`). The report and its plots label every TTFT and ITL with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from slaprof.steps.perf.error_band import ErrorBand, error_band

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.results import CandidateProfile
    from slaprof.steps.fitting.fit_result import FitResult


@dataclass(frozen=True)
class Evidence:
    """What a candidate's numbers are, and how far modelled ones may be from a real deployment."""

    word: str  # measured | simulated | estimated
    band: ErrorBand | None = None  # for modelled numbers (estimated, simulated)

    def pct(self, kind: str) -> float | None:
        """The band of `kind` ("ttft" or "itl") in percent; None for measured numbers."""
        if self.band is None:
            return None
        return self.band.ttft_mape_pct if kind == "ttft" else self.band.itl_mape_pct

    def note(self, kind: str) -> str:
        """E.g. "estimated, TTFT ±34%", for plot titles."""
        pct = self.pct(kind)
        return self.word if pct is None else f"{self.word}, {kind.upper()} ±{pct:.0f}%"


MEASURED = Evidence("measured")


def evidence_of(profile: CandidateProfile) -> Evidence:
    method = profile.provenance.method
    if method == "online":
        return MEASURED
    band = error_band(profile.provenance.estimator)
    return Evidence("simulated" if method == "simulate" else "estimated", band)


def run_evidence(result: FitResult, request: ProfileRequest) -> Evidence:
    """The run's evidence: the request's method, unless its usable profiles say otherwise."""
    kinds = {evidence_of(p) for p in result.profiles if p.status == "ok"}
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds:  # nothing usable: the request says what would have been done
        if request.method == "online":
            return MEASURED
        band = error_band(request.sweep.estimator)
        return Evidence("simulated" if request.method == "simulate" else "estimated", band)
    modelled = [k for k in kinds if k.band is not None]
    return Evidence("mixed", max((k.band for k in modelled if k.band), key=lambda b: b.ttft_mape_pct))
