"""The pick: the Pareto choices a person chooses from, and applying the choice (both runners' `pick`
step: `slaprof profile --pick`, and on Argo a suspend node whose output parameter is an enum supplied
on resume, https://argo-workflows.readthedocs.io/en/latest/intermediate-inputs/). `fit` offers up to
PICK_SLOTS choices, recommendation first; each is a label `<prefill id>+<decode id>: numbers`
(an aggregated recommendation: `<agg id>: numbers`), so the label alone says what it deploys. Picking rewrites selection.json and the planner
data for `render` (fit's own decision stays in selection.auto.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slaprof.steps.core.candidates import AGG_PREFIX
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import CandidateProfile, ParetoPoint, Selection
from slaprof.steps.dag.pipeline import AUTO_CHOICE

if TYPE_CHECKING:
    from slaprof.steps.dag.plan import Plan
    from slaprof.steps.fitting.fit_result import FitResult

PICK_SLOTS = 6  # Pareto choices offered (an Argo suspend node's enum is a static list of this many)
RECOMMENDED = " (recommended)"


def _lowest_latency(points: list[ParetoPoint]) -> dict[str, float]:
    """Each candidate's lowest latency on a Pareto front."""
    best: dict[str, float] = {}
    for p in points:
        best[p.candidate_id] = min(p.latency_ms, best.get(p.candidate_id, p.latency_ms))
    return best


def _label(prefill_id: str, decode_id: str | None, ttft: float | None, itl: float | None, recommended: bool) -> str:
    numbers = ", ".join(
        x
        for x in (f"TTFT {ttft:.1f} ms" if ttft is not None else "", f"ITL {itl:.2f} ms" if itl is not None else "")
        if x
    )
    ids = f"{prefill_id}+{decode_id}" if decode_id else prefill_id
    return f"{ids}{RECOMMENDED if recommended else ''}: {numbers}".rstrip(": ")


def pareto_choices(selection: Selection, slots: int = PICK_SLOTS) -> list[str]:
    """Labels of the deployments worth offering, fit's recommendation first.

    Disaggregated pairs come from the Pareto fronts (each candidate at its lowest latency on the
    front); the recommended prefill is paired with every decode alternative and vice versa before
    mixed pairs, so one change at a time comes first. An aggregated recommendation comes first,
    then the pairs."""
    ttft = _lowest_latency(selection.prefill_pareto)
    itl = _lowest_latency(selection.decode_pareto)
    rec_p = selection.prefill.candidate.id if selection.prefill else None
    rec_d = selection.decode.candidate.id if selection.decode else None
    if rec_p:
        ttft.setdefault(rec_p, selection.prefill.ttft_ms)  # type: ignore[union-attr]
    if rec_d:
        itl.setdefault(rec_d, selection.decode.itl_ms)  # type: ignore[union-attr]
    first: list[str] = []
    chosen = selection.deployment
    if chosen is not None and chosen.mode == "agg":
        first = [_label(chosen.ids, None, chosen.ttft_ms, chosen.itl_ms, True)]
    prefill_ids = sorted(ttft, key=lambda c: (c != rec_p, ttft[c]))
    decode_ids = sorted(itl, key=lambda c: (c != rec_d, itl[c]))
    if not prefill_ids or not decode_ids:
        return first
    pairs: list[tuple[str, str]] = []
    first_p, first_d = prefill_ids[0], decode_ids[0]
    for pair in (
        [(first_p, first_d)]
        + [(p, first_d) for p in prefill_ids[1:]]
        + [(first_p, d) for d in decode_ids[1:]]
        + [(p, d) for p in prefill_ids[1:] for d in decode_ids[1:]]
    ):
        if pair not in pairs:
            pairs.append(pair)
    labels = [_label(p, d, ttft.get(p), itl.get(d), (p, d) == (rec_p, rec_d)) for p, d in pairs]
    return (first + labels)[:slots]


def parse_choice(label: str) -> tuple[str, ...] | None:
    """(prefill id, decode id) or (aggregated id,) of a choice label; None for `auto` or an empty choice."""
    text = label.strip()
    if not text or text == AUTO_CHOICE:
        return None
    ids = text.split(":", 1)[0].removesuffix(RECOMMENDED).strip()
    parts = tuple(part.strip() for part in ids.split("+"))
    if len(parts) == 1 and parts[0].startswith(AGG_PREFIX):
        return parts
    if len(parts) != 2:
        raise UserError(
            f"choice {label!r} is not one of the offered labels (<prefill>+<decode>: ...); resume with one of them"
        )
    return parts


def apply_choice(
    request: ProfileRequest, plan: Plan, selection: Selection, profiles: dict[str, CandidateProfile], label: str
) -> FitResult | None:
    """fit's result for the picked deployment, or None when the pick is fit's own.

    The engines' operating points, their counts, the planner data and the lines are computed by
    fit itself, from the picked candidates' profiles alone (`slaprof.steps.dag.fit.fit_pick`)."""
    from slaprof.steps.dag.fit import fit_pick

    ids = parse_choice(label)
    chosen = selection.deployment
    if chosen is not None:
        current = tuple(e.candidate.id for e in chosen.engines)
    else:
        current = tuple(c.candidate.id for c in (selection.prefill, selection.decode) if c is not None)
    if ids is None or ids == current:
        return None
    result = fit_pick(request, plan, profiles, ids)
    picked = result.selection.model_copy(
        update={
            "prefill_pareto": selection.prefill_pareto,
            "decode_pareto": selection.decode_pareto,
            "verdicts": selection.verdicts,
            "recommendation": [
                f"Picked by hand from the Pareto choices: {'+'.join(ids)}",
                *result.selection.recommendation,
            ],
        }
    )
    result.selection = picked
    return result
