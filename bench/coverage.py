"""Coverage of the offline model's prediction intervals on GPUs it was never calibrated on.

For every evaluable row of the held-out systems (b200_sxm, gb200, b300_sxm, gb300) of AI
Configurator's silicon_sample.csv, computes the built-in model's TTFT and TPOT estimates and their
50%, 80% and 95% intervals (`steps/perf/intervals.json`, learned on the h100_sxm and h200_sxm
rows by `bench/calibrate.py`), and prints by backend and phase: how many rows, the share of
measurements inside each interval (nominal: 50 / 80 / 95%), and the median half-width of the
80% interval relative to the estimate, beside the narrowest single 80% interval for those rows:
the shortest window of measured/estimated ratios that holds 80% of them, found on the held-out
rows themselves (what one interval per backend and phase could reach with hindsight). With --calibration the calibration rows are scored too
(their coverage is above nominal: the intervals are widened for GPUs they were not learned on).

Needs the `aic` extra (the measured rows ship with AI Configurator): pip install 'slaprof[aic]'.

With --simulate it checks the stretch rule itself, away from the measured rows: residuals drawn
from a random-effects model (a shift per GPU of variance t, a scatter per row of variance w), 80%
intervals fitted on two GPUs, coverage scored on 30 new GPUs, many times over, for the shipped
rule (`new_system_stretch`) beside the baseline that stretches by the left-out factor itself.

    python bench/coverage.py
    python bench/coverage.py --calibration
    python bench/coverage.py --simulate [--gpus 4]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slaprof.steps.core.errors import UserError  # noqa: E402
from slaprof.steps.perf.intervals import (  # noqa: E402
    COVERAGES,
    Intervals,
    fit_intervals,
    load_intervals,
    new_system_stretch,
)

PHASE_NAMES = {"ttft": "TTFT", "itl": "TPOT"}


Row = tuple[list[bool], float, float]  # inside each interval?, 80% half-width / estimate, log(measured/estimated)


def score(cases) -> dict[tuple[str, str], list[Row]]:
    """(backend, phase) -> per row: inside each interval?, the 80% half-width / estimate, the residual."""
    from slaprof.steps.perf.silicon import case_residuals

    cal = load_intervals()
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for c in cases:
        for _, phase, backend, load, isl, structure, r in case_residuals(c):
            inside = []
            for cov in COVERAGES:
                tail = (1.0 - cov) / 2.0
                lo = cal.factor(tail, phase, backend, load, isl, structure)
                hi = cal.factor(1.0 - tail, phase, backend, load, isl, structure)
                inside.append(math.log(lo) <= r <= math.log(hi))
            lo80 = cal.factor(0.1, phase, backend, load, isl, structure)
            hi80 = cal.factor(0.9, phase, backend, load, isl, structure)
            out[(backend, phase)].append((inside, (hi80 - lo80) / 2.0, r))
    return out


HEADER = (
    f"{'phase':5s} {'backend':7s} {'rows':>5s} | {'50%':>5s} {'80%':>5s} {'95%':>5s} | {'80% half-width':>14s}"
    f" {'narrowest possible':>18s}"
)


def narrowest_half_width(residuals: np.ndarray, coverage: float = 0.8) -> float:
    """Half-width, relative to the estimate, of the shortest window of measured/estimated ratios
    holding `coverage` of the rows."""
    ratios = np.sort(np.exp(residuals))
    k = max(1, math.ceil(coverage * len(ratios)))
    return float(np.min(ratios[k - 1 :] - ratios[: len(ratios) - k + 1]) / 2.0)


def table(title: str, scored: dict[tuple[str, str], list[Row]]) -> None:
    print(f"\n{title}")
    print(HEADER)
    print("-" * len(HEADER))
    for phase in PHASE_NAMES:
        everything = []
        for backend in sorted({b for b, p in scored if p == phase}):
            rows = scored[(backend, phase)]
            everything += rows
            _line(PHASE_NAMES[phase], backend, rows)
        _line(PHASE_NAMES[phase], "all", everything)


def _line(phase: str, backend: str, rows: list[Row]) -> None:
    inside = np.array([r[0] for r in rows], dtype=float)
    widths = np.array([r[1] for r in rows])
    best = narrowest_half_width(np.array([r[2] for r in rows]))
    cov = " ".join(f"{x * 100:4.0f}%" for x in inside.mean(axis=0))
    print(f"{phase:5s} {backend:7s} {len(rows):5d} | {cov} | {np.median(widths) * 100:13.0f}% {best * 100:17.0f}%")


SIM_RATIOS = (0.1, 0.25, 0.5, 1.0)  # t / w: between-GPU shift variance over per-row scatter variance
SIM_TRIALS = 50
SIM_ROWS = 150  # rows per GPU
SIM_NEW_GPUS = 30


def _new_gpu_coverage(cal: Intervals, rng: np.random.Generator, t: float) -> float:
    lo = math.log(cal.factor(0.1, "itl", "vllm", 8.0, 1000, "dense"))
    hi = math.log(cal.factor(0.9, "itl", "vllm", 8.0, 1000, "dense"))
    rows = rng.normal(0.0, math.sqrt(t), (SIM_NEW_GPUS, 1)) + rng.normal(size=(SIM_NEW_GPUS, SIM_ROWS))
    return float(np.mean((rows >= lo) & (rows <= hi)))


def simulate(calibration_gpus: int = 2, seed: int = 1) -> None:
    """80% coverage on new GPUs of intervals fitted on `calibration_gpus`, by rule and t / w."""
    rules = {"shipped: new_system_stretch": new_system_stretch, "baseline: left-out stretch": lambda k, _n: k}
    print(
        f"\nsimulated: 80% intervals fitted on {calibration_gpus} GPUs ({SIM_ROWS} rows each), scored on "
        f"{SIM_NEW_GPUS} new GPUs; {SIM_TRIALS} draws per row (nominal 80%)"
    )
    header = f"{'t / w':>6s} {'rule':28s} | {'mean':>5s} {'sd':>5s} {'within 7':>8s}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(seed)
    for t in SIM_RATIOS:
        scores: dict[str, list[float]] = {name: [] for name in rules}
        for _ in range(SIM_TRIALS):
            shifts = rng.normal(0.0, math.sqrt(t), calibration_gpus)
            residuals = [
                (f"gpu{i}", "itl", "vllm", 8.0, 1000, "dense", float(shifts[i] + x))
                for i in range(calibration_gpus)
                for x in rng.normal(size=SIM_ROWS)
            ]
            state = rng.bit_generator.state
            for name, rule in rules.items():
                rng.bit_generator.state = state  # every rule is scored on the same new GPUs
                scores[name].append(_new_gpu_coverage(fit_intervals(residuals, "", "", stretch=rule), rng, t))
        for name, got in scores.items():
            c = np.array(got)
            within = np.mean(np.abs(c - 0.8) <= 0.07)
            print(f"{t:6.2f} {name:28s} | {c.mean() * 100:4.1f}% {c.std() * 100:4.1f} {within * 100:7.0f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", action="store_true", help="also score the calibration rows (in-sample)")
    parser.add_argument(
        "--simulate", action="store_true", help="score the stretch rule on simulated GPUs instead of measured rows"
    )
    parser.add_argument(
        "--gpus", type=int, default=2, help="with --simulate: calibration GPUs the intervals are fitted on"
    )
    args = parser.parse_args()
    if args.simulate:
        if args.gpus < 2:
            parser.error("--gpus: at least 2 (one is left out to learn the stretch)")
        simulate(args.gpus)
        return 0
    try:
        from slaprof.steps.perf.silicon import load_cases

        cases = [c for c in load_cases() if not c.skip]
    except UserError as exc:
        sys.exit(f"coverage: {exc}")
    cal = load_intervals()
    print(f"intervals: {cal.source} (fitted {cal.fitted_at or 'never'})")
    table(
        "held-out systems (b200_sxm, gb200, b300_sxm, gb300): share of measurements inside the 50/80/95% intervals",
        score([c for c in cases if not c.calibration]),
    )
    if args.calibration:
        table("calibration systems (h100_sxm, h200_sxm; in-sample)", score([c for c in cases if c.calibration]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
