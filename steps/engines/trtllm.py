"""TensorRT-LLM backend: `trtllm-serve` for the bench step, `dynamo.trtllm` workers in a DGD.

TRT-LLM takes its parallel settings in an engine-args YAML (`engine_config`):
`tensor_parallel_size`, `moe_expert_parallel_size`, `enable_attention_dp`. KV capacity comes
from the log line `[MemUsageChange] Allocated X GiB for max tokens in paged KV cache (N).`,
printed more than once during start-up: the first can be an intermediate estimate, so the
last one counts.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines.base import (
    EngineBackend,
    Role,
    ServerLaunch,
    ServerOptions,
    batched_tokens,
    dynamo_image,
    last_per_rank,
    to_int,
)
from slaprof.steps.engines.registry import register_backend
from slaprof.steps.specs.models import EnginePrecision

# Where a DGD worker finds its engine-args file; the renderer mounts `engine_config` there.
ENGINE_CONFIG_DIR = "/opt/slaprof/engine-config"
SERVER_CONFIG_FILE = "trtllm-engine-args.yaml"
_KV = re.compile(
    r"^[^\n]*?(?:\[RANK (?P<rank>\d+)\][^\n]*?)?Allocated\s+[0-9.]+\s*[KMGT]iB for max tokens in paged KV cache\s*\((?P<n>[0-9][0-9,]*)\)",
    re.M,
)
_VERSION = re.compile(r"TensorRT-LLM version:\s*(\S+)")

# TensorRT-LLM's own tokens per step (BuildConfig.max_num_tokens) when none is given
DEFAULT_MAX_NUM_TOKENS = 8192


@register_backend
class TrtllmBackend(EngineBackend):
    name = "trtllm"
    dynamo_module = "dynamo.trtllm"
    runtime_image = dynamo_image("tensorrtllm-runtime")
    aic_name = "trtllm"
    metrics_path = None  # trtllm-serve's /metrics is JSON iteration stats, not Prometheus
    profile_start_path = None
    profile_stop_path = None

    def parallel_args(self, cand: Candidate) -> list[str]:
        """trtllm-serve flags; attention DP has no flag and lives in `engine_config`."""
        args = ["--tp_size", str(cand.size)]
        if cand.moe_ep > 1:
            args += ["--ep_size", str(cand.size)]
        return args

    def step_tokens_args(self, tokens: int) -> list[str]:
        return ["--max_num_tokens", str(tokens)]  # a DGD worker takes it in its engine config instead

    # FP8 KV goes in the engine-args file (no flag); weights are served as the checkpoint has them
    precision_flags = {("kv_cache", "fp8"): ()}

    def engine_config(
        self, cand: Candidate, role: Role, max_context: int = 0, precision: EnginePrecision | None = None
    ) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "tensor_parallel_size": cand.size,
            "moe_expert_parallel_size": cand.moe_ep,
            "enable_attention_dp": cand.attn_dp > 1,
            "kv_cache_config": {
                "enable_block_reuse": role != "prefill",
                "free_gpu_memory_fraction": self.memory_utilization,
            },
        }
        if precision and precision.kv_cache:
            cfg["kv_cache_config"]["dtype"] = precision.kv_cache
        if max_context:
            cfg["max_seq_len"] = max_context
            # disaggregated engines were measured with whole prompts per step; aggregated ones with the
            # engine's own budget, which the bench and the DGD leave alone
            budget = DEFAULT_MAX_NUM_TOKENS if role == "agg" else batched_tokens(max_context)
            if role != "agg":
                cfg["max_num_tokens"] = budget
            if max_context > budget:
                cfg["enable_chunked_prefill"] = True  # prompts longer than one step are split, not refused
        if role != "agg":  # an aggregated worker keeps its KV cache: nothing to transfer
            cfg["cache_transceiver_config"] = {"backend": "DEFAULT"}
        if cand.kind != "tp":
            cfg["moe_tensor_parallel_size"] = cand.moe_tp
        if role == "prefill":
            cfg["disable_overlap_scheduler"] = True  # overlap scheduling does not help context-only workers
            cfg["max_batch_size"] = max(1, cand.attn_dp)
        return cfg

    def engine_config_path(self, role: Role) -> str | None:
        return f"{ENGINE_CONFIG_DIR}/{role}.yaml"

    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        """The context travels in the engine-args file (`engine_config`), not as a flag."""
        args = [
            "--model-path",
            model,
            "--served-model-name",
            model,
            "--extra-engine-args",
            str(self.engine_config_path(role)),
        ]
        return args if role == "agg" else [*args, "--disaggregation-mode", role]

    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        self.precision_args(options.precision)  # refuses what the engine cannot be told
        # a standalone server is an aggregated engine; a disaggregated candidate's gets its step budget as a flag
        cfg = self.engine_config(cand, "agg", options.max_context or 0, options.precision)
        cfg["kv_cache_config"]["enable_block_reuse"] = options.prefix_caching
        if options.memory_utilization:
            cfg["kv_cache_config"]["free_gpu_memory_fraction"] = options.memory_utilization
        config_path = f"{options.workdir.rstrip('/')}/{SERVER_CONFIG_FILE}"
        argv = [
            "trtllm-serve",
            model,
            "--host",
            options.host,
            "--port",
            str(port),
            *self.parallel_args(cand),
            "--extra_llm_api_options",
            config_path,
        ]
        if options.max_batched_tokens:
            argv += self.step_tokens_args(options.max_batched_tokens)
        return ServerLaunch(argv=argv, files={SERVER_CONFIG_FILE: yaml.safe_dump(cfg, sort_keys=False)})

    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        found = [(m.group("rank") if attn_dp > 1 else None, to_int(m.group("n"))) for m in _KV.finditer(log_text)]
        return last_per_rank(found, attn_dp)

    def version_from_log(self, log_text: str) -> str | None:
        m = _VERSION.search(log_text)
        return m.group(1) if m else None
