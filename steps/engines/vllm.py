"""vLLM backend: `vllm serve` for the bench step, `python3 -m dynamo.vllm` workers in a DGD.

Parallel flags: TP `--tensor-parallel-size N`; TEP adds `--enable-expert-parallel`; DEP runs
attention data-parallel (`--data-parallel-size N`, TP 1) with experts split across the ranks;
DTP is the same without `--enable-expert-parallel` (vLLM then shards every expert by tensor
parallelism across the DP ranks).
KV capacity: `vllm:cache_config_info` (num_gpu_blocks x block_size) on /metrics, else the
start-up line `GPU KV cache size: N tokens` (older engines: `Maximum concurrency for T tokens
per request: X x`, or `# GPU blocks: N` x the block size).
Worker role: `--is-prefill-worker` before Dynamo 1.0; from 1.0 on `--disaggregation-mode`, with
the NIXL KV-transfer setting a 1.x prefill worker refuses to start without (`release_role_args`,
checked against each release's `vllm/backend_args.py` and examples/backends/vllm/deploy/).
"""

from __future__ import annotations

import re

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines.base import (
    EngineBackend,
    Role,
    ServerLaunch,
    ServerOptions,
    dynamo_image,
    last_per_rank,
    prometheus_samples,
    to_int,
)
from slaprof.steps.engines.registry import register_backend

DEFAULT_BLOCK_SIZE = 16
_RANK = r"(?:EngineCore_DP(?P<rank>\d+)[^\n]*?)?"
_KV_SIZE = re.compile(r"^[^\n]*?" + _RANK + r"GPU KV cache size:\s*(?P<n>[0-9][0-9,]*)\s*tokens", re.M)
_MAX_CONC = re.compile(
    r"^[^\n]*?" + _RANK + r"Maximum concurrency for\s*(?P<t>[0-9][0-9,]*)\s*tokens per request:\s*(?P<x>[0-9.]+)\s*x",
    re.M,
)
_GPU_BLOCKS = re.compile(r"^[^\n]*?" + _RANK + r"# GPU blocks:\s*(?P<n>[0-9][0-9,]*)", re.M)
_VERSION = re.compile(r"vLLM API server version\s+(\S+)|vllm version\s+(\S+)", re.I)
_NIXL = '{{"kv_connector":"NixlConnector","kv_role":"{}"}}'
_DECODE_ROLE = ("--disaggregation-mode", "decode")


@register_backend
class VllmBackend(EngineBackend):
    name = "vllm"
    dynamo_module = "dynamo.vllm"
    runtime_image = dynamo_image("vllm-runtime")
    profile_start_path = "/start_profile"
    profile_stop_path = "/stop_profile"
    dgd_workdir = "/workspace/examples/backends/vllm"
    legacy_role_flags = ("--is-prefill-worker", "--is-decode-worker")
    release_role_args = {
        "1.0": {
            "prefill": ("--disaggregation-mode", "prefill", "--kv-transfer-config", _NIXL.format("kv_both")),
            "decode": _DECODE_ROLE,
        },
        "1.6": {
            "prefill": ("--disaggregation-mode", "prefill", "--kv-transfer-config", _NIXL.format("kv_producer")),
            "decode": _DECODE_ROLE,
        },
    }
    aic_name = "vllm"

    def parallel_args(self, cand: Candidate) -> list[str]:
        if cand.kind == "tp":
            return ["--tensor-parallel-size", str(cand.size)]
        if cand.kind == "tep":
            return ["--tensor-parallel-size", str(cand.size), "--enable-expert-parallel"]
        dp = ["--tensor-parallel-size", "1", "--data-parallel-size", str(cand.size)]
        return [*dp, "--enable-expert-parallel"] if cand.kind == "dep" else dp

    def context_args(self, max_context: int) -> list[str]:
        return ["--max-model-len", str(max_context)] if max_context else []

    precision_flags = {
        ("weights", "fp8"): ("--quantization", "fp8"),  # dynamic FP8 of a BF16 checkpoint
        ("kv_cache", "fp8"): ("--kv-cache-dtype", "fp8"),
    }

    def step_tokens_args(self, tokens: int) -> list[str]:
        return ["--max-num-batched-tokens", str(tokens)]

    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        args = ["--model", model, *self.parallel_args(cand), *self.context_args(max_context)]
        if role == "prefill":
            args += [*self.prefill_step_args(max_context), "--is-prefill-worker"]
        return args

    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        argv = [
            "vllm",
            "serve",
            model,
            "--host",
            options.host,
            "--port",
            str(port),
            "--served-model-name",
            model,
            *self.parallel_args(cand),
            "--enable-prefix-caching" if options.prefix_caching else "--no-enable-prefix-caching",
        ]
        if options.max_batched_tokens:
            argv += self.step_tokens_args(options.max_batched_tokens)
        argv += self.precision_args(options.precision)
        argv += self.context_args(options.max_context or 0)
        if options.memory_utilization:
            argv += ["--gpu-memory-utilization", f"{options.memory_utilization:g}"]
        env: dict[str, str] = {}
        if options.profile_dir:
            # vLLM only serves /start_profile when its profiler directory is set at start-up
            env["VLLM_TORCH_PROFILER_DIR"] = options.profile_dir
        return ServerLaunch(argv=argv, env=env)

    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        found = [(m.group("rank"), to_int(m.group("n"))) for m in _KV_SIZE.finditer(log_text)]
        if not found:
            found = [
                (m.group("rank"), round(to_int(m.group("t")) * float(m.group("x"))))
                for m in _MAX_CONC.finditer(log_text)
            ]
        if not found:
            found = [
                (m.group("rank"), to_int(m.group("n")) * DEFAULT_BLOCK_SIZE) for m in _GPU_BLOCKS.finditer(log_text)
            ]
        return last_per_rank(found, attn_dp)

    def kv_tokens_from_metrics(self, metrics_text: str) -> int | None:
        per_engine: dict[str, int] = {}
        for labels, _value in prometheus_samples(metrics_text, "vllm:cache_config_info"):
            blocks, block_size = labels.get("num_gpu_blocks"), labels.get("block_size")
            if blocks and blocks != "None" and block_size:
                per_engine[labels.get("engine", "0")] = int(blocks) * int(block_size)
        return sum(per_engine.values()) if per_engine else None

    def version_from_log(self, log_text: str) -> str | None:
        m = _VERSION.search(log_text)
        return (m.group(1) or m.group(2)) if m else None
