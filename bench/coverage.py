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

    python bench/coverage.py
    python bench/coverage.py --calibration
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
from slaprof.steps.perf.intervals import COVERAGES, load_intervals  # noqa: E402

PHASE_NAMES = {"ttft": "TTFT", "itl": "TPOT"}


Row = tuple[list[bool], float, float]  # inside each interval?, 80% half-width / estimate, log(measured/estimated)


def score(cases) -> dict[tuple[str, str], list[Row]]:
    """(backend, phase) -> per row: inside each interval?, the 80% half-width / estimate, the residual."""
    from slaprof.steps.perf.silicon import case_residuals

    cal = load_intervals()
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for c in cases:
        for _, phase, backend, load, isl, moe, r in case_residuals(c):
            inside = []
            for cov in COVERAGES:
                tail = (1.0 - cov) / 2.0
                lo = cal.factor(tail, phase, backend, load, isl, moe)
                hi = cal.factor(1.0 - tail, phase, backend, load, isl, moe)
                inside.append(math.log(lo) <= r <= math.log(hi))
            lo80 = cal.factor(0.1, phase, backend, load, isl, moe)
            hi80 = cal.factor(0.9, phase, backend, load, isl, moe)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", action="store_true", help="also score the calibration rows (in-sample)")
    args = parser.parse_args()
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
