"""Prediction intervals of offline estimates: how far measured TTFT and ITL land from the estimate.

Input: the residuals log(measured / estimated) of the built-in model on the calibration rows
(`bench/calibrate.py` computes them right after fitting the constants), grouped by what the
error depends on: backend, phase (TTFT or TPOT/ITL), load (prompts or sequences in flight per
attention-DP rank), prompt length and architecture (dense, MoE, MLA).
Output: `intervals.json` beside `calibration.json` (quantiles of the residuals per group, with
their source and date), and for any estimate its P-quantile and central intervals.

A group needs `min_rows` rows; otherwise the coarser group above it answers (ISL is dropped
first, then the structure, then the load), down to (backend, phase). Every group is stretched
around its median for a GPU the model was not calibrated on (`new_system_stretch`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

INTERVALS_FILE = "intervals.json"
PHASES = ("ttft", "itl")
# quantile levels stored per group: enough for the 50/80/95% intervals and any --confidence
LEVELS: tuple[float, ...] = tuple(round(x, 3) for x in [0.01, *np.arange(0.025, 0.976, 0.025), 0.99])
LOAD_EDGES = (4, 16, 64)  # prompts / sequences in flight per attention-DP rank
ISL_EDGE = 2048
COVERAGES = (0.5, 0.8, 0.95)


def _load_bin(load: float) -> str:
    lo = 0
    for edge in LOAD_EDGES:
        if load <= edge:
            return f"load{lo + 1}-{edge}"
        lo = edge
    return f"load>{LOAD_EDGES[-1]}"


def group_keys(phase: str, backend: str, load: float, isl: int, structure: str) -> list[str]:
    """The groups an estimate belongs to, finest first."""
    base = f"{phase}/{'vllm' if backend == 'simulated' else backend}"
    lb, ib = _load_bin(load), "isl<=2048" if isl <= ISL_EDGE else "isl>2048"
    return [f"{base}/{lb}/{structure}/{ib}", f"{base}/{lb}/{structure}", f"{base}/{lb}", base]


class Group(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: int
    quantiles: list[float]  # log(measured / estimated) at LEVELS


class Intervals(BaseModel):
    """The file: residual quantiles per group, plus where they came from."""

    version: int = 1
    source: str = "none: every interval is the estimate itself"
    fitted_at: str = ""
    method: str = ""
    min_rows: int = 40
    levels: list[float] = Field(default_factory=lambda: list(LEVELS))
    groups: dict[str, Group] = Field(default_factory=dict)

    def group(self, phase: str, backend: str, load: float, isl: int, structure: str) -> Group | None:
        for key in group_keys(phase, backend, load, isl, structure):
            if key in self.groups:
                return self.groups[key]
        return None

    def factor(self, p: float, phase: str, backend: str, load: float, isl: int, structure: str) -> float:
        """measured / estimated at quantile `p` (1.0 when nothing was calibrated)."""
        g = self.group(phase, backend, load, isl, structure)
        if g is None:
            return 1.0
        return math.exp(float(np.interp(p, self.levels, g.quantiles)))


@dataclass(frozen=True)
class Band:
    """A central interval around an estimate."""

    coverage: float
    lo: float
    hi: float

    def label(self) -> str:
        """`[80%: 131-224]`, `[80%: 9.1-26.4]`: appended to a Dynamo-format line."""
        return f"[{self.coverage * 100:.0f}%: {_short(self.lo)}-{_short(self.hi)}]"


def _short(ms: float) -> str:
    """Three significant digits or more, no exponent."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


@dataclass(frozen=True)
class Context:
    """What an estimate's error depends on, besides its phase and load."""

    backend: str
    isl: int
    structure: str  # ModelInfo.structure: dense, moe or mla

    def band(self, value: float, phase: str, load: float, coverage: float = 0.8) -> Band:
        cal = load_intervals()
        tail = (1.0 - coverage) / 2.0
        lo = value * cal.factor(tail, phase, self.backend, load, self.isl, self.structure)
        hi = value * cal.factor(1.0 - tail, phase, self.backend, load, self.isl, self.structure)
        return Band(coverage, lo, hi)

    def at_confidence(self, value: float, phase: str, load: float, confidence: float) -> float:
        """The latency a configuration is judged by at `confidence`: the estimate at 0.5 (as without
        intervals); above it, the larger of the estimate and its `confidence`-quantile (never less
        safe than the estimate); below it, the smaller."""
        if confidence == 0.5:
            return value
        q = value * load_intervals().factor(confidence, phase, self.backend, load, self.isl, self.structure)
        return max(value, q) if confidence > 0.5 else min(value, q)


Residual = tuple[str, str, str, float, int, str, float]  # system, phase, backend, load, isl, structure, log ratio
WIDENINGS = tuple(round(1.0 + 0.05 * i, 2) for i in range(61))  # 1.0 .. 4.0


def _quantiles(residuals: Sequence[Residual], min_rows: int) -> dict[str, list[float]]:
    by_key: dict[str, list[float]] = {}
    for _, phase, backend, load, isl, structure, r in residuals:
        for key in group_keys(phase, backend, load, isl, structure):
            by_key.setdefault(key, []).append(r)
    return {
        key: [float(q) for q in np.quantile(rs, LEVELS)]
        for key, rs in sorted(by_key.items())
        if len(rs) >= min_rows or key.count("/") == 1
    }


def _widen(q: list[float], k: float) -> list[float]:
    """Stretch quantiles by `k` around their median."""
    mid = q[LEVELS.index(0.5)]
    return [mid + k * (x - mid) for x in q]


def _lookup(groups: dict[str, list[float]], row: Residual) -> list[float] | None:
    _, phase, backend, load, isl, structure, _ = row
    return next((groups[k] for k in group_keys(phase, backend, load, isl, structure) if k in groups), None)


def cross_system_widening(residuals: Sequence[Residual], min_rows: int, coverage: float = 0.8) -> dict[str, float]:
    """Per phase/backend, the smallest stretch with which quantiles learned on all calibration systems
    but one cover `coverage` of the left-out system's rows (each system left out in turn, pooled): the
    residuals of a GPU the model was not calibrated on move as one, which quantiles of rows from the
    same GPUs do not show."""
    systems = sorted({r[0] for r in residuals})
    lo_i, hi_i = LEVELS.index(round((1 - coverage) / 2, 3)), LEVELS.index(round((1 + coverage) / 2, 3))
    out: dict[str, float] = {}
    for base in sorted({f"{r[1]}/{r[2]}" for r in residuals}):
        splits = []
        for held in systems:
            learn = _quantiles([r for r in residuals if r[0] != held], min_rows)
            rows = [r for r in residuals if r[0] == held and f"{r[1]}/{r[2]}" == base]
            found = [(q, r[6]) for r in rows if (q := _lookup(learn, r)) is not None]
            if found:
                splits.append(found)
        out[base] = WIDENINGS[-1]
        for k in WIDENINGS:
            covered = [_widen(q, k)[lo_i] <= r <= _widen(q, k)[hi_i] for f in splits for q, r in f]
            if not covered or float(np.mean(covered)) >= coverage:
                out[base] = k
                break
    return out


def new_system_stretch(left_out: float, systems: int) -> float:
    """The stretch for quantiles learned on all `systems`, from `left_out`, the stretch that quantiles
    learned on `systems` - 1 of them needed for the one left out.

    Residuals as a random-effects model: a per-system shift of variance t on top of a per-row scatter
    of variance w. Quantiles pooled over m systems spread as w + t(m-1)/m and miss a new system's rows,
    which spread as w + t(1 + 1/m) around them. The left-out stretch measures that ratio at
    m = systems - 1, which gives t/w; the answer is the ratio at m = systems. Stretching the pooled
    quantiles by the left-out factor itself counts the shift twice: the pooled quantiles already hold
    part of it (with two systems, a left-out 1.45 becomes 1.2)."""
    if systems < 2 or left_out <= 1.0:
        return max(left_out, 1.0)
    m = systems - 1
    k2 = left_out * left_out
    room = (1 + 1 / m) - k2 * (m - 1) / m
    if room <= 0:  # the shift swamps the scatter: only the shift's term is left
        return math.sqrt((1 + 1 / systems) / ((systems - 1) / systems))
    ratio = (k2 - 1) / room
    return math.sqrt((1 + ratio * (1 + 1 / systems)) / (1 + ratio * (systems - 1) / systems))


def fit_intervals(
    residuals: Sequence[Residual],
    source: str,
    fitted_at: str,
    min_rows: int = 40,
    stretch: Callable[[float, int], float] = new_system_stretch,
) -> Intervals:
    """Quantiles of log(measured/estimated) per group, stretched for a GPU not among the calibration
    systems by `stretch`(left-out stretch, number of systems)."""
    systems = len({r[0] for r in residuals})
    left_out = cross_system_widening(residuals, min_rows)
    widen = {base: round(stretch(k, systems), 3) for base, k in left_out.items()}
    counts: dict[str, int] = {}
    for _, phase, backend, load, isl, structure, _ in residuals:
        for key in group_keys(phase, backend, load, isl, structure):
            counts[key] = counts.get(key, 0) + 1
    groups = {
        key: Group(rows=counts[key], quantiles=[round(x, 4) for x in _widen(q, widen["/".join(key.split("/")[:2])])])
        for key, q in _quantiles(residuals, min_rows).items()
    }
    return Intervals(
        source=source,
        fitted_at=fitted_at,
        method=(
            "empirical quantiles of log(measured / estimated) per group of backend, phase, load per rank "
            f"(edges {', '.join(map(str, LOAD_EDGES))}), structure (dense, MoE, MLA) and ISL (<= {ISL_EDGE} or above); "
            f"a group with fewer than {min_rows} rows defers to the coarser one; stretched around the median "
            "for a new GPU: the smallest factor with which quantiles learned on all calibration systems but "
            "one cover 80% of the left-out one's rows, "
            + ", ".join(f"{k} {v:g}" for k, v in left_out.items())
            + f", turned by a random-effects account of per-system shifts into the factor for quantiles "
            f"learned on all {systems}: " + ", ".join(f"{k} {v:g}" for k, v in widen.items())
        ),
        min_rows=min_rows,
        groups=groups,
    )


@lru_cache(maxsize=1)
def load_intervals() -> Intervals:
    """The packaged intervals, or none (every interval collapses onto its estimate) when absent."""
    try:
        text = resources.files("slaprof.steps.perf").joinpath(INTERVALS_FILE).read_text()
    except (FileNotFoundError, OSError):
        return Intervals()
    return Intervals.model_validate(json.loads(text))
