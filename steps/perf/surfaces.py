"""Offline bench surfaces (DAG step `bench` with method=offline): no engine, estimates only.

Input: ProfileRequest, Plan (grids, model, GPU, backend) and one Candidate.
Output: CandidateProfile with the points the online bench measures, and more where estimating
them costs nothing:
  prefill       one point per `plan.grid.prefill_isls`, one request (DEP: one per attention-DP rank);
  decode        for each `plan.grid.decode_isls`, the concurrencies `decode_concurrencies(...)` at
                context isl + osl/2;
  prefill_load  (disaggregated candidates) the SLA's ISL with 1 to 64 prompts per attention-DP
                rank prefilled together, as a busy prefill engine runs them;
  agg           (aggregated candidates) the SLA's ISL/OSL over a dense geometric concurrency sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import (
    AggPoint,
    CandidateProfile,
    DecodePoint,
    PrefillLoadPoint,
    PrefillPoint,
    Provenance,
    utc_now,
)
from slaprof.steps.perf import PerfEstimator, get_estimator
from slaprof.steps.specs.gpus import get_gpu

# prompts in flight per attention-DP rank of a busy prefill engine
PREFILL_LOAD_PER_RANK = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
OFFLINE_AGG_POINTS = 40  # an estimate costs microseconds: sweep densely

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.dag.plan import Plan


def estimator_for(request: ProfileRequest, plan: Plan, candidate: Candidate, anchored: bool = False) -> PerfEstimator:
    """The request's estimator. AI Configurator answers every point of a surface (one session per
    candidate, a few ms a point); with `anchored` it is asked only at anchor points, the built-in
    model's shape filling the rest (`anchored.py`). The built-in model runs the engine with the step
    budget the bench and the DGD give it (`Plan.step_tokens`)."""
    gpu = get_gpu(plan.gpu)
    step_tokens = plan.step_tokens(candidate)
    if request.sweep.estimator != "aic":
        return get_estimator(plan.model, gpu, plan.backend, candidate, request.sweep.estimator, step_tokens)
    sw = request.sweep
    exact = get_estimator(
        plan.model,
        gpu,
        plan.backend,
        candidate,
        "aic",
        system=sw.aic_system or None,
        hf_id=sw.aic_hf_id or None,
        backend_version=sw.aic_backend_version or None,
    )
    if not anchored:
        return exact
    from slaprof.steps.perf.anchored import AnchoredEstimator

    return AnchoredEstimator(exact, get_estimator(plan.model, gpu, plan.backend, candidate, "builtin", step_tokens))


def _values(fn, *args) -> list[float]:
    """Call an estimator method on arrays when it is vectorised, else point by point."""
    try:
        out = fn(*(np.asarray(a) for a in args))
        if np.ndim(out) == 1:
            return [float(x) for x in out]
    except (TypeError, ValueError):
        pass
    return [float(fn(*(int(x) for x in row))) for row in zip(*args)]


def prefill_load_points(est: PerfEstimator, isl: int, candidate: Candidate, max_kv: int) -> list[PrefillLoadPoint]:
    """A prefill engine with `b` prompts in flight, closed loop: each prompt waits for the batch it
    is prefilled with, so TTFT is the batch's prefill time and the engine runs b * isl tokens per TTFT."""
    dp, gpus = candidate.attn_dp, candidate.num_gpus
    batches = [dp * k for k in PREFILL_LOAD_PER_RANK if dp * k * isl <= max(max_kv, dp * isl)]
    ttfts = _values(est.prefill_ttft_ms, [isl] * len(batches), batches)
    return [
        PrefillLoadPoint(isl=isl, concurrency=b, ttft_ms=t, thpt_per_gpu=isl * b / (t / 1e3) / gpus)
        for b, t in zip(batches, ttfts)
    ]


def agg_points(est: PerfEstimator, isl: int, osl: int, candidate: Candidate, max_kv: int) -> list[AggPoint]:
    """The aggregated engine over a concurrency sweep at (isl, osl)."""
    from slaprof.steps.dag.plan import agg_concurrencies

    concurrencies = agg_concurrencies(max_kv, isl, osl, OFFLINE_AGG_POINTS, candidate.attn_dp)
    sweep = getattr(est, "agg_sweep", None)
    values = sweep(isl, osl, concurrencies) if sweep else [est.agg(isl, osl, c) for c in concurrencies]
    return [
        AggPoint(isl=isl, osl=osl, concurrency=c, ttft_ms=v.ttft_ms, itl_ms=v.itl_ms, thpt_per_gpu=v.thpt_per_gpu)
        for c, v in zip(concurrencies, values)
    ]


def offline_profile(
    request: ProfileRequest, plan: Plan, candidate: Candidate, estimator: PerfEstimator | None = None
) -> CandidateProfile:
    """Estimated prefill and decode surfaces of `candidate`, as the online bench would measure them.

    `estimator` defaults to the one the request's sweep names; one that answers a point at a
    time (AI Configurator) works as well as a vectorised one.
    """
    from slaprof.steps.dag.plan import decode_concurrencies

    started = utc_now()
    est = estimator or estimator_for(request, plan, candidate)
    provenance = Provenance(
        method="offline",
        estimator=request.sweep.estimator,
        backend=plan.backend,
        started_at=started,
        request_key=plan.request_key,
    )
    max_kv = int(est.max_kv_tokens())
    if max_kv <= 0:
        provenance.finished_at = utc_now()
        return CandidateProfile(
            candidate=candidate,
            status="infeasible",
            max_kv_tokens=0,
            provenance=provenance,
            reason="no GPU memory left for the KV cache after weights and runtime reserve",
        )
    grid, gpus, dp = plan.grid, candidate.num_gpus, candidate.attn_dp

    isls = [int(x) for x in grid.prefill_isls]
    ttfts = _values(est.prefill_ttft_ms, isls, [dp] * len(isls))
    prefill = [
        PrefillPoint(isl=isl, ttft_ms=t, thpt_per_gpu=isl * dp / (t / 1e3) / gpus) for isl, t in zip(isls, ttfts)
    ]

    osl = grid.decode_osl
    rows: list[tuple[int, int, int]] = []  # (isl, context, concurrency)
    for isl in grid.decode_isls:
        context = int(isl) + osl // 2
        for conc in decode_concurrencies(max_kv, int(isl), osl, grid.decode_granularity, dp):
            rows.append((int(isl), context, conc))
    itls = _values(est.decode_itl_ms, [r[2] for r in rows], [r[1] for r in rows]) if rows else []
    decode = [
        DecodePoint(
            isl=isl,
            context=ctx,
            concurrency=conc,
            kv_usage=min(1.0, conc * ctx / max_kv),
            itl_ms=itl,
            thpt_per_gpu=conc / (itl / 1e3) / gpus,
        )
        for (isl, ctx, conc), itl in zip(rows, itls)
    ]
    sla = request.sla
    loads: list[PrefillLoadPoint] = []
    agg: list[AggPoint] = []
    if candidate.is_agg:
        agg = agg_points(est, sla.isl, sla.osl, candidate, max_kv)
    else:
        loads = prefill_load_points(est, sla.isl, candidate, max_kv)
    provenance.finished_at = utc_now()
    status, reason = "ok", ""
    if not decode:
        status, reason = "infeasible", f"KV cache ({max_kv:,} tokens) holds no request of the decode sweep"
    elif candidate.is_agg and not agg:
        status, reason = "infeasible", f"KV cache ({max_kv:,} tokens) holds no request of ISL {sla.isl}"
    return CandidateProfile(
        candidate=candidate,
        status=status,
        reason=reason,
        max_kv_tokens=max_kv,
        prefill=prefill,
        decode=decode,
        prefill_load=loads,
        agg=agg,
        provenance=provenance,
    )
