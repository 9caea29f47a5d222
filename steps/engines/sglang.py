"""SGLang backend: `python3 -m sglang.launch_server` for the bench step, `dynamo.sglang` workers.

Parallel flags: TP `--tp N`; TEP adds `--ep-size N`; DEP adds `--dp N --enable-dp-attention`;
DTP is DP attention without `--ep-size` (the experts stay split by tensor parallelism).
KV capacity: `sglang:max_total_num_tokens` on /metrics (with --enable-metrics), else the log
line `KV Cache is allocated. #tokens: N`, which is per attention-DP rank.
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

DISAGG_BOOTSTRAP_PORT = 12345
_KV = re.compile(r"^[^\n]*?(?:DP(?P<rank>\d+)\b[^\n]*?)?KV Cache is allocated\.\s*#tokens:\s*(?P<n>[0-9][0-9,]*)", re.M)
_VERSION = re.compile(r"sglang(?: version|==)\s*v?([0-9][\w.+-]*)", re.I)


@register_backend
class SglangBackend(EngineBackend):
    name = "sglang"
    dynamo_module = "dynamo.sglang"
    runtime_image = dynamo_image("sglang-runtime")
    version_path = "/get_server_info"  # JSON with "version"
    profile_start_path = "/start_profile"
    profile_stop_path = "/stop_profile"
    dgd_workdir = "/workspace/examples/backends/sglang"
    memory_utilization = 0.88  # mem_fraction_static
    # server_args sets --chunked-prefill-size from GPU memory (2,048 under 35 GiB, 8,192 under 160 GiB,
    # 16,384 above; every GPU in the catalog has 35 GiB or more) and, with attention DP, divides it by
    # the DP size.
    scheduler_defaults = {"prefill_chunk_tokens_160g": 16384, "chunk_shared_by_dp": True}
    aic_name = "sglang"

    def parallel_args(self, cand: Candidate) -> list[str]:
        args = ["--tp", str(cand.size)]
        if cand.moe_ep > 1:
            args += ["--ep-size", str(cand.size)]
        if cand.attn_dp > 1:
            args += ["--dp", str(cand.size), "--enable-dp-attention"]
        return args

    def context_args(self, max_context: int) -> list[str]:
        return ["--context-length", str(max_context)] if max_context else []

    precision_flags = {
        ("weights", "fp8"): ("--quantization", "fp8"),  # dynamic FP8 of a BF16 checkpoint
        ("kv_cache", "fp8"): ("--kv-cache-dtype", "fp8_e4m3"),
    }

    def step_tokens_args(self, tokens: int) -> list[str]:
        return ["--chunked-prefill-size", str(tokens), "--max-prefill-tokens", str(tokens)]

    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        args = [
            "--model-path",
            model,
            "--served-model-name",
            model,
            *self.parallel_args(cand),
            *self.context_args(max_context),
            *(self.prefill_step_args(max_context) if role == "prefill" else []),
            "--trust-remote-code",
            "--skip-tokenizer-init",
        ]
        if role == "agg":  # one worker serves both phases: no KV transfer to set up
            return args
        args += [
            "--disaggregation-mode",
            role,
            "--disaggregation-transfer-backend",
            "nixl",
            "--disaggregation-bootstrap-port",
            str(DISAGG_BOOTSTRAP_PORT),
        ]
        if cand.kind != "tp" and role == "decode":
            # the prefill side routes to DP ranks round-robin; decode must agree
            args += ["--load-balance-method", "round_robin"]
        return args

    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        argv = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            model,
            "--served-model-name",
            model,
            "--host",
            options.host,
            "--port",
            str(port),
            *self.parallel_args(cand),
            "--enable-metrics",
        ]
        if not options.prefix_caching:
            argv.append("--disable-radix-cache")
        if options.max_batched_tokens:
            argv += self.step_tokens_args(options.max_batched_tokens)
        argv += self.precision_args(options.precision)
        argv += self.context_args(options.max_context or 0)
        if options.memory_utilization:
            argv += ["--mem-fraction-static", f"{options.memory_utilization:g}"]
        env = {"SGLANG_TORCH_PROFILER_DIR": options.profile_dir} if options.profile_dir else {}
        return ServerLaunch(argv=argv, env=env)

    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        found = [(m.group("rank"), to_int(m.group("n"))) for m in _KV.finditer(log_text)]
        return last_per_rank(found, attn_dp)

    def kv_tokens_from_metrics(self, metrics_text: str) -> int | None:
        # one sample per attention-DP rank when DP attention is on (label dp_rank), else one
        per_rank: dict[str, float] = {}
        for labels, value in prometheus_samples(metrics_text, "sglang:max_total_num_tokens"):
            per_rank[labels.get("dp_rank", "0")] = value
        return int(sum(per_rank.values())) if per_rank else None

    def version_from_log(self, log_text: str) -> str | None:
        m = _VERSION.search(log_text)
        return m.group(1) if m else None
