"""Risk-aware selection (part of DAG step `fit`): estimated latencies judged at the request's confidence.

Input: the candidates' profiles, the request (backend, ISL, `sla.confidence`) and the model.
Output: the profiles `fit` selects from, where every *estimated* (offline) point's TTFT and ITL is
replaced by what it is judged at (`slaprof.steps.perf.intervals.Context.at_confidence`: the estimate at
0.5, else its confidence-quantile, never less safe than the estimate above 0.5); measured profiles
(simulated or online) are taken as they are. And the interval each recommended number gets on its
line: `TTFT 172.14 ms [80%: 131-224]`.

Load, for the intervals, is prompts or sequences in flight per attention-DP rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import CandidateProfile
from slaprof.steps.perf.intervals import Band, Context

LINE_COVERAGE = 0.8  # the interval printed on the recommendation lines


def estimated(profile: CandidateProfile) -> bool:
    """Numbers from the offline model (measured profiles replace estimates and carry no interval)."""
    return profile.provenance.method == "offline"


def _per_rank(cand: Candidate, concurrency: float) -> float:
    return max(1.0, concurrency / cand.attn_dp)


@dataclass(frozen=True)
class Judge:
    """The intervals of one request's estimates, at its confidence."""

    ctx: Context
    confidence: float

    def _factor(self, phase: str, load: float) -> float:
        """judged / estimate at `load` (independent of the value)."""
        return self.ctx.at_confidence(1.0, phase, load, self.confidence)

    def profile(self, prof: CandidateProfile) -> CandidateProfile:
        """`prof` with its latencies at the confidence (unchanged when measured, or at 0.5)."""
        if not estimated(prof) or self.confidence == 0.5:
            return prof
        c = prof.candidate
        lone = self._factor("ttft", 1.0)
        return prof.model_copy(
            update={
                "prefill": [p.model_copy(update={"ttft_ms": p.ttft_ms * lone}) for p in prof.prefill],
                "prefill_load": [
                    p.model_copy(update={"ttft_ms": p.ttft_ms * self._factor("ttft", _per_rank(c, p.concurrency))})
                    for p in prof.prefill_load
                ],
                "decode": [
                    p.model_copy(update={"itl_ms": p.itl_ms * self._factor("itl", _per_rank(c, p.concurrency))})
                    for p in prof.decode
                ],
                "agg": [
                    p.model_copy(
                        update={
                            "ttft_ms": p.ttft_ms * self._factor("ttft", _per_rank(c, p.concurrency)),
                            "itl_ms": p.itl_ms * self._factor("itl", _per_rank(c, p.concurrency)),
                        }
                    )
                    for p in prof.agg
                ],
            }
        )

    def band(self, judged: float, phase: str, cand: Candidate, concurrency: float) -> Band:
        """The interval around the estimate behind a `judged` number at `concurrency` per engine."""
        load = _per_rank(cand, concurrency)
        estimate = judged / self._factor(phase, load)
        return self.ctx.band(estimate, phase, load, LINE_COVERAGE)

    def label(self, judged: float, phase: str, cand: Candidate, concurrency: float) -> str:
        return " " + self.band(judged, phase, cand, concurrency).label()
