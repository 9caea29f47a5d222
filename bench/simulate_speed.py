"""Wall time and accuracy of `slaprof profile --method simulate` for a small model, as a user runs it.

Job: Qwen3-0.6B (config fixture) on h200_sxm, ISL 3000, OSL 150, TTFT 200 ms, ITL 20 ms, the default
grids and serving mode (--serving auto: 3 disaggregated candidates tp1..tp4, each 18 prefill ISLs, 2
prefill loads and 7 decode contexts x 6 concurrencies, and 4 aggregated ones agg-tp1..agg-tp8 of 6
concurrencies each), with the small tokenizer the tests build (nothing downloaded). `slaprof profile` runs in a
fresh process into a fresh folder. Printed: wall time, AIPerf runs, and every point's error against
the model that drives the simulated engine (per candidate: largest error, points beyond 15%), with
the machine's load average before and after (the clock is shared with whatever else runs).

Baseline measured in the same run (--baseline): the same job on a thinned grid of one candidate
(tp1: 2 prefill ISLs, 1 decode context x 3 concurrencies), measured as simulate did before (an
AIPerf run per point, time scale 1) and as it does now (one AIPerf run, a time scale per point).

    .venv/bin/python bench/simulate_speed.py [--time-scale auto,10/disagg] [--parallel N] [--baseline]

A fixed time scale of 10 also slows the aggregated candidates' long closed loops tenfold (minutes per
point); `10/disagg` runs the candidates whose points are checked against the model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "tests" / "fixtures" / "models" / "Qwen3-0.6B"
REQUEST = ["--model", str(MODEL), "--gpu", "h200_sxm", "--isl", "3000", "--osl", "150", "--ttft", "200", "--itl", "20"]
TARGET_S = 180.0


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def profiles(out: Path) -> list:
    from slaprof.steps.core.results import CandidateProfile

    return [CandidateProfile.model_validate_json(p.read_text()) for p in sorted((out / "profiles").glob("*.json"))]


def summarize(name: str, wall: float, found: list) -> list[str]:
    from slaprof.steps.measure.simcheck import TOLERANCE, flagged, label

    runs = sum(p.provenance.aiperf_runs for p in found)
    checks = [c for p in found for c in p.checks]
    worst = max((abs(c.error) for c in checks), default=0.0)
    bad = sum(len(flagged(p)) for p in found)
    failed = sum(len(p.failed_points) for p in found)
    lines = [
        f"{name:<44} {wall:8.1f} {runs:6d} {len(checks):7d} {worst:9.1%} {bad:8d} {failed:7d}",
    ]
    for p in found:
        cw = max((abs(c.error) for c in p.checks), default=0.0)
        mean = sum(abs(c.error) for c in p.checks) / max(1, len(p.checks))
        lines.append(
            f"  {p.id:<6} {p.status:<6} points {len(p.prefill):2d}+{len(p.decode):2d} "
            f"(under load {len(p.prefill_load)}, agg {len(p.agg)}), |error| mean {mean:5.1%} "
            f"max {cw:5.1%}, beyond {TOLERANCE:.0%}: {len(flagged(p))}, engine up {p.provenance.engine_up_s:5.1f} s, "
            f"measuring {p.provenance.measuring_s:5.1f} s"
        )
        lines += [f"      flagged {label(c)} (time scale {c.time_scale:g})" for c in flagged(p)]
    return lines


def run_cli(tokenizer: Path, out: Path, extra: list[str]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "slaprof.steps.cli.main",
        "profile",
        *REQUEST,
        "--method",
        "simulate",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--progress",
        "none",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("SLAPROF_TOKENIZER", "SLAPROF_SIM_TIME_SCALE")}
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"profile failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall


def run_thin(tokenizer: Path, out: Path, one_session: bool, time_scale: float | None) -> float:
    """The thinned one-candidate job through the runner, with bench options a CLI flag does not reach."""
    from slaprof.steps.core.request import build_request
    from slaprof.steps.runner.local import RunOptions, run_profile

    request = build_request(
        {
            "model": str(MODEL),
            "method": "simulate",
            "sla": {"isl": 3000, "osl": 150, "ttft_ms": 200, "itl_ms": 20},
            "hardware": {"gpu": "h200_sxm", "max_gpus_per_engine": 1},
        }
    )
    overrides = {
        "tokenizer": str(tokenizer),
        "one_session": one_session,
        "time_scale": time_scale if time_scale is not None else "auto",
        "max_prefill_points": 2,
        "max_decode_isls": 1,
        "max_concurrency_points": 3,
    }
    start = time.perf_counter()
    result = run_profile(request, RunOptions(out=str(out), bench_overrides=overrides))
    wall = time.perf_counter() - start
    if not all(o.status == "ok" for o in result.outcomes):
        sys.exit(f"thin run failed: {result.outcomes}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--time-scale",
        default="auto",
        help="auto (default) or wall ms per modelled ms, each optionally /agg or /disagg (--serving); "
        "several: auto,10/disagg",
    )
    parser.add_argument("--parallel", type=int, help="candidates at once (default: slaprof's)")
    parser.add_argument("--baseline", action="store_true", help="also the thinned job, per point vs one session")
    args = parser.parse_args()

    from tests.plugins.tokenizer import build_tiny_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="slaprof-simspeed-"))
    tokenizer = build_tiny_tokenizer(tmp / "tokenizer")
    print(f"load average before: {load()}", flush=True)
    header = f"{'run':<44} {'wall s':>8} {'AIPerf':>6} {'points':>7} {'max err':>9} {'>15%':>8} {'failed':>7}"
    rows: list[str] = []
    if args.baseline:
        for name, one, scale in (
            ("thin grid, tp1: a run per point, scale 1", False, 1.0),
            ("thin grid, tp1: one session, scale auto", True, None),
        ):
            out = tmp / name.split(": ")[1].replace(" ", "-").replace(",", "")
            wall = run_thin(tokenizer, out, one, scale)
            rows += summarize(name, wall, profiles(out))
    walls = {}
    for run in args.time_scale.split(","):
        scale, _, serving = run.partition("/")
        extra = ["--time-scale", scale] + (["--parallel", str(args.parallel)] if args.parallel else [])
        extra += ["--serving", serving] if serving else []
        out = tmp / f"default-{scale}-{serving or 'auto'}"
        walls[run] = wall = run_cli(tokenizer, out, extra)
        found = profiles(out)
        name = f"default grids, {len(found)} candidates: scale {scale}" + (f", {serving} only" if serving else "")
        rows += summarize(name, wall, found)
        print(f"load average after {run}: {load()}", flush=True)
        print("\n".join(summarize(name, wall, found)), flush=True)  # a later run's timeout keeps this one
    print()
    print(
        f"simulate, {MODEL.name} on h200_sxm, ISL 3000, OSL 150, default grids "
        f"(slaprof profile in a fresh process; target <= {TARGET_S:.0f} s)"
    )
    print(header)
    print("\n".join(rows))
    for run, wall in walls.items():
        verdict = "met" if wall <= TARGET_S else "NOT met"
        print(f"scale {run}: {wall:.1f} s, target {TARGET_S:.0f} s {verdict} ({wall / TARGET_S:.2f} of target)")


if __name__ == "__main__":
    main()
