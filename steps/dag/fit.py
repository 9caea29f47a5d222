"""DAG step `fit`: choose the deployment (aggregated, or x prefill + y decode engines) under the SLA.

Inputs (from the run's store): request.json, plan.json and every profiles/<id>.json.
Outputs: selection.json (the recommended deployment and the best of the other serving mode, the
engines and the numbers behind them, Pareto fronts, why every other candidate lost, the nearest
achievable SLA when a target cannot be met, engine counts), the planner data of the chosen engines
(prefill/raw_data.npz, decode/raw_data.npz, prefill_raw_data.json, decode_raw_data.json),
plots/*.png and report.html.

Whole deployments within the GPU budget are built and ranked by `slaprof.steps.fitting.deployments` from each
candidate's operating points at the SLA's ISL/OSL: prefill engines under load (the profile's
`prefill_load` points, else its lone-prompt point), decode engines over concurrency (below), and
aggregated engines over concurrency (measured points, plus the highest concurrency within both
targets on the line between two of them).

Per-phase rules (Dynamo's profiler, made explicit), used for the Pareto fronts and when no
deployment fits the budget:
- prefill: among the candidates' points at the request's ISL that meet the TTFT target, the
  highest throughput per GPU; decode: likewise over all concurrencies at the request's context
  (isl + osl/2) under the ITL target. A profile without that exact ISL/context is interpolated
  with our fitted curves (`slaprof.steps.fitting.interpolate`).
- ties (equal throughput per GPU) go to the engine with fewer GPUs, then to lower latency;
- nothing meets a target: the lowest-latency point is chosen, a warning says so, and the
  nearest achievable SLA is reported;
- failed, infeasible and dropped candidates are listed with their reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.results import (
    CandidateProfile,
    CandidateVerdict,
    DecodeChoice,
    DecodeOption,
    DeploymentChoice,
    EngineGroup,
    ParetoPoint,
    PrefillChoice,
    PrefillOption,
    Replicas,
    Selection,
)
from slaprof.steps.fitting import deployments as dep
from slaprof.steps.fitting.calcheck import interval_checks
from slaprof.steps.fitting.confidence import Judge, estimated
from slaprof.steps.fitting.deployments import AggOption, PrefillLoad, Workload
from slaprof.steps.fitting.fit_result import FitResult
from slaprof.steps.fitting.interpolate import DecodeInterpolator, PrefillInterpolator
from slaprof.steps.fitting.planner_data import DecodePlannerData, PrefillPlannerData
from slaprof.steps.perf.intervals import Context

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import ArtifactStore
    from slaprof.steps.dag.plan import Plan

TIE_RTOL = 1e-6  # throughputs this close (relative) are a tie, settled by GPU count
DYNAMO_MIN_PREFILL_POINTS = 4  # the planner's interp1d(kind="cubic") needs four ISLs


# ---------------------------------------------------------------------------
# the lines Dynamo prints
# ---------------------------------------------------------------------------
def prefill_line(choice: PrefillChoice, band: str = "") -> str:
    """`band`: the estimate's interval after the number (` [80%: 131-224]`), empty for a measurement."""
    return (
        f"Suggested prefill {choice.candidate.label} (TTFT {choice.ttft_ms:.2f} ms{band}, "
        f"throughput {choice.thpt_per_gpu:.2f} tokens/s/GPU)"
    )


def decode_line(choice: DecodeChoice, band: str = "") -> str:
    return (
        f"Suggested decode {choice.candidate.label} (ITL {choice.itl_ms:.2f} ms{band}, "
        f"throughput {choice.thpt_per_gpu:.2f} tokens/s/GPU)"
    )


# ---------------------------------------------------------------------------
# options at the request's operating point
# ---------------------------------------------------------------------------
def prefill_options(profile: CandidateProfile, isl: int, interp: PrefillInterpolator | None) -> list[PrefillOption]:
    exact = [p for p in profile.prefill if p.isl == isl]
    if exact:
        p = exact[0]
        return [PrefillOption(candidate=profile.candidate, isl=isl, ttft_ms=p.ttft_ms, thpt_per_gpu=p.thpt_per_gpu)]
    if interp is None:
        return []
    ttft, thpt = interp.predict(isl)
    return [
        PrefillOption(
            candidate=profile.candidate, isl=isl, ttft_ms=float(ttft), thpt_per_gpu=float(thpt), interpolated=True
        )
    ]


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
    from slaprof.steps.dag.plan import decode_concurrencies

    context = isl + osl // 2
    cand, max_kv = profile.candidate, profile.max_kv_tokens
    exact = sorted((p for p in profile.decode if p.context == context), key=lambda p: p.concurrency)
    out = [
        DecodeOption(
            candidate=cand,
            context=context,
            concurrency=p.concurrency,
            kv_usage=p.kv_usage,
            itl_ms=p.itl_ms,
            thpt_per_gpu=p.thpt_per_gpu,
            max_kv_tokens=max_kv,
        )
        for p in exact
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
            DecodeOption(
                candidate=cand,
                context=context,
                concurrency=conc,
                kv_usage=min(1.0, conc * context / max_kv),
                itl_ms=float(itl),
                thpt_per_gpu=float(thpt),
                max_kv_tokens=max_kv,
                interpolated=True,
            )
        )
    return sorted(out, key=lambda o: o.concurrency)


def prefill_loads(profile: CandidateProfile, isl: int, lone: Sequence[PrefillOption]) -> list[PrefillLoad]:
    """The candidate's prefill engine under load at `isl`: its `prefill_load` points there, and the
    lone-prompt option (one prompt per attention-DP rank) unless a load point has that load."""
    cand = profile.candidate
    points = sorted((p for p in profile.prefill_load if p.isl == isl), key=lambda p: p.concurrency)
    loads = [PrefillLoad(cand, p.concurrency, p.ttft_ms, p.thpt_per_gpu) for p in points]
    if not any(p.concurrency == cand.attn_dp for p in points):
        loads += [PrefillLoad(cand, cand.attn_dp, o.ttft_ms, o.thpt_per_gpu, o.interpolated) for o in lone]
    return sorted(loads, key=lambda p: p.concurrency)


def _crossing(lo: float, hi: float, c_lo: int, c_hi: int, target: float) -> float:
    """Concurrency where a quantity linear between (c_lo, lo) and (c_hi, hi) reaches `target`."""
    if hi <= target:
        return float(c_hi)
    if lo > target:
        return float(c_lo) - 1.0
    return c_lo + (target - lo) / (hi - lo) * (c_hi - c_lo)


def agg_options(profile: CandidateProfile, isl: int, osl: int, ttft_ms: float, itl_ms: float) -> list[AggOption]:
    """The aggregated candidate's points at (isl, osl), plus, between a point within both targets
    and the next one that is not, the highest concurrency within both (linear in concurrency)."""
    cand = profile.candidate
    points = sorted((p for p in profile.agg if p.isl == isl and p.osl == osl), key=lambda p: p.concurrency)
    out = [AggOption(cand, p.concurrency, p.ttft_ms, p.itl_ms, p.thpt_per_gpu) for p in points]
    for a, b in zip(points, points[1:]):
        if not (a.ttft_ms <= ttft_ms and a.itl_ms <= itl_ms) or (b.ttft_ms <= ttft_ms and b.itl_ms <= itl_ms):
            continue
        top = min(
            _crossing(a.ttft_ms, b.ttft_ms, a.concurrency, b.concurrency, ttft_ms),
            _crossing(a.itl_ms, b.itl_ms, a.concurrency, b.concurrency, itl_ms),
        )
        step = cand.attn_dp
        c = int(math.floor(top + 1e-9)) // step * step
        if a.concurrency < c < b.concurrency:
            f = (c - a.concurrency) / (b.concurrency - a.concurrency)
            out.append(
                AggOption(
                    cand,
                    c,
                    a.ttft_ms + f * (b.ttft_ms - a.ttft_ms),
                    a.itl_ms + f * (b.itl_ms - a.itl_ms),
                    a.thpt_per_gpu + f * (b.thpt_per_gpu - a.thpt_per_gpu),
                    True,
                )
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


def _replicas(chosen: DeploymentChoice, pg: EngineGroup, dg: EngineGroup, request_rate: float | None) -> Replicas:
    """A disaggregated deployment's engine counts: for the asked rate, else the rate it serves."""
    return Replicas(
        request_rate=request_rate or round(chosen.request_rate, 3),
        prefill=pg.replicas,
        decode=dg.replicas,
        total_gpus=chosen.gpus,
    )


def round_up_ms(value: float) -> float:
    """A latency target rounded up to 0.01 ms: a target below what the engine reaches would make the
    planner chase it forever."""
    return math.ceil(round(value * 100, 6)) / 100


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
        nearest[latency] = round_up_ms(value)
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


def _profile_verdicts(plan: Plan, profiles: dict[str, CandidateProfile]) -> tuple[list[CandidateVerdict], list[str]]:
    """Verdicts of candidates that never produced usable measurements, and the ids that did."""
    verdicts: list[CandidateVerdict] = []
    usable: list[str] = []
    planned = {p.id: p for p in plan.candidates}
    for cid in [*planned, *(cid for cid in profiles if cid not in planned)]:
        pc = planned.get(cid)
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


def _workload(request: ProfileRequest, plan: Plan) -> Workload:
    """The SLA, the budget and the disaggregated fixed costs (KV transfer, first decode step)."""
    from slaprof.steps.perf.constants import constants_for
    from slaprof.steps.perf.roofline import FIRST_TOKEN_DECODE_STEPS, kv_transfer_ms

    sla = request.sla
    return Workload(
        isl=sla.isl,
        osl=sla.osl,
        ttft_ms=sla.ttft_ms,
        itl_ms=sla.itl_ms,
        gpu_budget=request.hardware.gpu_budget,
        request_rate=sla.request_rate,
        transfer_ms=kv_transfer_ms(plan.model, sla.isl, constants_for(request.backend)),
        first_token_steps=FIRST_TOKEN_DECODE_STEPS,
    )


def _role_verdict(
    cid: str,
    phase: str,
    own: list[DeploymentChoice],
    chosen: DeploymentChoice,
    w: Workload,
    no_points: str,
) -> CandidateVerdict:
    """A candidate's verdict in one role, from the best deployment that uses it in that role."""
    role_name = {"prefill": "prefill engine", "decode": "decode engine", "agg": "aggregated engine"}[phase]
    mine_in_chosen = [e for e in chosen.engines if e.candidate.id == cid and e.role == phase]
    if mine_in_chosen:
        how = "meets the SLA with the highest rank" if chosen.meets_sla else "nearest to the SLA (none meets it)"
        if mine_in_chosen[0].interpolated:
            how += f"; its operating point (concurrency {mine_in_chosen[0].concurrency}) is interpolated"
        reason = (
            f"{role_name} of the recommended deployment, {chosen.shape} on {chosen.gpus} GPUs "
            f"({chosen.thpt_per_gpu:.1f} tokens/s/GPU, TTFT {chosen.ttft_ms:.1f} ms, ITL {chosen.itl_ms:.2f} ms): {how}"
        )
        return CandidateVerdict(candidate_id=cid, phase=phase, status="chosen", reason=reason)
    mine = dep.best(own, w)
    if mine is None:
        reason = no_points
    else:
        reason = (
            f"its best deployment as {role_name}, {mine.shape} on {mine.gpus} GPUs "
            f"({mine.thpt_per_gpu:.1f} tokens/s/GPU, TTFT {mine.ttft_ms:.1f} ms, ITL {mine.itl_ms:.2f} ms): "
            f"{dep.why_lost(mine, chosen, w)}"
        )
    return CandidateVerdict(candidate_id=cid, phase=phase, status="lost", reason=reason)


def _deployment_choices(
    chosen: DeploymentChoice, decode_by: dict[tuple[str, int], DecodeOption], isl: int, w: Workload
) -> tuple[PrefillChoice | None, DecodeChoice | None]:
    """The Dynamo-style per-engine choices of a disaggregated deployment."""
    p, d = chosen.group("prefill"), chosen.group("decode")
    if p is None or d is None:
        return None, None
    assert p.ttft_ms is not None
    prefill = PrefillChoice(
        candidate=p.candidate,
        isl=isl,
        ttft_ms=p.ttft_ms,
        thpt_per_gpu=p.thpt_per_gpu,
        meets_sla=chosen.ttft_ms <= w.ttft_ms,
        interpolated=p.interpolated,
        concurrency=p.concurrency,
    )
    decode = DecodeChoice.of(decode_by[(d.candidate.id, d.concurrency)], meets_sla=chosen.itl_ms <= w.itl_ms)
    return prefill, decode


def _job(request: ProfileRequest, plan: Plan, w: Workload) -> dict[str, Any]:
    """What a selection says of the job it answers, fit's own or a person's pick alike (the context
    the plan assumed reaches the DGD's worker arguments through it)."""
    return {
        "model": plan.model.name,
        "backend": request.backend,
        "gpu": plan.gpu,
        "isl": w.isl,
        "osl": w.osl,
        "ttft_ms": request.sla.ttft_ms,
        "itl_ms": request.sla.itl_ms,
        "max_context": plan.grid.max_context,
        "precision": plan.precision,
        "serving": request.serving,
        "gpu_budget": w.gpu_budget,
    }


def fit_profiles(request: ProfileRequest, plan: Plan, profiles: Sequence[CandidateProfile]) -> FitResult:
    """Select the deployment for `request`'s SLA and GPU budget from measured `profiles`."""
    from slaprof.steps.dag.plan import context_problem

    sla = request.sla
    isl, osl, context = sla.isl, sla.osl, sla.isl + sla.osl // 2
    # `select` with a new --isl/--osl re-targets a plan made for other lengths
    too_long = context_problem(isl, osl, plan.model, request.engine.max_context_length)
    if too_long:
        raise UserError(too_long)
    # selection judges estimated latencies at the request's confidence; the planner gets the profiles as they are
    judge = Judge(Context(request.backend, isl, plan.model.structure), sla.confidence)
    raw = {p.id: p for p in profiles}
    by_id = {p.id: judge.profile(p) for p in profiles}
    order = {p.id: i for i, p in enumerate(plan.candidates)}

    def band(phase: str, cand: Candidate, concurrency: int, judged: float) -> str:
        return judge.label(judged, phase, cand, concurrency) if estimated(raw[cand.id]) else ""

    granularity = plan.grid.decode_granularity
    warnings: list[str] = []
    if request.sweep.dry_run:
        warnings.append("Dry run: every number is an offline estimate; nothing was measured")
    verdicts, usable = _profile_verdicts(plan, by_id)
    for v in verdicts:
        if v.status == "failed":
            warnings.append(f"{v.candidate_id} failed: {v.reason}")
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
    w = _workload(request, plan)
    disagg_ids = [cid for cid in usable if not by_id[cid].candidate.is_agg]
    agg_ids = [cid for cid in usable if by_id[cid].candidate.is_agg]

    p_opts: list[PrefillOption] = []
    d_opts: list[DecodeOption] = []
    loads: list[PrefillLoad] = []
    a_opts: list[AggOption] = []
    p_by: dict[str, list[PrefillOption]] = {}
    d_by: dict[str, list[DecodeOption]] = {}
    pre_i: dict[str, PrefillInterpolator] = {}
    dec_i: dict[str, DecodeInterpolator] = {}
    for cid in disagg_ids:
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
        loads += prefill_loads(prof, isl, p_by[cid])
    a_by: dict[str, list[AggOption]] = {}
    for cid in agg_ids:
        a_by[cid] = agg_options(by_id[cid], isl, osl, sla.ttft_ms, sla.itl_ms)
        a_opts += a_by[cid]
        if not a_by[cid] and by_id[cid].agg:
            warnings.append(
                f"{cid} was measured at ISL/OSL {by_id[cid].agg[0].isl}/{by_id[cid].agg[0].osl}, not at the "
                f"request's {isl}/{osl}; profile it again for this workload"
            )

    evaluated = {"disagg": dep.disagg_deployments(loads, d_opts, w), "agg": dep.agg_deployments(a_opts, w)}
    bests = {mode: dep.best(found, w) for mode, found in evaluated.items()}
    chosen = dep.choose_mode(bests, w)
    profiled = {mode: request.serving in ("auto", mode) for mode in ("agg", "disagg")}

    nearest: dict[str, float] = {"ttft_ms": sla.ttft_ms, "itl_ms": sla.itl_ms}
    missed = False
    replicas = None
    alternative = None
    comparison = ""
    prefill_choice: PrefillChoice | None = None
    decode_choice: DecodeChoice | None = None
    recommendation: list[str] = []
    planner_source: tuple[CandidateProfile | None, CandidateProfile | None] = (None, None)
    if chosen is None:
        # no deployment fits the budget: each phase on its own, as Dynamo's profiler chooses
        if disagg_ids or not agg_ids:
            p_pick, p_met = _decide("prefill", p_opts, "ttft_ms", sla.ttft_ms, order, f"ISL {isl}", nearest, warnings)
            d_pick, d_met = _decide(
                "decode", d_opts, "itl_ms", sla.itl_ms, order, f"context {context}", nearest, warnings
            )
            missed = (p_pick is not None and not p_met) or (d_pick is not None and not d_met)
            prefill_choice = PrefillChoice.of(p_pick, meets_sla=p_met) if p_pick else None
            decode_choice = DecodeChoice.of(d_pick, meets_sla=d_met) if d_pick else None
            if p_pick is not None and d_pick is not None:
                warnings.append(
                    f"no deployment of a prefill and a decode engine fits the budget of {w.gpu_budget} GPUs "
                    "(--total-gpus); each phase is chosen on its own"
                )
            for cid in disagg_ids:
                verdicts.append(_prefill_verdict(cid, p_by[cid], p_pick, p_met, sla.ttft_ms, isl))
                verdicts.append(_decode_verdict(cid, d_by[cid], d_pick, d_met, sla.itl_ms, context))
            if sla.request_rate and prefill_choice and decode_choice:
                replicas = replica_counts(sla.request_rate, isl, osl, prefill_choice, decode_choice)
            if prefill_choice:
                pc = prefill_choice
                recommendation.append(prefill_line(pc, band("ttft", pc.candidate, pc.concurrency, pc.ttft_ms)))
            if decode_choice:
                dc = decode_choice
                recommendation.append(decode_line(dc, band("itl", dc.candidate, dc.concurrency, dc.itl_ms)))
            planner_source = (
                raw[p_pick.candidate.id] if p_pick else None,
                raw[d_pick.candidate.id] if d_pick else None,
            )
        if agg_ids and not a_opts:
            warnings.append("No aggregated results produced; no aggregated recommendation")
    else:
        other_mode = "agg" if chosen.mode == "disagg" else "disagg"
        alternative = bests[other_mode]
        if alternative is not None:
            alternative = alternative.model_copy(update={"verdict": dep.why_lost(alternative, chosen, w)})
        other_name = dep.MODE_NAMES[other_mode]
        if not profiled[other_mode]:
            absent = f"{other_name} serving was not profiled (--serving {request.serving})"
        elif not (agg_ids if other_mode == "agg" else disagg_ids):
            absent = f"no {other_name} candidate was profiled or produced results"
        else:
            absent = f"no {other_name} deployment fits {w.gpu_budget} GPUs"
        comparison = dep.comparison_line(chosen, alternative, absent, w)
        if not chosen.meets_sla:
            missed = True
            if chosen.ttft_ms > sla.ttft_ms:
                nearest["ttft_ms"] = round_up_ms(chosen.ttft_ms)
            if chosen.itl_ms > sla.itl_ms:
                nearest["itl_ms"] = round_up_ms(chosen.itl_ms)
            warnings.append(
                f"No deployment within {w.gpu_budget} GPUs satisfies the SLA (TTFT {sla.ttft_ms:g} ms, ITL "
                f"{sla.itl_ms:g} ms): the nearest is {chosen.shape} at TTFT {chosen.ttft_ms:.2f} ms, ITL "
                f"{chosen.itl_ms:.2f} ms, chosen anyway"
            )
        if w.request_rate and not chosen.serves_rate:
            warnings.append(
                f"no deployment within {w.gpu_budget} GPUs serves {w.request_rate:g} requests/s; the chosen one "
                f"serves {chosen.request_rate:.2f} (raise --total-gpus)"
            )
        decode_by = {(o.candidate.id, o.concurrency): o for o in d_opts}
        if chosen.mode == "disagg":
            prefill_choice, decode_choice = _deployment_choices(chosen, decode_by, isl, w)
            assert prefill_choice is not None and decode_choice is not None
            pg, dg = chosen.group("prefill"), chosen.group("decode")
            assert pg is not None and dg is not None
            replicas = _replicas(chosen, pg, dg, sla.request_rate)
            pc, dc = prefill_choice, decode_choice
            recommendation = [
                prefill_line(pc, band("ttft", pc.candidate, pc.concurrency, pc.ttft_ms)),
                decode_line(dc, band("itl", dc.candidate, dc.concurrency, dc.itl_ms)),
            ]
            planner_source = (raw[pg.candidate.id], raw[dg.candidate.id])
        else:
            ag = chosen.engines[0]
            assert ag.ttft_ms is not None and ag.itl_ms is not None
            recommendation = [
                dep.agg_line(
                    chosen,
                    band("ttft", ag.candidate, ag.concurrency, ag.ttft_ms),
                    band("itl", ag.candidate, ag.concurrency, ag.itl_ms),
                )
            ]
            agg_profile = raw[ag.candidate.id]
            planner_source = (agg_profile, agg_profile)
        recommendation += [dep.deployment_line(chosen, w), comparison]
        for cid in disagg_ids:
            for role, no_points in (
                ("prefill", f"no prefill points at ISL {isl}, or no deployment with it fits {w.gpu_budget} GPUs"),
                ("decode", f"no decode points at context {context}, or no deployment with it fits {w.gpu_budget} GPUs"),
            ):
                own = [o for o in evaluated["disagg"] if (g := o.group(role)) is not None and g.candidate.id == cid]
                verdicts.append(_role_verdict(cid, role, own, chosen, w, no_points))
        for cid in agg_ids:
            own = [o for o in evaluated["agg"] if o.engines[0].candidate.id == cid]
            no_points = f"no points at ISL {isl} / OSL {osl}, or it does not fit {w.gpu_budget} GPUs"
            verdicts.append(_role_verdict(cid, "agg", own, chosen, w, no_points))

    p_src, d_src = planner_source
    prefill_data = PrefillPlannerData.from_profile(p_src) if p_src is not None and p_src.prefill else None
    decode_data = (
        DecodePlannerData.from_profile(d_src) if d_src is not None and d_src.decode and d_src.max_kv_tokens else None
    )
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
        **_job(request, plan, w),
        prefill=prefill_choice,
        decode=decode_choice,
        prefill_pareto=pareto_front([(o.candidate.id, o.ttft_ms, o.thpt_per_gpu, 1) for o in p_opts]),
        decode_pareto=pareto_front([(o.candidate.id, o.itl_ms, o.thpt_per_gpu, o.concurrency) for o in d_opts]),
        verdicts=verdicts,
        replicas=replicas,
        nearest_sla=nearest if missed else None,
        warnings=warnings,
        recommendation=recommendation,
        deployment=chosen,
        alternative=alternative,
        comparison=comparison,
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
        agg_options=a_opts,
        deployments=evaluated,
        judge=judge,
        interval_checks=interval_checks(request, plan, profiles),
    )


def fit_pick(
    request: ProfileRequest, plan: Plan, profiles: dict[str, CandidateProfile], ids: tuple[str, ...]
) -> FitResult:
    """fit's result for engines a person picked: `(aggregated id,)` or `(prefill id, decode id)`.

    The operating points, engine counts and lines are what fit computes for those engines alone."""
    sla = request.sla
    isl, osl = sla.isl, sla.osl
    w = _workload(request, plan)
    warnings: list[str] = []
    for cid in ids:
        if cid not in profiles or profiles[cid].status != "ok":
            known = ", ".join(sorted(c for c, p in profiles.items() if p.status == "ok")) or "none"
            raise UserError(f"picked candidate {cid!r} has no successful profile; measured: {known}")
    prefill_choice = decode_choice = None
    replicas = None
    if len(ids) == 1:
        prof = profiles[ids[0]]
        chosen = dep.best(dep.agg_deployments(agg_options(prof, isl, osl, sla.ttft_ms, sla.itl_ms), w), w)
        planner_source = (prof, prof)
        lines = [dep.agg_line(chosen)] if chosen is not None else []
    else:
        pre, dec = profiles[ids[0]], profiles[ids[1]]
        pi, _ = _interpolators(pre, warnings)
        _, di = _interpolators(dec, warnings)
        d_opts = decode_options(dec, isl, osl, plan.grid.decode_granularity, di, sla.itl_ms)
        loads = prefill_loads(pre, isl, prefill_options(pre, isl, pi))
        chosen = dep.best(dep.disagg_deployments(loads, d_opts, w), w)
        planner_source = (pre, dec)
        lines = []
        if chosen is not None:
            decode_by = {(o.candidate.id, o.concurrency): o for o in d_opts}
            prefill_choice, decode_choice = _deployment_choices(chosen, decode_by, isl, w)
            pg, dg = chosen.group("prefill"), chosen.group("decode")
            assert prefill_choice and decode_choice and pg and dg
            replicas = _replicas(chosen, pg, dg, sla.request_rate)
            lines = [prefill_line(prefill_choice), decode_line(decode_choice)]
    if chosen is None:
        raise UserError(
            f"no deployment of the pick {'+'.join(ids)} fits the budget of {w.gpu_budget} GPUs or has an "
            "operating point; resume with another choice"
        )
    p_src, d_src = planner_source
    selection = Selection(
        **_job(request, plan, w),
        prefill=prefill_choice,
        decode=decode_choice,
        replicas=replicas,
        warnings=warnings,
        recommendation=[*lines, dep.deployment_line(chosen, w)],
        deployment=chosen,
    )
    return FitResult(
        selection=selection,
        prefill_data=PrefillPlannerData.from_profile(p_src) if p_src.prefill else None,
        decode_data=DecodePlannerData.from_profile(d_src) if d_src.decode and d_src.max_kv_tokens else None,
        profiles=[profiles[c] for c in ids],
    )


# ---------------------------------------------------------------------------
# store I/O
# ---------------------------------------------------------------------------
def load_profiles(store: ArtifactStore, prefix: str = "profiles/") -> list[CandidateProfile]:
    """Every profile under `prefix`; an unreadable file is a UserError naming it."""
    from pydantic import ValidationError

    from slaprof.steps.core.store import Layout, read_model

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
    from slaprof.steps.core.store import Layout, write_model

    write_model(store, Layout.SELECTION, result.selection)
    if result.prefill_data is not None:
        store.put_bytes(Layout.PREFILL_NPZ, result.prefill_data.to_npz())
        store.put_bytes(Layout.PREFILL_JSON, result.prefill_data.to_json().encode(), "application/json")
    if result.decode_data is not None:
        store.put_bytes(Layout.DECODE_NPZ, result.decode_data.to_npz())
        store.put_bytes(Layout.DECODE_JSON, result.decode_data.to_json().encode(), "application/json")
    if report:
        from slaprof.steps.fitting.report import write_report

        write_report(store, result, request)


def load_plan(store: ArtifactStore, request: ProfileRequest) -> Plan:
    """The run's plan.json; a missing one is rebuilt from the request."""
    from slaprof.steps.core.store import Layout, read_model
    from slaprof.steps.dag.plan import Plan, make_plan

    return read_model(store, Layout.PLAN, Plan) if store.exists(Layout.PLAN) else make_plan(request)


def run_step(store: ArtifactStore, report: bool = True) -> Selection:
    """DAG step `fit`: request.json + plan.json + profiles/*.json -> selection.json, planner data,
    plots and report.html. A missing plan.json is rebuilt from the request."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import Layout, read_model

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    result = fit_profiles(request, load_plan(store, request), load_profiles(store))
    write_outputs(store, result, request, report=report)
    return result.selection
