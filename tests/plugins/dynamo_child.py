"""Runs one task with one Dynamo release's own planner code, in a subprocess (see dynamo_wheels.py).

Usage: python dynamo_child.py <release folder>   (task JSON on stdin, result JSON on stdout)

Only the planner modules are imported, the way Dynamo's planner pod imports them, with two
stand-ins for what this machine cannot install and the modules do not need for these tasks:
- the package `__init__` of `dynamo`, `dynamo.planner` and `dynamo.planner.core[.perf_model]` is
  skipped (they import the Rust runtime, the Kubernetes connectors and the simulator);
- `dynamo.runtime.logging.configure_dynamo_logging` (the Rust runtime's log set-up) is a no-op.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

_PACKAGES = ("dynamo", "dynamo.planner", "dynamo.planner.core", "dynamo.planner.core.perf_model", "dynamo.profiler")


def _prepare(root: Path) -> None:
    sys.path.insert(0, str(root))
    for name in _PACKAGES:
        folder = root / name.replace(".", "/")
        if folder.is_dir():
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
    runtime = types.ModuleType("dynamo.runtime")
    runtime.__path__ = []
    logging_stub = types.ModuleType("dynamo.runtime.logging")
    logging_stub.configure_dynamo_logging = lambda *a, **k: None  # type: ignore[attr-defined]
    sys.modules["dynamo.runtime"] = runtime
    sys.modules["dynamo.runtime.logging"] = logging_stub


def _num(x: Any) -> float:
    return float(x)


def planner_flags(task: dict[str, Any]) -> dict[str, Any]:
    """0.7-0.9: parse the Planner's arguments with `planner_sla`'s own parser."""
    parser = importlib.import_module("dynamo.planner.utils.planner_argparse").create_sla_planner_parser()
    return vars(parser.parse_args(task["args"]))


def planner_config(task: dict[str, Any]) -> dict[str, Any]:
    """1.x: load the Planner's `--config` value with `dynamo.planner`'s own PlannerConfig."""
    for module in ("dynamo.planner.config.planner_config", "dynamo.planner.utils.planner_config"):
        try:
            config_cls = importlib.import_module(module).PlannerConfig
            break
        except ModuleNotFoundError:
            continue
    cfg = config_cls.from_config_arg(task["config"])
    return json.loads(cfg.model_dump_json())


def interpolators(task: dict[str, Any]) -> dict[str, Any]:
    """0.7-1.0: the planner's PrefillInterpolator / DecodeInterpolator over a profile results folder."""
    interp = importlib.import_module("dynamo.planner.utils.perf_interpolation")
    prefill = interp.PrefillInterpolator(profile_results_dir=task["dir"])
    decode = interp.DecodeInterpolator(profile_results_dir=task["dir"])
    return {
        "ttft": [_num(prefill.interpolate_ttft(isl)) for isl in task["isl"]],
        "prefill_thpt": [_num(prefill.interpolate_thpt_per_gpu(isl)) for isl in task["isl"]],
        "itl": [_num(decode.interpolate_itl(c, y)) for c, y in zip(task["concurrency"], task["context"])],
        "decode_thpt": [
            _num(decode.interpolate_thpt_per_gpu(c, y)) for c, y in zip(task["concurrency"], task["context"])
        ],
        "max_kv_tokens": int(decode.max_kv_tokens),
        "best": [_num(v) for v in decode.find_best_throughput_per_gpu(task["itl_target"], task["context_target"])],
    }


def regression(task: dict[str, Any]) -> dict[str, Any]:
    """1.1+: profile data -> synthetic forward-pass samples -> the planner's regression models."""
    metrics = importlib.import_module("dynamo.planner.monitoring.perf_metrics")
    config = importlib.import_module("dynamo.planner.config.planner_config").PlannerConfig()
    prefill_cls = importlib.import_module("dynamo.planner.core.perf_model.prefill").PrefillRegressionModel
    decode_cls = importlib.import_module("dynamo.planner.core.perf_model.decode").DecodeRegressionModel
    sizes = (config.max_num_fpm_samples, config.load_min_observations, config.fpm_sample_bucket_size)
    p_fpms = metrics._convert_prefill_profiling(task["dir"])
    d_fpms = metrics._convert_decode_profiling(task["dir"])
    prefill, decode = prefill_cls(*sizes), decode_cls(*sizes)
    prefill.load_benchmark_fpms(p_fpms)
    decode.load_benchmark_fpms(d_fpms)
    return {
        "prefill_samples": [
            [f.scheduled_requests.sum_prefill_tokens, f.wall_time * 1e3, f.scheduled_requests.num_prefill_requests]
            for f in p_fpms
        ],
        "decode_samples": [
            [f.scheduled_requests.num_decode_requests, f.scheduled_requests.sum_decode_kv_tokens, f.wall_time * 1e3]
            for f in d_fpms
        ],
        "prefill_fitted": bool(prefill._ensure_fitted()),
        "decode_fitted": bool(decode._ensure_fitted()),
        "ttft": [prefill._predict_wall_time(float(isl)) * 1e3 for isl in task["isl"]],
        "itl": [decode._predict_2d(float(n), float(kv)) * 1e3 for n, kv in zip(task["batch"], task["kv"])],
        "prefill_best": list(prefill.find_best_engine_prefill_rps(task["ttft_target"], task["isl_target"])),
        "decode_best": list(
            decode.find_best_engine_decode_rps(
                task["itl_target"], task["context_target"], task["osl_target"], task["max_kv_tokens"]
            )
        ),
    }


def dgdr_spec(task: dict[str, Any]) -> dict[str, Any]:
    """1.x: validate a bare DGDR v1beta1 spec with the profiler's own model (what `--config` takes)."""
    types_module = importlib.import_module("dynamo.profiler.utils.dgdr_v1beta1_types")
    spec = types_module.DynamoGraphDeploymentRequestSpec.model_validate(task["spec"])
    return json.loads(spec.model_dump_json(exclude_none=True))


TASKS = {f.__name__: f for f in (planner_flags, planner_config, interpolators, regression, dgdr_spec)}

if __name__ == "__main__":
    _prepare(Path(sys.argv[1]))
    request = json.load(sys.stdin)
    result = TASKS[request["task"]](request)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
