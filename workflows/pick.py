"""Interactive pick: the Pareto choices a person chooses from, and applying the choice.

Argo concept: a suspend node whose output parameter is an enum supplied on resume
(https://argo-workflows.readthedocs.io/en/latest/intermediate-inputs/). `fit` offers up to
PICK_SLOTS choices, recommendation first; each is a label `<prefill id>+<decode id>: numbers`,
so the label alone says what it deploys. Picking rewrites selection.json and the planner
data for `render` (fit's own decision stays in selection.auto.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steps.errors import UserError
from steps.request import ProfileRequest
from steps.results import CandidateProfile, ParetoPoint, Selection
from workflows.params import AUTO_CHOICE, PICK_SLOTS

if TYPE_CHECKING:
    from steps.fit import FitResult

RECOMMENDED = " (recommended)"


def _lowest_latency(points: list[ParetoPoint]) -> dict[str, float]:
    """Each candidate's lowest latency on a Pareto front."""
    best: dict[str, float] = {}
    for p in points:
        best[p.candidate_id] = min(p.latency_ms, best.get(p.candidate_id, p.latency_ms))
    return best


def _label(prefill_id: str, decode_id: str, ttft: float | None, itl: float | None, recommended: bool) -> str:
    numbers = ", ".join(
        x
        for x in (f"TTFT {ttft:.1f} ms" if ttft is not None else "", f"ITL {itl:.2f} ms" if itl is not None else "")
        if x
    )
    return f"{prefill_id}+{decode_id}{RECOMMENDED if recommended else ''}: {numbers}".rstrip(": ")


def pareto_choices(selection: Selection, slots: int = PICK_SLOTS) -> list[str]:
    """Labels of the (prefill, decode) pairs worth offering, fit's recommendation first.

    Candidates come from the Pareto fronts (each at its lowest latency on the front); the
    recommended prefill is paired with every decode alternative and vice versa before mixed
    pairs, so one change at a time comes first."""
    ttft = _lowest_latency(selection.prefill_pareto)
    itl = _lowest_latency(selection.decode_pareto)
    rec_p = selection.prefill.candidate.id if selection.prefill else None
    rec_d = selection.decode.candidate.id if selection.decode else None
    if rec_p:
        ttft.setdefault(rec_p, selection.prefill.ttft_ms)  # type: ignore[union-attr]
    if rec_d:
        itl.setdefault(rec_d, selection.decode.itl_ms)  # type: ignore[union-attr]
    prefill_ids = sorted(ttft, key=lambda c: (c != rec_p, ttft[c]))
    decode_ids = sorted(itl, key=lambda c: (c != rec_d, itl[c]))
    if not prefill_ids or not decode_ids:
        return []
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
    return [_label(p, d, ttft.get(p), itl.get(d), (p, d) == (rec_p, rec_d)) for p, d in pairs[:slots]]


def parse_choice(label: str) -> tuple[str, str] | None:
    """(prefill id, decode id) of a choice label; None for `auto` or an empty choice."""
    text = label.strip()
    if not text or text == AUTO_CHOICE:
        return None
    ids = text.split(":", 1)[0].removesuffix(RECOMMENDED).strip()
    if ids.count("+") != 1:
        raise UserError(
            f"choice {label!r} is not one of the offered labels (<prefill>+<decode>: ...); resume with one of them"
        )
    prefill_id, decode_id = (part.strip() for part in ids.split("+"))
    return prefill_id, decode_id


def apply_choice(
    request: ProfileRequest, selection: Selection, profiles: dict[str, CandidateProfile], label: str
) -> FitResult | None:
    """fit's result for the picked prefill and decode candidates, or None when the pick is fit's own.

    Each side is chosen by fit itself, from the picked candidate's profile alone, so the operating
    point, the planner data and the recommendation lines are exactly what fit would write."""
    from steps.fit import FitResult, decode_line, fit_profiles, prefill_line, replica_counts

    ids = parse_choice(label)
    current = (
        selection.prefill.candidate.id if selection.prefill else None,
        selection.decode.candidate.id if selection.decode else None,
    )
    if ids is None or ids == current:
        return None
    for cid in ids:
        if cid not in profiles or profiles[cid].status != "ok":
            known = ", ".join(sorted(c for c, p in profiles.items() if p.status == "ok")) or "none"
            raise UserError(f"picked candidate {cid!r} has no successful profile; measured: {known}")
    prefill_fit = fit_profiles(request, None, [profiles[ids[0]]])
    decode_fit = fit_profiles(request, None, [profiles[ids[1]]])
    prefill, decode = prefill_fit.selection.prefill, decode_fit.selection.decode
    if prefill is None or decode is None:
        raise UserError(f"fit finds no usable operating point for the pick {label!r}; resume with another choice")
    picked = selection.model_copy(deep=True)
    picked.prefill, picked.decode = prefill, decode
    rate = request.sla.request_rate
    picked.replicas = replica_counts(rate, request.sla.isl, request.sla.osl, prefill, decode) if rate else None
    picked.recommendation = [
        f"Picked by hand from the Pareto choices: {ids[0]}+{ids[1]}",
        prefill_line(prefill),
        decode_line(decode),
    ]
    return FitResult(selection=picked, prefill_data=prefill_fit.prefill_data, decode_data=decode_fit.decode_data)
