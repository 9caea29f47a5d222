"""Built-in performance model (offline `bench`, the simulated engine, `slaprof estimate`).

Input: ModelInfo, GpuSpec, backend, Candidate, calibrated constants (`constants.py`).
Output: the time of one engine step (prefill of a batch of prompts, or one decode step of a
batch at a mean context), KV capacity, and aggregated serving at a concurrency.

One step on the busiest GPU is a sum of rooflines, each max(FLOPs / achieved FLOP/s,
bytes / achieved HBM bandwidth):
  linear layers   2 * tokens * local params, weights read once per step (FP8/NVFP4 as declared)
  attention       causal QK^T and PV FLOPs (GQA: query heads; MLA: latent dims), KV bytes read
  routed experts  tokens * top-k / EP expert GEMMs; weights of the distinct experts the batch
                  touches, E * (1 - (1 - k/E)^tokens)
  LM head         one row per sequence in prefill, one per token in decode
plus TP all-reduces (2 per layer) or EP all-to-alls (dispatch and combine) over NVLink with a
latency per collective, a per-layer launch cost, a fixed per-step overhead, and the memory-bound
elementwise kernels (norms, activations, rotary, quantisation) that stream every token's
activations through HBM. Prefill steps also pay a per-layer launch and MoE-routing cost, run in
chunks of the engine's token budget, and each prompt pays a host-side cost per token and, under
load, an admission wait; a lone prompt pays only its GPU work and a fixed launch overhead.
Every function takes numpy arrays as well as scalars, so a whole surface is one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.perf.constants import BackendConstants, constants_for
from slaprof.steps.perf.mapping import Mapping
from slaprof.steps.perf.memory import kv_capacity_tokens
from slaprof.steps.specs.gpus import GpuSpec
from slaprof.steps.specs.models import BYTES_PER_KV, BYTES_PER_WEIGHT, ModelInfo

ACT_BYTES = 2.0  # activations travel as bf16
# In a disaggregated graph the decode worker emits the first token: the request joins its running
# batch once the step in flight ends (half a step on average) and the next step produces the token.
FIRST_TOKEN_DECODE_STEPS = 1.5
# What a lone request may pay on the host beyond its GPU work (HTTP, tokenise, schedule, sample,
# stream: tens of ms); the calibration keeps the fitted fixed cost per request below it, and the rest
# of what loaded requests pay is admission queueing (`admission_load`).
LONE_REQUEST_OVERHEAD_MAX_MS = 40.0


def kv_transfer_ms(model: ModelInfo, isl: float, constants: BackendConstants) -> float:
    """Moving a prompt's KV cache from the prefill to the decode worker."""
    return isl * model.kv_bytes_per_token() / (constants.kv_transfer_gbps * 1e9) * 1e3


def disagg_ttft_ms(prefill_ttft_ms: float, transfer_ms: float, decode_itl_ms: float) -> float:
    """TTFT a user of a disaggregated graph sees: the prefill engine's, the KV transfer, and the
    decode worker's first token."""
    return prefill_ttft_ms + transfer_ms + FIRST_TOKEN_DECODE_STEPS * decode_itl_ms


def compute_dtype(weight_dtype: str, gpu: GpuSpec) -> str:
    """The Tensor-Core math a weight format runs at: FP4 weights on a GPU without FP4 Tensor Cores
    are dequantised into bf16 math (W4A16); FP8 without FP8 cores likewise."""
    if weight_dtype == "fp4" and gpu.fp4_tflops <= gpu.fp8_tflops:
        return "bf16"
    if weight_dtype == "fp8" and gpu.fp8_tflops <= gpu.bf16_tflops:
        return "bf16"
    return weight_dtype


def admission_load(per_rank):
    """Doublings of the prompts in flight on a rank: a prompt arriving with others waits for the
    host to admit (tokenise, schedule, allocate) the ones ahead of it. In the measured rows the
    median TTFT left after prefill work grows by about the same amount per doubling of the load
    (vLLM: 23-31 ms from 2 to 64 prompts in flight); a lone prompt waits for nothing."""
    return np.log2(np.maximum(1.0, np.asarray(per_rank, dtype=float)))


@dataclass(frozen=True)
class AggEstimate:
    """Aggregated (prefill and decode on one engine) serving at a fixed concurrency."""

    ttft_ms: float
    itl_ms: float
    thpt_per_gpu: float  # output tokens/s/GPU


@dataclass(frozen=True)
class _Shapes:
    """Per-GPU work of one layer, computed once per (model, candidate)."""

    layers: int
    moe_layers: int
    dense_layers: int
    hidden: int
    w_bytes: float
    dense_params: float  # per GPU per layer: attention projections (+ dense MLP where present)
    moe_dense_params: float  # per GPU per MoE layer: attention + shared experts + router
    expert_params: float  # one routed expert's params on one GPU (split by moe_tp)
    experts: int
    experts_per_gpu: float
    top_k: int
    lm_head_params: float  # per GPU
    attn_prefill_coef: float  # per GPU per layer: FLOPs = coef * isl^2 per sequence
    attn_decode_flops_per_ctx: float  # per GPU per layer per sequence per context token
    kv_bytes_per_ctx: float  # per GPU per layer per sequence per context token
    act_elems_per_token: float  # per GPU per layer: activation width the memory-bound kernels stream


def _shapes(model: ModelInfo, cand: Mapping) -> _Shapes:
    tp = cand.attn_tp
    w_bytes = BYTES_PER_WEIGHT[model.weight_dtype]
    attn = model.attention_params_per_layer / tp
    hq = model.num_attention_heads / tp
    if model.is_mla:
        prefill_qk, prefill_v = model.qk_nope_head_dim + model.qk_rope_head_dim, model.v_head_dim
        # decode runs in the absorbed form: queries attend over the latent (+ rope) directly
        decode_qk, decode_v = (model.kv_lora_rank or 0) + model.qk_rope_head_dim, model.kv_lora_rank or 0
        kv_elems: float = model.kv_elements_per_token_per_layer()  # the latent is replicated on every TP rank
    else:
        prefill_qk = prefill_v = decode_qk = decode_v = model.head_dim
        kv_elems = model.kv_elements_per_token_per_layer() * max(1.0, model.num_kv_heads / tp) / model.num_kv_heads
    if model.is_moe:
        dense = attn + model.dense_mlp_params / tp
        moe_dense = attn + (model.shared_expert_params + model.router_params) / tp
        expert = model.expert_params / cand.moe_tp
        experts_per_gpu = model.num_experts / cand.moe_ep
    else:
        dense = attn + model.dense_mlp_params / tp
        moe_dense, expert, experts_per_gpu = 0.0, 0.0, 0.0
    # norms, residual adds, activation functions, rotary and input quantisation read and write the
    # hidden state (replicated on TP ranks) and the local MLP intermediate of every token
    if model.is_moe:
        inter = model.experts_per_token * model.moe_intermediate_size * cand.attn_dp / (cand.moe_tp * cand.moe_ep)
    else:
        inter = model.intermediate_size / tp
    return _Shapes(
        layers=model.num_layers,
        moe_layers=model.num_moe_layers,
        dense_layers=model.num_layers - model.num_moe_layers,
        hidden=model.hidden_size,
        w_bytes=w_bytes,
        dense_params=dense,
        moe_dense_params=moe_dense,
        expert_params=expert,
        experts=model.num_experts,
        experts_per_gpu=experts_per_gpu,
        top_k=model.experts_per_token,
        lm_head_params=model.vocab_size * model.hidden_size / tp,
        attn_prefill_coef=hq * (prefill_qk + prefill_v),  # 2*hq*(qk+v)*s^2, halved by the causal mask
        attn_decode_flops_per_ctx=2.0 * hq * (decode_qk + decode_v),
        kv_bytes_per_ctx=kv_elems * BYTES_PER_KV[model.kv_dtype],
        act_elems_per_token=model.hidden_size + inter,
    )


class BuiltinEstimator:
    """The calibrated roofline model for one (model, GPU, backend, mapping)."""

    name = "builtin"

    def __init__(
        self,
        model: ModelInfo,
        gpu: GpuSpec,
        backend: str,
        cand: Candidate | Mapping,
        constants: BackendConstants | None = None,
        step_tokens: int | None = None,
    ) -> None:
        self.model, self.gpu, self.backend, self.cand = model, gpu, backend, cand
        self.step_tokens = step_tokens  # the engine's step budget when set (None: the backend's default)
        self.map = Mapping.of(cand)
        self.k = constants or constants_for(backend)
        self.s = _shapes(model, self.map)
        math_dtype = compute_dtype(model.weight_dtype, gpu)
        self._linear_flops = gpu.peak_flops(math_dtype) * self.k.gemm_eff
        self._moe_flops = gpu.peak_flops(math_dtype) * self.k.moe_eff
        self._attn_flops = gpu.peak_flops("bf16") * self.k.attn_eff
        self._hbm = gpu.hbm_bytes_per_s * self.k.mem_eff
        self._link = gpu.link_bytes_per_s * self.k.link_eff
        self._max_kv: int | None = None
        self.chunk_tokens = self._chunk_tokens()

    def _chunk_tokens(self) -> int:
        """Prefill tokens one attention-DP rank takes per step (the engine's chunked-prefill budget)."""
        k = self.k
        chunk = self.step_tokens or (
            k.prefill_chunk_tokens_160g if self.gpu.usable_memory_gib >= 160 else k.prefill_chunk_tokens
        )
        if k.chunk_shared_by_dp:
            chunk //= self.map.attn_dp
        return max(1, chunk)

    # ---- one engine step -------------------------------------------------
    def _roof(self, flops, nbytes, flops_per_s: float):
        return np.maximum(flops / flops_per_s, nbytes / self._hbm)

    def _comm_s(self, tokens_per_rank):
        """Collectives of one layer (averaged over dense and MoE layers) for `tokens_per_rank` tokens."""
        m, s = self.map, self.s
        lat = self.k.comm_latency_us * 1e-6
        zero = 0.0 * tokens_per_rank
        t = zero
        if m.attn_tp > 1:  # all-reduce after attention, and after every MLP the TP group shares
            n = m.attn_tp
            one = 2.0 * (n - 1) / n * tokens_per_rank * s.hidden * ACT_BYTES / self._link + lat
            mlp_allreduces = s.layers if m.attn_dp == 1 else s.dense_layers
            t = t + one * (s.layers + mlp_allreduces) / s.layers
        if self.model.is_moe and m.attn_dp > 1:
            # dispatch and combine: each token's hidden state to its top-k experts, (n-1)/n of them remote
            # (also charged to attention DP with experts split by TP: the calibration rows of that
            # mapping fit this cost better than an all-gather and reduce-scatter of the hidden states)
            n = m.num_gpus
            nbytes = tokens_per_rank * s.top_k * s.hidden * ACT_BYTES * (n - 1) / n
            t = t + 2.0 * (nbytes / self._link + lat) * s.moe_layers / s.layers
        return t

    def step_s(self, tokens_per_rank, attn_flops_per_layer, kv_bytes_per_layer, lm_rows_per_rank):
        """Seconds of one forward pass on the busiest rank (arrays broadcast)."""
        s, k, c = self.s, self.k, self.map
        tokens = np.asarray(tokens_per_rank, dtype=float)
        dense_layers = s.dense_layers if self.model.is_moe else s.layers
        t = dense_layers * self._roof(2 * tokens * s.dense_params, s.dense_params * s.w_bytes, self._linear_flops)
        if self.model.is_moe:
            t = t + s.moe_layers * self._roof(
                2 * tokens * s.moe_dense_params, s.moe_dense_params * s.w_bytes, self._linear_flops
            )
            # routed experts: tokens of the whole engine reach each EP rank's experts
            engine_tokens = tokens * c.attn_dp
            touched = s.experts * (1.0 - (1.0 - s.top_k / s.experts) ** engine_tokens)
            touched_here = np.minimum(touched / c.moe_ep, s.experts_per_gpu)
            pairs_here = engine_tokens * s.top_k / c.moe_ep
            t = t + s.moe_layers * self._roof(
                2 * pairs_here * s.expert_params, touched_here * s.expert_params * s.w_bytes, self._moe_flops
            )
        t = t + s.layers * self._roof(attn_flops_per_layer, kv_bytes_per_layer, self._attn_flops)
        lm_rows = np.asarray(lm_rows_per_rank, dtype=float)
        t = t + self._roof(2 * lm_rows * s.lm_head_params, s.lm_head_params * 2.0, self._linear_flops)
        t = t + s.layers * self._comm_s(tokens)
        # memory-bound elementwise kernels: their time follows HBM bandwidth, not Tensor-Core FLOP/s,
        # so a GPU with k times the FLOP/s does not prefill k times faster
        t = t + s.layers * tokens * s.act_elems_per_token * ACT_BYTES * k.act_passes / self._hbm
        return t + s.layers * k.layer_overhead_us * 1e-6 + k.step_overhead_ms * 1e-3

    # ---- public interface --------------------------------------------------
    def prefill_work_s(self, isl, batch=1):
        """Engine time of prefilling `batch` prompts of `isl` tokens (chunked), without request overhead."""
        isl = np.asarray(isl, dtype=float)
        per_rank = np.ceil(np.asarray(batch, dtype=float) / self.map.attn_dp)
        tokens = isl * per_rank
        chunks = np.maximum(1.0, np.ceil(tokens / self.chunk_tokens))
        attn = per_rank * self.s.attn_prefill_coef * isl * isl / chunks
        # prefill steps run without CUDA graphs: each layer pays host-side launch and MoE routing
        # (token sort, expert offsets) costs that do not shrink on a faster GPU
        launch = (self.s.layers * self.k.prefill_layer_us + self.s.moe_layers * self.k.prefill_moe_layer_us) * 1e-6
        return chunks * (self.step_s(tokens / chunks, attn, 0.0, per_rank / chunks) + launch)

    def request_ms(self, isl, per_rank=1.0):
        """Host costs of one request (not GPU time): the fixed launch cost of a lone request, its
        per-prompt-token cost, and the admission queue behind the other prompts in flight."""
        lone = self.k.request_overhead_ms + np.asarray(isl, dtype=float) * self.k.request_token_us * 1e-3
        return lone + self.k.admission_ms * admission_load(per_rank)

    def lone_bound_ms(self, isl) -> float:
        """Roofline-plus-launch-overhead bound of a lone request's TTFT: the prompt's GPU work (kernels
        at the calibrated efficiencies, with their per-layer and per-step launches) plus the fixed
        launch overhead of one request."""
        return float(self.prefill_work_s(isl, 1)) * 1e3 + self.k.request_overhead_ms

    def prefill_ttft_ms(self, isl, batch=1):
        """TTFT of `batch` prompts of `isl` tokens prefilled together, framework overhead included."""
        per_rank = np.ceil(np.asarray(batch, dtype=float) / self.map.attn_dp)
        ms = self.prefill_work_s(isl, batch) * 1e3 + self.request_ms(isl, per_rank)
        return float(ms) if np.ndim(ms) == 0 else ms

    def decode_itl_ms(self, batch, context):
        """One decode step for `batch` sequences (engine total) at mean context `context`, ms."""
        per_rank = np.maximum(1.0, np.ceil(np.asarray(batch, dtype=float) / self.map.attn_dp))
        ctx = np.asarray(context, dtype=float)
        attn_flops = per_rank * ctx * self.s.attn_decode_flops_per_ctx
        kv_bytes = per_rank * ctx * self.s.kv_bytes_per_ctx
        ms = self.step_s(per_rank, attn_flops, kv_bytes, per_rank) * 1e3
        return float(ms) if np.ndim(ms) == 0 else ms

    def max_kv_tokens(self) -> int:
        if self._max_kv is None:
            cand = self.cand if isinstance(self.cand, Candidate) else self.map.nearest_candidate()
            self._max_kv = kv_capacity_tokens(self.model, self.gpu, cand, self.backend)
        return self._max_kv

    def loaded_ttft_ms(self, isl: int, per_rank: float, t_dec: float = 0.0, work: float | None = None) -> float:
        """TTFT of one prompt when `per_rank` prompts per rank are in flight (closed loop).

        A share `burst_fraction` of prompts arrives in a wave with the others and is prefilled
        together with them in chunks of the token budget (the average prompt finishes half-way
        through the wave's chunks, or with all of them when they fit in one); the rest find the
        engine free. Every prefill chunk shares its step with a decode step of `t_dec` ms.
        """
        k = self.k
        if work is None:
            work = float(self.prefill_work_s(isl, 1)) * 1e3
        chunks = max(1.0, math.ceil(isl / self.chunk_tokens))
        alone = work + chunks * t_dec
        wave_tokens = per_rank * isl
        wave_steps = max(1.0, math.ceil(wave_tokens / self.chunk_tokens))
        step_ms = min(wave_tokens, self.chunk_tokens) / isl * work + t_dec
        wave = (wave_steps + 1.0) / 2.0 * step_ms if wave_steps > 1 else per_rank * work + t_dec
        return (
            float(self.request_ms(isl, per_rank))
            + (1.0 - k.burst_fraction) * alone
            + k.burst_fraction * max(alone, wave)
        )

    def agg(self, isl: int, osl: int, concurrency: int) -> AggEstimate:
        """Steady-state aggregated serving with `concurrency` requests in flight (closed loop).

        - The decode batch is what the KV cache holds (a running request holds isl + osl/2 tokens);
          a prompt is admitted as soon as its own tokens fit, so only prompts beyond that wait
          for running requests to finish.
        - Each running request's prefill runs inside the engine's mixed steps, so its work spreads
          over the others' decode steps: ITL = decode step + prefill work per output token.
        - TTFT: `loaded_ttft_ms` (the prompt's prefill, the decode steps it shares, the wave it
          arrives in).
        """
        k, dp = self.k, self.map.attn_dp
        kv = self.max_kv_tokens()
        # the decode batch the KV cache holds: on average a running request holds isl + osl/2 tokens
        fits = int(kv // (isl + osl / 2.0)) if kv > 0 else concurrency
        running = max(dp, min(concurrency, fits))
        # a prompt is admitted (and gets its first token) as soon as its own tokens fit; when decode
        # later runs out of blocks the engine preempts or pauses running requests, which lengthens
        # ITL, not TTFT. Only prompts that do not fit at all wait for whole request lifetimes.
        admitted = max(dp, min(concurrency, int(kv // max(1, isl)) if kv > 0 else concurrency))
        t_dec = self.decode_itl_ms(running, isl + osl / 2.0)
        work = float(self.prefill_work_s(isl, 1)) * 1e3
        itl = t_dec + k.agg_mix_factor * (max(1.0, running / dp) - 1.0) * work / max(1, osl)
        # a prompt's chunks share their steps with the decode steps of the others in flight: none for a lone one
        per_rank = max(1.0, admitted / dp)
        ttft = self.loaded_ttft_ms(isl, per_rank, t_dec * min(1.0, per_rank - 1.0), work)
        latency = ttft + max(0, osl - 1) * itl
        if concurrency > admitted:  # the rest queue for whole request lifetimes
            ttft += (concurrency - admitted) / admitted * latency / 2.0
        thpt = running * osl / (latency / 1e3) / self.map.num_gpus
        return AggEstimate(ttft_ms=ttft, itl_ms=itl, thpt_per_gpu=thpt)
