"""DAG step `plan`: model-size detection, candidate mappings and the sweep grids.

Input: ProfileRequest. Output: Plan (plan.json), whose runnable candidate ids feed the
bench fan-out.

Minimum GPUs per engine: the smallest power of two on which weights/GPU + runtime reserve
(activations, CUDA graphs, NCCL) + the KV cache of one request at the engine's full context
fit in the engine's memory budget. Dynamo uses ceil(weights / 0.9 / memory), which admits
engines that then refuse to start (vLLM stops when the KV cache cannot hold max_model_len).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.engines import get_backend
from slaprof.steps.engines.base import batched_tokens
from slaprof.steps.perf.memory import kv_capacity_tokens, weight_bytes_per_gpu
from slaprof.steps.specs.gpus import GIB, get_gpu
from slaprof.steps.specs.models import EnginePrecision, ModelInfo, apply_overrides, engine_precision, load_model_info

if TYPE_CHECKING:
    from slaprof.steps.core.store import ArtifactStore

DECODE_MAX_CONCURRENCY = 2000
PREFILL_MIN_ISL = 100
PREFILL_HEADROOM = 512  # leave room for the chat template and a few output tokens


class PlannedCandidate(BaseModel):
    candidate: Candidate
    status: Literal["runnable", "dropped"]
    reason: str = ""
    weight_gib_per_gpu: float
    kv_tokens_estimate: int = Field(..., description="estimated KV capacity of the engine, tokens")

    @property
    def id(self) -> str:
        return self.candidate.id


class SweepGrid(BaseModel):
    max_context: int
    prefill_isls: list[int]
    decode_isls: list[int]  # prompt length of each decode sweep; context = isl + osl/2
    decode_osl: int
    decode_granularity: int


class Plan(BaseModel):
    model: ModelInfo  # as the engines run it: the request's quantization and KV dtype applied
    # what the engines must be told for that (the overrides the checkpoint does not declare); the bench's
    # engines and the DGD's workers both get it
    precision: EnginePrecision = Field(default_factory=EnginePrecision)
    gpu: str
    backend: str
    min_gpus: int
    max_gpus: int
    candidates: list[PlannedCandidate]
    grid: SweepGrid
    request_key: str

    def step_tokens(self, cand: Candidate) -> int | None:
        """Tokens per engine step the plan fixes for `cand`: whole prompts of the grid for a
        disaggregated candidate (`batched_tokens`), None for an aggregated one, which keeps its engine's
        own budget as it would serve. The bench's engines, the offline estimate and the DGD's prefill
        workers all use it."""
        return None if cand.is_agg else batched_tokens(self.grid.max_context)

    def runnable(self) -> list[Candidate]:
        return [p.candidate for p in self.candidates if p.status == "runnable"]

    def runnable_ids(self) -> list[str]:
        return [c.id for c in self.runnable()]

    def get(self, candidate_id: str) -> PlannedCandidate:
        for p in self.candidates:
            if p.id == candidate_id:
                return p
        raise UserError(
            f"candidate {candidate_id!r} is not in the plan; planned: {', '.join(p.id for p in self.candidates)}"
        )


def _powers_of_two(lo: int, hi: int) -> list[int]:
    out, n = [], 1
    while n <= hi:
        if n >= lo:
            out.append(n)
        n *= 2
    return out


def divisibility_problem(model: ModelInfo, cand: Candidate) -> str | None:
    """Why the model's shapes cannot be split this way, or None."""
    tp = cand.attn_tp
    if model.num_attention_heads % tp:
        return f"{model.num_attention_heads} attention heads are not divisible by TP {tp}"
    if not model.is_mla and model.num_kv_heads % tp and tp % model.num_kv_heads:
        return f"{model.num_kv_heads} KV heads neither divide nor are divisible by TP {tp}"
    block = model.quant_block_size or 1
    if not model.is_moe or model.num_dense_layers:
        if model.intermediate_size % tp or (model.intermediate_size // tp) % block:
            return f"intermediate size {model.intermediate_size} does not split by TP {tp} into {block}-aligned shards"
    if model.is_moe:
        if model.num_experts % cand.moe_ep:
            return f"{model.num_experts} experts are not divisible by EP {cand.moe_ep}"
        if cand.moe_tp > 1 and (
            model.moe_intermediate_size % cand.moe_tp or (model.moe_intermediate_size // cand.moe_tp) % block
        ):
            return f"expert intermediate size {model.moe_intermediate_size} does not split by TP {cand.moe_tp}"
    return None


def context_problem(isl: int, osl: int, model: ModelInfo, limit: int = 0) -> str | None:
    """Why requests of `isl` + `osl` tokens do not fit the model's context (or the engine's cap
    `limit`, 0 = none), or None: an engine refuses such requests, so no deployment can serve them."""
    need = isl + osl
    if need > model.max_context_length:
        return (
            f"ISL {isl} + OSL {osl} = {need} tokens exceed the context of {model.name} "
            f"({model.max_context_length} tokens); lower --isl or --osl"
        )
    if limit and need > limit:
        return (
            f"ISL {isl} + OSL {osl} = {need} tokens exceed --max-context-length {limit} (the engine's context); "
            f"raise it (the model allows {model.max_context_length}) or lower --isl or --osl"
        )
    return None


def engine_max_context(model: ModelInfo, request: ProfileRequest) -> int:
    limit = request.engine.max_context_length
    return min(model.max_context_length, limit) if limit else model.max_context_length


def _mapping_kinds(model: ModelInfo, size: int) -> list[str]:
    """TP for dense models; TEP, DEP and DTP (attention DP x experts TP) for MoE (on one GPU they
    are all the same engine: tp1)."""
    return ["tep", "dep", "dtp"] if model.is_moe and size > 1 else ["tp"]


def _fits(model: ModelInfo, request: ProfileRequest, cand: Candidate, max_ctx: int) -> tuple[int, str]:
    kv = kv_capacity_tokens(model, get_gpu(request.hardware.gpu), cand, request.backend)
    per_rank = kv // cand.attn_dp
    if kv <= 0:
        return kv, "weights and runtime reserve exceed the GPU memory budget"
    if per_rank < max_ctx:
        return kv, (
            f"KV cache holds {per_rank:,} tokens per rank, less than one full-length request "
            f"({max_ctx:,} tokens); lower engine.max_context_length or use more GPUs"
        )
    return kv, ""


def min_gpus_for(model: ModelInfo, request: ProfileRequest, max_ctx: int) -> int:
    """Smallest power-of-two engine that holds the weights plus one full-length request."""
    for n in _powers_of_two(1, 1024):
        cand = Candidate(kind=_mapping_kinds(model, n)[0], size=n)
        if not _fits(model, request, cand, max_ctx)[1]:
            return n
    raise UserError(f"model {model.name!r} does not fit even 1024 {request.hardware.gpu} GPUs")


def sweep_grid(model: ModelInfo, request: ProfileRequest, max_ctx: int) -> SweepGrid:
    sla, sw = request.sla, request.sweep
    top = max(PREFILL_MIN_ISL + 1, max_ctx - PREFILL_HEADROOM)
    prefill = {int(round(x)) for x in np.linspace(PREFILL_MIN_ISL, top, sw.prefill_granularity + 1)}
    if sla.isl <= top:
        prefill.add(sla.isl)
    decode_top = max(PREFILL_MIN_ISL + 1, max_ctx - sla.osl)
    decode = {int(round(x)) for x in np.linspace(PREFILL_MIN_ISL, decode_top, sw.decode_granularity)}
    if sla.isl <= decode_top:
        decode.add(sla.isl)
    return SweepGrid(
        max_context=max_ctx,
        prefill_isls=sorted(prefill),
        decode_isls=sorted(decode),
        decode_osl=sla.osl,
        decode_granularity=sw.decode_granularity,
    )


def decode_concurrencies(max_kv_tokens: int, isl: int, osl: int, granularity: int, attn_dp: int = 1) -> list[int]:
    """Evenly spaced concurrencies up to what the KV cache holds, each a multiple of attn_dp."""
    most = min(max_kv_tokens // (isl + osl), DECODE_MAX_CONCURRENCY)
    most = (most // attn_dp) * attn_dp
    if most < attn_dp:
        return []
    points = np.linspace(attn_dp, most, granularity)
    return sorted({max(attn_dp, int(round(p / attn_dp)) * attn_dp) for p in points})


def agg_concurrencies(max_kv_tokens: int, isl: int, osl: int, points: int, attn_dp: int = 1) -> list[int]:
    """Concurrencies of an aggregated engine's sweep: geometric from one request per attention-DP
    rank up to what its KV cache holds (a running request holds isl + osl/2 tokens), multiples of
    attn_dp. The SLA-meeting loads of an aggregated engine sit at the low end, where a geometric
    grid is dense; beyond the KV cache requests only queue."""
    most = min(int(max_kv_tokens // (isl + osl / 2.0)), DECODE_MAX_CONCURRENCY)
    most = (most // attn_dp) * attn_dp
    if most < attn_dp:
        return []
    steps = np.geomspace(attn_dp, most, max(2, points))
    return sorted({max(attn_dp, int(round(c / attn_dp)) * attn_dp) for c in steps} | {most})


def _planned(model: ModelInfo, request: ProfileRequest, cand: Candidate, max_ctx: int) -> PlannedCandidate:
    weights = weight_bytes_per_gpu(model, cand) / GIB
    reason = divisibility_problem(model, cand)
    kv = 0
    if reason is None:
        kv, reason = _fits(model, request, cand, max_ctx)
    return PlannedCandidate(
        candidate=cand,
        status="dropped" if reason else "runnable",
        reason=reason or "",
        weight_gib_per_gpu=round(weights, 2),
        kv_tokens_estimate=max(kv, 0),
    )


def _over_budget(planned: list[PlannedCandidate], budget: int) -> None:
    """Drop what cannot be part of a deployment within `budget` GPUs: an aggregated engine larger
    than the budget, a disaggregated engine that leaves no room for the smallest engine of the
    other phase."""
    smallest = min((p.candidate.num_gpus for p in planned if p.status == "runnable"), default=0)
    for p in planned:
        n = p.candidate.num_gpus
        if p.status != "runnable":
            continue
        if p.candidate.is_agg and n > budget:
            p.status, p.reason = "dropped", f"needs {n} GPUs, more than the budget of {budget} (--total-gpus)"
        elif not p.candidate.is_agg and n + smallest > budget:
            p.status, p.reason = (
                "dropped",
                f"disaggregated: {n} GPUs plus at least {smallest} for the other phase exceed the budget "
                f"of {budget} (--total-gpus)",
            )


def make_plan(request: ProfileRequest, model: ModelInfo | None = None) -> Plan:
    """Candidates (runnable and dropped, with reasons) and grids for `request`.

    Disaggregated candidates (`tp4`) are measured as prefill and decode engines; aggregated ones
    (`agg-tp4`, the same mappings) as one engine serving both phases. `request.serving` says which
    are planned; the GPU budget drops engines no deployment within it could use."""
    declared = model or load_model_info(request.model)
    engine = request.engine
    precision = engine_precision(declared, engine.quantization, engine.kv_cache_dtype)
    get_backend(request.backend).precision_args(precision)  # refused now, not dropped from the DGD later
    model = apply_overrides(declared, engine.quantization, engine.kv_cache_dtype)
    problem = context_problem(request.sla.isl, request.sla.osl, model, request.engine.max_context_length)
    if problem:
        raise UserError(problem)
    gpu = get_gpu(request.hardware.gpu)
    max_ctx = engine_max_context(model, request)
    hw = request.hardware
    budget = hw.gpu_budget
    auto_min = min_gpus_for(model, request, max_ctx)
    lo = hw.min_gpus_per_engine or auto_min
    hi = hw.max_gpus_per_engine or max(hw.gpus_per_node, lo)
    if lo > hi:
        raise UserError(
            f"model needs at least {lo} {gpu.name} GPUs per engine but max_gpus_per_engine is {hi}; "
            "raise --max-num-gpus-per-engine, use a GPU with more memory, or quantize (--quantization fp8)"
        )
    if lo > budget:
        raise UserError(
            f"model needs at least {lo} {gpu.name} GPUs per engine but the deployment may use {budget} "
            f"(--total-gpus, default one node of {hw.gpus_per_node}); raise --total-gpus to allow "
            "multi-node deployments, use a GPU with more memory, or quantize (--quantization fp8)"
        )
    servings = ["disagg", "agg"] if request.serving == "auto" else [request.serving]
    planned: list[PlannedCandidate] = []
    for serving in servings:
        # below the automatic minimum, list the sizes as dropped so users see why
        for n in _powers_of_two(hw.min_gpus_per_engine or 1, hi):
            for kind in _mapping_kinds(model, n):
                cand = Candidate(kind=kind, size=n, serving=serving)
                planned.append(_planned(model, request, cand, max_ctx))
    _over_budget(planned, budget)
    if not any(p.status == "runnable" for p in planned):
        why = "; ".join(f"{p.id}: {p.reason}" for p in planned) or "no GPU counts in range"
        raise UserError(f"no runnable candidate for {model.name} on {gpu.name}: {why}")
    return Plan(
        model=model,
        precision=precision,
        gpu=gpu.name,
        backend=request.backend,
        min_gpus=lo,
        max_gpus=hi,
        candidates=planned,
        grid=sweep_grid(model, request, max_ctx),
        request_key=request.measurement_key(),
    )


def run_step(store: ArtifactStore) -> Plan:
    """DAG step `plan`: request.json -> plan.json; returns the plan (its runnable ids are the fan-out list)."""
    from slaprof.steps.core.store import Layout, read_model, write_model

    request = read_model(store, Layout.REQUEST, ProfileRequest)
    plan = make_plan(request)
    write_model(store, Layout.PLAN, plan)
    return plan
