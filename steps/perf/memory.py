"""GPU memory accounting: weights per GPU, runtime reserve and KV-cache capacity of one engine.

Used by the planner (which mappings fit) and by the offline estimator (max_kv_tokens).
"""

from __future__ import annotations

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines import get_backend
from slaprof.steps.specs.gpus import GIB, GpuSpec
from slaprof.steps.specs.models import BYTES_PER_WEIGHT, ModelInfo

# Each backend's share of GPU memory (vLLM gpu_memory_utilization, SGLang mem_fraction_static,
# TRT-LLM free_gpu_memory_fraction, applied to the total here) and the tokens of its memory-profiling
# forward pass are its own facts: `EngineBackend.memory_utilization` and `.profile_batched_tokens`.
CUDA_GRAPH_BYTES = 0.75 * GIB
NON_TORCH_BYTES = 0.5 * GIB
NCCL_BYTES = 2.1 * GIB  # measured for TP >= 2 (llm-d planner accuracy report)


def weight_bytes_per_gpu(model: ModelInfo, cand: Candidate) -> float:
    """Weight bytes resident on each GPU of the engine."""
    b = BYTES_PER_WEIGHT[model.weight_dtype]
    attn = model.num_layers * model.attention_params_per_layer * b
    dense = (
        model.num_dense_layers * model.dense_mlp_params * b
        if model.is_moe
        else model.num_layers * model.dense_mlp_params * b
    )
    shared = model.num_moe_layers * (model.shared_expert_params + model.router_params) * b
    experts = model.routed_expert_params_total * b
    embed = (model.embedding_params + model.lm_head_params) * 2.0
    if cand.attn_dp > 1:  # dep / dtp: attention and dense parts replicated per attention-DP rank
        return attn + dense + shared + experts / (cand.moe_ep * cand.moe_tp) + embed / cand.size
    # tp / tep: attention and dense MLPs split by tensor parallelism
    per_gpu = (attn + dense + shared + embed) / cand.attn_tp
    return per_gpu + experts / (cand.moe_ep * cand.moe_tp)


def runtime_reserve_bytes(model: ModelInfo, cand: Candidate, backend: str) -> float:
    """Activations of the profiling forward pass, CUDA graphs, NCCL buffers and non-torch memory."""
    tokens = get_backend(backend).profile_batched_tokens
    inter = model.moe_intermediate_size * model.experts_per_token if model.is_moe else model.intermediate_size
    width = 2 * max(inter, model.intermediate_size if not model.is_moe else 0) / cand.attn_tp + 4 * model.hidden_size
    activations = max(1.0 * GIB, 1.5 * tokens * width * 2.0)
    nccl = NCCL_BYTES if cand.size > 1 else 0.0
    return activations + CUDA_GRAPH_BYTES + NON_TORCH_BYTES + nccl


def kv_bytes_per_token_per_gpu(model: ModelInfo, cand: Candidate) -> float:
    """KV bytes one GPU stores for each token it holds."""
    if model.is_mla:  # the latent is not split across TP ranks
        return model.kv_bytes_per_token()
    heads_per_gpu = max(1.0, model.num_kv_heads / cand.attn_tp)
    return model.kv_bytes_per_token() * heads_per_gpu / model.num_kv_heads


def kv_capacity_tokens(model: ModelInfo, gpu: GpuSpec, cand: Candidate, backend: str) -> int:
    """KV-cache tokens the whole engine holds (summed over attention-DP ranks); 0 if nothing is left."""
    budget = gpu.memory_bytes * get_backend(backend).memory_utilization
    free = budget - weight_bytes_per_gpu(model, cand) - runtime_reserve_bytes(model, cand, backend)
    if free <= 0:
        return 0
    return int(free / kv_bytes_per_token_per_gpu(model, cand)) * cand.attn_dp
