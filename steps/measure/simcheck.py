"""Every simulated point against the performance model that drove the simulated engine.

The simulated engine times each step with a known model, so a simulated measurement has an
exact expected value: TTFT = the model's prefill time for the point's ISL and attention-DP
requests, ITL = the model's decode step for the point's concurrency and mean context. A point
further than TOLERANCE from it was distorted on its way to AIPerf (a machine too busy for the
time scale, a clock too fast for HTTP): it is kept, flagged in the profile and in the report.
"""

from __future__ import annotations

from typing import Any, Literal

from slaprof.steps.core.results import CandidateProfile, DecodePoint, PointCheck, PrefillPoint

TOLERANCE = 0.15


def check(
    phase: Literal["prefill", "decode"], isl: int, concurrency: int | None, measured: float, model: float, scale: float
) -> PointCheck:
    error = measured / model - 1.0
    return PointCheck(
        phase=phase,
        isl=isl,
        concurrency=concurrency,
        measured_ms=round(measured, 4),
        model_ms=round(model, 4),
        error=round(error, 4),
        flagged=abs(error) > TOLERANCE,
        time_scale=round(scale, 3),
    )


def check_prefill(point: PrefillPoint, est: Any, attn_dp: int, scale: float) -> PointCheck:
    """A prefill point: `attn_dp` prompts of `isl` tokens entering an idle engine together."""
    return check("prefill", point.isl, None, point.ttft_ms, float(est.prefill_ttft_ms(point.isl, attn_dp)), scale)


def check_decode(point: DecodePoint, est: Any, scale: float) -> PointCheck:
    """A decode point: `concurrency` requests decoding at the point's mean context."""
    model = float(est.decode_itl_ms(point.concurrency, point.context))
    return check("decode", point.isl, point.concurrency, point.itl_ms, model, scale)


def flagged(profile: CandidateProfile) -> list[PointCheck]:
    return [c for c in profile.checks if c.flagged]


def label(c: PointCheck) -> str:
    where = f"ISL {c.isl}" + (f" x {c.concurrency}" if c.concurrency is not None else "")
    return f"{c.phase} {where}: {'TTFT' if c.phase == 'prefill' else 'ITL'} {c.error:+.0%}"


def summary(profile: CandidateProfile) -> str:
    """One clause for a profile with flagged points ('' when none)."""
    bad = flagged(profile)
    if not bad:
        return ""
    worst = max(bad, key=lambda c: abs(c.error))
    return (
        f"{len(bad)} of {len(profile.checks)} simulated points more than {TOLERANCE:.0%} off the model "
        f"driving the engine (worst {label(worst)})"
    )
