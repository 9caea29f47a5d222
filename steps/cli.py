"""`slaprof` command line: the request options shared by every subcommand, and the dispatcher.

Each subcommand lives in `steps/commands/<name>.py` and exposes `register(subparsers)`.
Modules there import heavy libraries inside their `run` functions so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from steps import commands
from steps.dynamo_releases import supported
from steps.errors import StepFailed, UserError
from steps.gpus import GPU_NAMES
from steps.request import BACKENDS, SERVING_MODES, ProfileRequest, build_request, load_request_file, merge

# (flag, nested request path, type, help). Names follow Dynamo's profile_sla where it has one.
_REQUEST_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "Hugging Face model id or local model directory"),
    ("--backend", "backend", str, f"inference backend: {' | '.join(BACKENDS)}"),
    ("--method", "method", str, "offline (estimate, default) | simulate (simulated engines + AIPerf) | online (GPUs)"),
    (
        "--serving",
        "serving",
        str,
        f"{' | '.join(SERVING_MODES)}: compare aggregated and disaggregated serving (auto, default) or profile one",
    ),
    ("--isl", "sla.isl", int, "average input sequence length, tokens"),
    ("--osl", "sla.osl", int, "average output sequence length, tokens"),
    ("--ttft", "sla.ttft_ms", float, "time-to-first-token target, ms"),
    ("--itl", "sla.itl_ms", float, "inter-token latency target, ms"),
    ("--request-rate", "sla.request_rate", float, "expected requests/s: recommend the fewest GPUs that serve it"),
    (
        "--confidence",
        "sla.confidence",
        float,
        "meet the targets at this quantile of the estimates' prediction intervals (default 0.5: the estimate)",
    ),
    ("--gpu", "hardware.gpu", str, f"GPU type: {', '.join(GPU_NAMES)}"),
    ("--num-gpus-per-node", "hardware.gpus_per_node", int, "GPUs per node (default 8)"),
    ("--min-num-gpus-per-engine", "hardware.min_gpus_per_engine", int, "smallest engine to try (0 = from model size)"),
    ("--max-num-gpus-per-engine", "hardware.max_gpus_per_engine", int, "largest engine to try (0 = one node)"),
    ("--total-gpus", "hardware.total_gpus", int, "GPUs the whole deployment may use (0 = one node, the default)"),
    ("--quantization", "engine.quantization", str, "weights: auto (as the checkpoint declares) | bf16 | fp8 | fp4"),
    ("--kv-cache-dtype", "engine.kv_cache_dtype", str, "KV cache: auto | bf16 | fp8"),
    ("--max-context-length", "engine.max_context_length", int, "cap on the engine's context (0 = the model's)"),
    ("--prefill-interpolation-granularity", "sweep.prefill_granularity", int, "prefill ISL points (default 16)"),
    (
        "--decode-interpolation-granularity",
        "sweep.decode_granularity",
        int,
        "decode context and concurrency points (default 6)",
    ),
    ("--aic-system", "sweep.aic_system", str, "AI Configurator system name (defaults to --gpu)"),
    ("--aic-hf-id", "sweep.aic_hf_id", str, "Hugging Face id AI Configurator should use for the model"),
    ("--aic-backend-version", "sweep.aic_backend_version", str, "AI Configurator backend version"),
    ("--namespace", "deployment.namespace", str, "Kubernetes namespace of the deployment"),
    ("--engine-image", "deployment.engine_image", str, "worker image (default per backend)"),
    ("--frontend-image", "deployment.frontend_image", str, "frontend/planner image"),
    (
        "--dynamo-version",
        "deployment.dynamo_version",
        str,
        f"Dynamo release the DGD is for ({supported()}); default: the images' tag, else the newest",
    ),
    ("--model-cache-pvc", "deployment.model_cache_pvc", str, "PVC holding the model weights"),
]


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """The request flags; every value defaults to 'not given' so --config values survive."""
    group = parser.add_argument_group("request")
    group.add_argument("--config", help="request file: slaprof YAML/JSON or a Dynamo DynamoGraphDeploymentRequest")
    for flag, _path, typ, help_text in _REQUEST_FLAGS:
        group.add_argument(flag, type=typ, default=None, help=help_text, dest=flag[2:].replace("-", "_"))
    group.add_argument(
        "--use-ai-configurator",
        action="store_true",
        default=None,
        help="estimate with AI Configurator (offline, needs the 'aic' extra)",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="measure nothing: estimate every candidate offline, then fit and render as usual",
    )
    group.add_argument("--auto-apply", action="store_true", default=None, help="apply the DGD to the cluster when done")


def request_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, path, _typ, _help in _REQUEST_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            *parents, leaf = path.split(".")
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
    if getattr(args, "use_ai_configurator", None):
        out.setdefault("sweep", {})["estimator"] = "aic"
        out.setdefault("method", "offline")
    if getattr(args, "aic_system", None) and getattr(args, "gpu", None) is None:
        out.setdefault("hardware", {}).setdefault("gpu", args.aic_system)
    if getattr(args, "dry_run", None):
        out.setdefault("sweep", {})["dry_run"] = True
    if getattr(args, "auto_apply", None):
        out.setdefault("deployment", {})["auto_apply"] = True
    return out


def request_from_args(args: argparse.Namespace) -> ProfileRequest:
    """Request file (if any) overridden by flags, validated."""
    base: dict[str, Any] = load_request_file(args.config) if getattr(args, "config", None) else {}
    data = merge(base, request_overrides(args))
    if not data.get("model"):
        raise UserError("no model given: pass --model (a Hugging Face id or a local model folder) or --config FILE")
    return build_request(data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slaprof",
        description="SLA-driven profiler for LLM inference deployments (vLLM, SGLang, TensorRT-LLM on Dynamo).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"steps.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, StepFailed) as exc:
        if args.verbose:
            raise
        print(f"slaprof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slaprof: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
