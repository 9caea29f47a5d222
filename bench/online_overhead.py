"""How much of an engine's up-time the bench step spends measuring (simulate method, real AIPerf).

For one candidate it runs the bench twice on the same grid and prints, per mode, the seconds
the engine was up, the seconds requests were in flight under AIPerf (`measuring`), the seconds
spent warming prefix caches, and measuring / engine-up:
  baseline   each AIPerf run is started when the previous one has finished (its ~10 s start-up
             idles the engine), as a sequential profiler does;
  pipelined  slaprof's default: AIPerf runs start gated and ahead (during engine start-up and
             while the previous run measures) and are released the moment the engine is free.
With --repeats N it prints medians over N runs of each mode.

    .venv/bin/python bench/online_overhead.py                      # ~3 min on 2 cores
    .venv/bin/python bench/online_overhead.py --osl 500 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _request(args: argparse.Namespace):
    from slaprof.steps.core.request import build_request

    return build_request(
        {
            "model": args.model,
            "backend": "vllm",
            "method": "simulate",
            "sla": {"isl": args.isl, "osl": args.osl, "ttft_ms": 1000, "itl_ms": 100},
            "hardware": {"gpu": args.gpu, "max_gpus_per_engine": 1},
            "engine": {"max_context_length": args.max_context},
            "sweep": {"prefill_granularity": 2, "decode_granularity": args.concurrency_points},
        }
    )


def run_once(args: argparse.Namespace, tokenizer: Path, pipeline: bool, workdir: Path) -> dict[str, float]:
    from slaprof.steps.dag.bench import BenchOptions, measure_candidate
    from slaprof.steps.dag.plan import make_plan

    request = _request(args)
    plan = make_plan(request)
    opts = BenchOptions(
        tokenizer=str(tokenizer),
        time_scale=args.time_scale,
        sim_max_kv_tokens=args.kv_tokens,
        startup_s=args.startup,
        max_prefill_points=2,
        max_decode_isls=1,
        pipeline=pipeline,
        one_session=False,  # the online path: an AIPerf run per point
    )
    t0 = time.monotonic()
    profile = measure_candidate(request, plan, plan.runnable()[0], workdir, None, opts)
    wall = time.monotonic() - t0
    if profile.status != "ok":
        raise SystemExit(f"bench failed ({'pipelined' if pipeline else 'baseline'}): {profile.reason}")
    p = profile.provenance
    return {
        "engine_up_s": p.engine_up_s,
        "measuring_s": p.measuring_s,
        "ratio": p.measuring_s / p.engine_up_s,
        "wall_s": wall,
        "points": len(profile.prefill) + len(profile.decode),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "models" / "Qwen3-0.6B"))
    ap.add_argument("--gpu", default="h100_sxm")
    ap.add_argument("--isl", type=int, default=200)
    ap.add_argument("--osl", type=int, default=200)
    ap.add_argument("--max-context", type=int, default=2048)
    ap.add_argument("--kv-tokens", type=int, default=2000, help="simulated KV capacity (caps the concurrencies)")
    ap.add_argument("--concurrency-points", type=int, default=3)
    ap.add_argument(
        "--time-scale",
        type=float,
        default=25.0,
        help="wall ms per modelled ms: 25 makes a decode point of OSL 200 last ~10 s, like a GPU engine's",
    )
    ap.add_argument("--startup", type=float, default=0.0, help="simulated engine start-up seconds")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.plugins.tokenizer import build_tiny_tokenizer

    with tempfile.TemporaryDirectory(prefix="slaprof-overhead-") as tmp:
        tokenizer = build_tiny_tokenizer(Path(tmp) / "tokenizer")
        rows: dict[str, list[dict[str, float]]] = {"baseline": [], "pipelined": []}
        for i in range(args.repeats):
            for mode in ("baseline", "pipelined"):
                rows[mode].append(run_once(args, tokenizer, mode == "pipelined", Path(tmp) / f"{mode}-{i}"))
                print(f"  run {i + 1}/{args.repeats} {mode}: {rows[mode][-1]}", file=sys.stderr, flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[mode])

    print(
        f"\nsimulate, {Path(args.model).name} on {args.gpu}, time scale {args.time_scale:g}, ISL {args.isl}, "
        f"OSL {args.osl}, {int(med('pipelined', 'points'))} points, medians of {args.repeats} run(s)"
    )
    print(f"{'mode':<10} {'engine up s':>12} {'measuring s':>12} {'measuring/up':>13} {'wall s':>8}")
    for mode in ("baseline", "pipelined"):
        print(
            f"{mode:<10} {med(mode, 'engine_up_s'):>12.1f} {med(mode, 'measuring_s'):>12.1f} "
            f"{med(mode, 'ratio'):>12.0%} {med(mode, 'wall_s'):>8.1f}"
        )
    print(
        f"pipelined / baseline: engine-up x{med('pipelined', 'engine_up_s') / med('baseline', 'engine_up_s'):.2f}, "
        f"measuring share x{med('pipelined', 'ratio') / med('baseline', 'ratio'):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
