"""DAG step `fit`: choose the prefill and decode engines under the SLA.

Inputs (from the run's store): request.json, plan.json and every profiles/<id>.json.
Outputs: selection.json (the choices and the numbers behind them, Pareto fronts, why every other
candidate lost, the nearest achievable SLA when a target cannot be met, replica counts when the
request gives a rate), the planner data of the chosen engines (prefill/raw_data.npz,
decode/raw_data.npz, prefill_raw_data.json, decode_raw_data.json), plots/*.png and report.html.

Rules (Dynamo's profiler, made explicit):
- prefill: among the candidates' points at the request's ISL that meet the TTFT target, the
  highest throughput per GPU; decode: likewise over all concurrencies at the request's context
  (isl + osl/2) under the ITL target. A profile without that exact ISL/context is interpolated
  with our fitted curves (`steps.interpolate`).
- ties (equal throughput per GPU) go to the engine with fewer GPUs, then to lower latency;
- nothing meets a target: the lowest-latency point is chosen, a warning says so, and the
  nearest achievable SLA is reported;
- failed, infeasible and dropped candidates are listed with their reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from steps.candidates import Candidate
from steps.errors import UserError
from steps.interpolate import DecodeInterpolator, PrefillInterpolator
from steps.planner_data import DecodePlannerData, PrefillPlannerData
from steps.results import (
    CandidateProfile,
    CandidateVerdict,
    DecodeChoice,
    ParetoPoint,
    PrefillChoice,
    Replicas,
    Selection,
)

if TYPE_CHECKING:
    from steps.plan import Plan
    from steps.request import ProfileRequest
    from steps.store import ArtifactStore

TIE_RTOL = 1e-6  # throughputs this close (relative) are a tie, settled by GPU count
DYNAMO_MIN_PREFILL_POINTS = 4  # the planner's interp1d(kind="cubic") needs four ISLs


@dataclass(frozen=True)
class PrefillOption:
    """One candidate's prefill at the request's ISL."""

    candidate: Candidate
    isl: int
    ttft_ms: float
    thpt_per_gpu: float
    interpolated: bool


@dataclass(frozen=True)
class DecodeOption:
    """One candidate's decode at the request's context and one concurrency."""

    candidate: Candidate
    context: int
    concurrency: int
    kv_usage: float
    itl_ms: float
    thpt_per_gpu: float
    max_kv_tokens: int
    interpolated: bool


def _fields_of(option: PrefillOption | DecodeOption) -> dict[str, Any]:
    """An option's fields: a choice is the chosen option plus whether it meets the SLA."""
    return {f.name: getattr(option, f.name) for f in fields(option)}


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


# ---------------------------------------------------------------------------
# the lines Dynamo prints
# ---------------------------------------------------------------------------
def prefill_line(choice: PrefillChoice) -> str:
    return (
        f"Suggested prefill {choice.candidate.label} (TTFT {choice.ttft_ms:.2f} ms, "
        f"throughput {choice.thpt_per_gpu:.2f} tokens/s/GPU)"
    )


def decode_line(choice: DecodeChoice) -> str:
    return (
        f"Suggested decode {choice.candidate.label} (ITL {choice.itl_ms:.2f} ms, "
        f"throughput {choice.thpt_per_gpu:.2f} tokens/s/GPU)"
    )


# ---------------------------------------------------------------------------
# options at the request's operating point
# ---------------------------------------------------------------------------
def prefill_options(profile: CandidateProfile, isl: int, interp: PrefillInterpolator | None) -> list[PrefillOption]:
    exact = [p for p in profile.prefill if p.isl == isl]
    if exact:
        p = exact[0]
        return [PrefillOption(profile.candidate, isl, p.ttft_ms, p.thpt_per_gpu, False)]
    if interp is None:
        return []
    ttft, thpt = interp.predict(isl)
    return [PrefillOption(profile.candidate, isl, float(ttft), float(thpt), True)]


def decode_options(
    profile: CandidateProfile,
    isl: int,
    osl: int,
    granularity: int,
    interp: DecodeInterpolator | None,
    itl_target_ms: float | None = None,
) -> list[DecodeOption]:
    """The candidate's decode options at the context isl + osl/2: the measured points there (or,
    when the sweep did not visit that context, the fitted surface at the concurrencies the sweep
    would have used), plus the fitted surface's highest concurrency within `itl_target_ms`.

    That last point matters: a sweep of 6 concurrencies from 1 to the KV limit often has only
    concurrency 1 under the ITL target, which would size the decode fleet for one request per
    engine; the planner, too, looks the target up on the interpolated surface."""
    from steps.plan import decode_concurrencies

    context = isl + osl // 2
    cand, max_kv = profile.candidate, profile.max_kv_tokens
    exact = sorted((p for p in profile.decode if p.context == context), key=lambda p: p.concurrency)
    out = [
        DecodeOption(cand, context, p.concurrency, p.kv_usage, p.itl_ms, p.thpt_per_gpu, max_kv, False) for p in exact
    ]
    if interp is None or max_kv <= 0:
        return out
    grid = [p.concurrency for p in exact] or decode_concurrencies(max_kv, isl, osl, granularity, cand.attn_dp)
    if not grid:
        return out
    predicted = set() if exact else set(grid)
    if itl_target_ms is not None:
        best = interp.best_under_itl(itl_target_ms, context, max_concurrency=max(grid))
        if best is not None and best[0] not in grid:
            predicted.add(best[0])
    for conc in sorted(predicted):
        itl, thpt = interp.predict(conc, context)
        out.append(
            DecodeOption(cand, context, conc, min(1.0, conc * context / max_kv), float(itl), float(thpt), max_kv, True)
        )
    return sorted(out, key=lambda o: o.concurrency)


# ---------------------------------------------------------------------------
# choosing
# ---------------------------------------------------------------------------
OptionT = TypeVar("OptionT", PrefillOption, DecodeOption)


def choose(
    options: Sequence[OptionT], latency: Callable[[OptionT], float], target: float, order: dict[str, int]
) -> tuple[OptionT, bool]:
    """The highest throughput/GPU meeting `target` (ties: fewer GPUs, lower latency, plan order),
    or, when none meets it, the lowest latency (ties: fewer GPUs, higher throughput)."""
    feasible = [o for o in options if latency(o) <= target]
    if feasible:
        top = max(o.thpt_per_gpu for o in feasible)
        tied = [o for o in feasible if o.thpt_per_gpu >= top * (1 - TIE_RTOL)]
        return min(tied, key=lambda o: (o.candidate.num_gpus, latency(o), order.get(o.candidate.id, 0))), True
    low = min(latency(o) for o in options)
    tied = [o for o in options if latency(o) <= low * (1 + TIE_RTOL)]
    return min(tied, key=lambda o: (o.candidate.num_gpus, -o.thpt_per_gpu, order.get(o.candidate.id, 0))), False


def _decide(
    phase: str,
    options: Sequence[OptionT],
    latency: str,
    target: float,
    order: dict[str, int],
    where: str,
    nearest: dict[str, float],
    warnings: list[str],
) -> tuple[OptionT | None, bool]:
    """One phase's pick: the best option within `target`, else the lowest latency, said loudly."""
    if not options:
        warnings.append(f"No {phase} results produced; no {phase} recommendation")
        return None, False
    pick, met = choose(options, lambda o: getattr(o, latency), target, order)
    if not met:
        value = getattr(pick, latency)
        # rounded up: a target below what the engine reaches would make the planner chase it forever
        nearest[latency] = math.ceil(round(value * 100, 6)) / 100
        at = f", concurrency {pick.concurrency}" if isinstance(pick, DecodeOption) else ""
        name = latency.removesuffix("_ms").upper()
        warnings.append(
            f"No engine configuration satisfies the {name} target of {target:g} ms at {where}: "
            f"the lowest is {value:.2f} ms ({pick.candidate.label}{at}), chosen anyway"
        )
    return pick, met


def pareto_front(points: Sequence[tuple[str, float, float, int]]) -> list[ParetoPoint]:
    """Non-dominated (lower latency, higher throughput) points of (id, latency, thpt, concurrency)."""
    front: list[ParetoPoint] = []
    best = -math.inf
    for cid, lat, thpt, conc in sorted(points, key=lambda p: (p[1], -p[2])):
        if thpt > best:
            front.append(ParetoPoint(candidate_id=cid, latency_ms=lat, thpt_per_gpu=thpt, concurrency=conc))
            best = thpt
    return front


def _best_feasible(options: Sequence[OptionT], latency: Callable[[OptionT], float], target: float) -> OptionT | None:
    ok = [o for o in options if latency(o) <= target]
    return max(ok, key=lambda o: o.thpt_per_gpu) if ok else None


def _prefill_verdict(
    cid: str, opts: list[PrefillOption], chosen: PrefillOption | None, met: bool, target: float, isl: int
) -> CandidateVerdict:
    if not opts:
        return CandidateVerdict(
            candidate_id=cid,
            phase="prefill",
            status="lost",
            reason="no prefill points to evaluate at the request's ISL",
        )
    o = opts[0]
    how = " (interpolated)" if o.interpolated else ""
    mine = f"TTFT {o.ttft_ms:.2f} ms, {o.thpt_per_gpu:.2f} tokens/s/GPU at ISL {isl}{how}"
    if chosen is not None and chosen.candidate.id == cid:
        why = (
            "highest throughput per GPU within the TTFT target"
            if met
            else "lowest TTFT (no candidate meets the target)"
        )
        return CandidateVerdict(candidate_id=cid, phase="prefill", status="chosen", reason=f"{mine}: {why}")
    assert chosen is not None
    win = chosen.candidate.label
    if o.ttft_ms > target:
        if met:
            reason = f"{mine}: TTFT misses the {target:g} ms target"
        else:
            reason = f"{mine}: TTFT misses the {target:g} ms target and is higher than {win}'s {chosen.ttft_ms:.2f} ms"
    elif abs(o.thpt_per_gpu - chosen.thpt_per_gpu) <= TIE_RTOL * chosen.thpt_per_gpu:
        reason = f"{mine}: ties {win} on throughput per GPU; {win} uses fewer GPUs or has lower TTFT"
    else:
        reason = f"{mine}: meets the target but {win} delivers {chosen.thpt_per_gpu:.2f} tokens/s/GPU"
    return CandidateVerdict(candidate_id=cid, phase="prefill", status="lost", reason=reason)


def _decode_verdict(
    cid: str, opts: list[DecodeOption], chosen: DecodeOption | None, met: bool, target: float, context: int
) -> CandidateVerdict:
    if not opts:
        return CandidateVerdict(
            candidate_id=cid,
            phase="decode",
            status="lost",
            reason=f"no decode points to evaluate at context {context} (KV cache too small?)",
        )

    def how(o: DecodeOption) -> str:
        return ", interpolated" if o.interpolated else ""

    best = _best_feasible(opts, lambda o: o.itl_ms, target)
    if chosen is not None and chosen.candidate.id == cid:
        mine = (
            f"ITL {chosen.itl_ms:.2f} ms, {chosen.thpt_per_gpu:.2f} tokens/s/GPU at concurrency "
            f"{chosen.concurrency}, context {context}{how(chosen)}"
        )
        why = (
            "highest throughput per GPU within the ITL target" if met else "lowest ITL (no candidate meets the target)"
        )
        return CandidateVerdict(candidate_id=cid, phase="decode", status="chosen", reason=f"{mine}: {why}")
    assert chosen is not None
    win = chosen.candidate.label
    if best is None:
        low = min(opts, key=lambda o: o.itl_ms)
        reason = (
            f"lowest ITL {low.itl_ms:.2f} ms (concurrency {low.concurrency}, context {context}{how(low)}) "
            f"misses the {target:g} ms target"
        )
        if not met:
            reason += f" and is higher than {win}'s {chosen.itl_ms:.2f} ms"
    elif abs(best.thpt_per_gpu - chosen.thpt_per_gpu) <= TIE_RTOL * chosen.thpt_per_gpu:
        reason = (
            f"best {best.thpt_per_gpu:.2f} tokens/s/GPU at ITL {best.itl_ms:.2f} ms ties {win}; "
            f"{win} uses fewer GPUs or has lower ITL"
        )
    else:
        reason = (
            f"best within the target: {best.thpt_per_gpu:.2f} tokens/s/GPU at ITL {best.itl_ms:.2f} ms "
            f"(concurrency {best.concurrency}{how(best)}), below {win}'s {chosen.thpt_per_gpu:.2f}"
        )
    return CandidateVerdict(candidate_id=cid, phase="decode", status="lost", reason=reason)


def replica_counts(rate: float, isl: int, osl: int, prefill: PrefillChoice, decode: DecodeChoice) -> Replicas:
    """Rate matching: enough prefill engines for rate*isl input tokens/s and decode engines for
    rate*osl output tokens/s at the chosen operating points (the planner's formula, at least 1)."""
    gp, gd = prefill.candidate.num_gpus, decode.candidate.num_gpus
    num_p = max(1, math.ceil(rate * isl / (prefill.thpt_per_gpu * gp))) if prefill.thpt_per_gpu > 0 else 1
    num_d = max(1, math.ceil(rate * osl / (decode.thpt_per_gpu * gd))) if decode.thpt_per_gpu > 0 else 1
    return Replicas(request_rate=rate, prefill=num_p, decode=num_d, total_gpus=num_p * gp + num_d * gd)


# ---------------------------------------------------------------------------
# the pure entry point
# ---------------------------------------------------------------------------
def _interpolators(
    profile: CandidateProfile, warnings: list[str]
) -> tuple[PrefillInterpolator | None, DecodeInterpolator | None]:
    pre = dec = None
    try:
        if profile.prefill:
            pre = PrefillInterpolator.from_points(profile.prefill)
    except ValueError as exc:
        warnings.append(f"{profile.id}: prefill points cannot be interpolated: {exc}")
    try:
        if profile.decode and profile.max_kv_tokens > 0:
            dec = DecodeInterpolator.from_points(profile.decode, profile.max_kv_tokens, profile.candidate.attn_dp)
    except ValueError as exc:
        warnings.append(f"{profile.id}: decode points cannot be interpolated: {exc}")
    return pre, dec


def _profile_verdicts(
    plan: Plan | None, profiles: dict[str, CandidateProfile]
) -> tuple[list[CandidateVerdict], list[str]]:
    """Verdicts of candidates that never produced usable measurements, and the ids that did."""
    verdicts: list[CandidateVerdict] = []
    usable: list[str] = []
    planned = [p.id for p in plan.candidates] if plan else []
    ids = planned + [cid for cid in profiles if cid not in planned]
    for cid in ids:
        pc = next((p for p in plan.candidates if p.id == cid), None) if plan else None
        prof = profiles.get(cid)
        if pc is not None and pc.status != "runnable":
            verdicts.append(
                CandidateVerdict(
                    candidate_id=cid, phase="both", status="infeasible", reason=f"dropped by the plan: {pc.reason}"
                )
            )
        elif prof is None:
            verdicts.append(
                CandidateVerdict(
                    candidate_id=cid,
                    phase="both",
                    status="failed",
                    reason=f"no profile: profiles/{cid}.json is missing (its bench step did not finish)",
                )
            )
        elif prof.status != "ok":
            verdicts.append(
                CandidateVerdict(
                    candidate_id=cid,
                    phase="both",
                    status=prof.status,
                    reason=prof.reason or f"bench reported {prof.status} without a reason",
                )
            )
        else:
            usable.append(cid)
    return verdicts, usable


def fit_profiles(request: ProfileRequest, plan: Plan | None, profiles: Sequence[CandidateProfile]) -> FitResult:
    """Select prefill and decode engines for `request`'s SLA from measured `profiles`."""
    sla = request.sla
    isl, osl, context = sla.isl, sla.osl, sla.isl + sla.osl // 2
    if plan is not None:  # `select` with a new --isl/--osl re-targets a plan made for other lengths
        from steps.plan import context_problem

        too_long = context_problem(isl, osl, plan.model, request.engine.max_context_length)
        if too_long:
            raise UserError(too_long)
    by_id = {p.id: p for p in profiles}
    order = {cid: i for i, cid in enumerate([p.id for p in plan.candidates] if plan else [p.id for p in profiles])}
    granularity = plan.grid.decode_granularity if plan else request.sweep.decode_granularity
    warnings: list[str] = []
    if request.sweep.dry_run:
        warnings.append("Dry run: every number is an offline estimate; nothing was measured")
    verdicts, usable = _profile_verdicts(plan, by_id)
    for v in verdicts:
        if v.status == "failed":
            warnings.append(f"{v.candidate_id} failed: {v.reason}")
    if plan is not None:
        stale = [
            cid
            for cid in usable
            if by_id[cid].provenance.request_key and by_id[cid].provenance.request_key != plan.request_key
        ]
        if stale:
            warnings.append(
                f"profiles {', '.join(stale)} were profiled under a different request than the plan "
                "(model, hardware, backend or sweep changed); their numbers may not apply"
            )

    p_opts: list[PrefillOption] = []
    d_opts: list[DecodeOption] = []
    p_by: dict[str, list[PrefillOption]] = {}
    d_by: dict[str, list[DecodeOption]] = {}
    pre_i: dict[str, PrefillInterpolator] = {}
    dec_i: dict[str, DecodeInterpolator] = {}
    for cid in usable:
        prof = by_id[cid]
        pi, di = _interpolators(prof, warnings)
        if pi is not None:
            pre_i[cid] = pi
            lo, hi = pi.isl_range
            if not any(p.isl == isl for p in prof.prefill) and not lo <= isl <= hi:
                warnings.append(
                    f"{cid}: ISL {isl} is outside the profiled prefill range {lo:.0f}-{hi:.0f}; "
                    "its TTFT is extrapolated"
                )
        if di is not None:
            dec_i[cid] = di
        p_by[cid] = prefill_options(prof, isl, pi)
        d_by[cid] = decode_options(prof, isl, osl, granularity, di, sla.itl_ms)
        p_opts += p_by[cid]
        d_opts += d_by[cid]

    nearest: dict[str, float] = {"ttft_ms": sla.ttft_ms, "itl_ms": sla.itl_ms}
    p_pick, p_met = _decide("prefill", p_opts, "ttft_ms", sla.ttft_ms, order, f"ISL {isl}", nearest, warnings)
    d_pick, d_met = _decide("decode", d_opts, "itl_ms", sla.itl_ms, order, f"context {context}", nearest, warnings)
    missed = (p_pick is not None and not p_met) or (d_pick is not None and not d_met)
    prefill_choice = PrefillChoice(**_fields_of(p_pick), meets_sla=p_met) if p_pick else None
    decode_choice = DecodeChoice(**_fields_of(d_pick), meets_sla=d_met) if d_pick else None

    for cid in usable:
        verdicts.append(_prefill_verdict(cid, p_by[cid], p_pick, p_met, sla.ttft_ms, isl))
        verdicts.append(_decode_verdict(cid, d_by[cid], d_pick, d_met, sla.itl_ms, context))

    replicas = None
    if sla.request_rate and prefill_choice and decode_choice:
        replicas = replica_counts(sla.request_rate, isl, osl, prefill_choice, decode_choice)

    recommendation = []
    if prefill_choice:
        recommendation.append(prefill_line(prefill_choice))
    if decode_choice:
        recommendation.append(decode_line(decode_choice))

    prefill_data = PrefillPlannerData.from_profile(by_id[p_pick.candidate.id]) if p_pick else None
    decode_data = DecodePlannerData.from_profile(by_id[d_pick.candidate.id]) if d_pick else None
    if prefill_data is not None and len(prefill_data.prefill_isl) < DYNAMO_MIN_PREFILL_POINTS:
        warnings.append(
            f"the chosen prefill engine has {len(prefill_data.prefill_isl)} ISL points; Dynamo's planner "
            f"needs at least {DYNAMO_MIN_PREFILL_POINTS} (raise --prefill-interpolation-granularity)"
        )
    if decode_data is not None and len(set(decode_data.y_context_length)) < 2:
        warnings.append(
            "the chosen decode engine was profiled at a single context length; Dynamo's planner needs "
            "two or more to triangulate its decode surface (raise --decode-interpolation-granularity)"
        )

    selection = Selection(
        model=plan.model.name if plan else request.model,
        backend=request.backend,
        gpu=plan.gpu if plan else request.hardware.gpu,
        isl=isl,
        osl=osl,
        ttft_ms=sla.ttft_ms,
        itl_ms=sla.itl_ms,
        prefill=prefill_choice,
        decode=decode_choice,
        prefill_pareto=pareto_front([(o.candidate.id, o.ttft_ms, o.thpt_per_gpu, 1) for o in p_opts]),
        decode_pareto=pareto_front([(o.candidate.id, o.itl_ms, o.thpt_per_gpu, o.concurrency) for o in d_opts]),
        verdicts=verdicts,
        replicas=replicas,
        nearest_sla=nearest if missed else None,
        warnings=warnings,
        recommendation=recommendation,
        max_context=plan.grid.max_context if plan else request.engine.max_context_length,
    )
    return FitResult(
        selection=selection,
        prefill_data=prefill_data,
        decode_data=decode_data,
        prefill_options=p_opts,
        decode_options=d_opts,
        prefill_interpolators=pre_i,
        decode_interpolators=dec_i,
        profiles=list(profiles),
    )


# ---------------------------------------------------------------------------
# store I/O
# ---------------------------------------------------------------------------
def load_profiles(store: ArtifactStore, prefix: str = "profiles/") -> list[CandidateProfile]:
    """Every profile under `prefix`; an unreadable file is a UserError naming it."""
    from pydantic import ValidationError

    from steps.store import Layout, read_model

    not_profiles = {
        Layout.REQUEST,
        Layout.PLAN,
        Layout.SELECTION,
        Layout.PREFILL_JSON,
        Layout.DECODE_JSON,
        Layout.LOCK,
    }
    out = []
    for key in store.list(prefix):
        name = key[len(prefix) :]
        if not name.endswith(".json") or "/" in name or name in not_profiles:
            continue
        try:
            out.append(read_model(store, key, CandidateProfile))
        except (ValidationError, ValueError) as exc:
            raise UserError(f"{store.uri(key)} is not a candidate profile: {str(exc).splitlines()[0]}") from None
    return out


def write_outputs(store: ArtifactStore, result: FitResult, request: ProfileRequest, report: bool = True) -> None:
    """selection.json, the planner files and (unless `report` is False) plots/*.png and report.html."""
    from steps.store import Layout, write_model

    write_model(store, Layout.SELECTION, result.selection)
    if result.prefill_data is not None:
        store.put_bytes(Layout.PREFILL_NPZ, result.prefill_data.to_npz())
        store.put_bytes(Layout.PREFILL_JSON, result.prefill_data.to_json().encode(), "application/json")
    if result.decode_data is not None:
        store.put_bytes(Layout.DECODE_NPZ, result.decode_data.to_npz())
        store.put_bytes(Layout.DECODE_JSON, result.decode_data.to_json().encode(), "application/json")
    if report:
        from steps.report import write_report

        write_report(store, result, request)


def run_step(store: ArtifactStore, report: bool = True) -> Selection:
    """DAG step `fit`: request.json + plan.json + profiles/*.json -> selection.json, planner data,
    plots and report.html. A missing plan.json is rebuilt from the request."""
    from steps.plan import Plan, make_plan
    from steps.request import ProfileRequest
    from steps.store import Layout, read_model

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    plan = read_model(store, Layout.PLAN, Plan) if store.exists(Layout.PLAN) else make_plan(request)
    profiles = load_profiles(store)
    result = fit_profiles(request, plan, profiles)
    write_outputs(store, result, request, report=report)
    return result.selection
