"""Interpolators for DAG step `fit`: predict prefill TTFT/throughput at any ISL and decode
ITL/throughput at any (concurrency, context) from a sweep's measured points.

Ours (`PrefillInterpolator`, `DecodeInterpolator`) fit the shape the physics dictates and then
correct it with the measured residuals:
- prefill: TTFT = a + b*isl + c*isl^2 (fixed cost, linear GEMMs, quadratic attention);
- decode: ITL = a + b*batch + c*batch*context (weights read once per step, per-sequence work,
  KV cache read: the active KV tokens), + d*(1 - exp(-batch/b0)) for MoE expert reads, batch
  rounded up to whole attention-DP ranks;
both fitted by non-negative least squares on *relative* error (each row divided by its measured
value, so a 5 ms point counts as much as a 500 ms one), then multiplied by exp(residual) where the
log-residuals of the measured points are interpolated (monotone cubic over ISL; linear along each
measured context row and across rows for decode). Measured points are reproduced exactly and
between them the physical shape carries the prediction, which is what coarse sweeps need.

Throughput follows from latency: prefill thpt/GPU = k * isl / TTFT and decode thpt/GPU =
k * batch / ITL, where the factor k (GPUs, attention-DP, client overheads) is taken from the
measured points and interpolated the same way.

The baseline (`DynamoPrefillInterpolator`, `DynamoDecodeInterpolator`) re-implements what Dynamo's
SLA planner does with the same files: `interp1d(kind="cubic")` over ISL with clamping; and
`griddata(method="cubic")` onto a 100x100 (kv_usage, context) grid, NaN cells filled by nearest,
looked up at the nearest grid cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from slaprof.steps.core.results import DecodePoint, PrefillPoint
from slaprof.steps.fitting.planner_data import DecodePlannerData, PrefillPlannerData

ArrayLike = float | Sequence[float] | np.ndarray


def _nnls_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares for a handful of columns: the optimum is the
    unconstrained fit on its set of positive coefficients, so try every column subset and keep
    the best fit whose coefficients are all non-negative. (scipy.optimize would cost 0.4 s of
    import time in a step that must finish in well under a second.)"""
    n = a.shape[1]
    best, best_err = np.zeros(n), float(np.sum(b * b))
    for k in range(1, n + 1):
        for cols in combinations(range(n), k):
            sub = a[:, cols]
            coef, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if np.any(coef < 0):
                continue
            err = float(np.sum((sub @ coef - b) ** 2))
            if err < best_err:
                best_err = err
                best = np.zeros(n)
                best[list(cols)] = coef
    return best


def _relative_nnls(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising sum(((design @ coef) - y) / y)^2."""
    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    return _nnls_small(design / scale / y[:, None], np.ones_like(y)) / scale


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson monotone slopes (the same rule as scipy's PchipInterpolator)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, harmonic, 0.0)

    def edge(h0: float, h1: float, m0: float, m1: float) -> float:
        slope = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(slope) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(slope) > 3 * abs(m0):
            return 3 * m0
        return slope

    d[0] = edge(h[0], h[1], delta[0], delta[1])
    d[-1] = edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip(x: np.ndarray, y: np.ndarray, d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cubic Hermite evaluation at q (inside [x0, xn])."""
    i = np.clip(np.searchsorted(x, q) - 1, 0, len(x) - 2)
    h = x[i + 1] - x[i]
    t = (q - x[i]) / h
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * y[i]
        + (t3 - 2 * t2 + t) * h * d[i]
        + (-2 * t3 + 3 * t2) * y[i + 1]
        + (t3 - t2) * h * d[i + 1]
    )


class _Residual1D:
    """Smooth interpolation of log-residuals over one variable; constant beyond the data."""

    def __init__(self, x: np.ndarray, r: np.ndarray) -> None:
        order = np.argsort(x)
        x, r = x[order], r[order]
        keep = np.concatenate(([True], np.diff(x) > 0))  # duplicate x: keep the first
        self.x, self.r = x[keep], r[keep]
        self.slopes = _pchip_slopes(self.x, self.r) if len(self.x) >= 2 else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.slopes is None:
            return np.full_like(x, self.r[0] if len(self.r) else 0.0, dtype=float)
        return _pchip(self.x, self.r, self.slopes, np.clip(x, self.x[0], self.x[-1]))


class _ResidualRows:
    """Log-residuals on a decode sweep: linear in batch along each measured context row (flat
    beyond its ends) and linear in context between the two nearest rows (flat beyond)."""

    def __init__(self, batch: np.ndarray, context: np.ndarray, r: np.ndarray) -> None:
        self.contexts = np.unique(context)
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []
        for c in self.contexts:
            sel = context == c
            order = np.argsort(batch[sel])
            self.rows.append((batch[sel][order], r[sel][order]))

    def __call__(self, batch: np.ndarray, context: np.ndarray) -> np.ndarray:
        per_row = np.stack([np.interp(batch, b, r) for b, r in self.rows])  # rows x queries
        if len(self.contexts) == 1:
            return per_row[0]
        c = np.clip(context, self.contexts[0], self.contexts[-1])
        hi = np.clip(np.searchsorted(self.contexts, c), 1, len(self.contexts) - 1)
        lo = hi - 1
        w = (c - self.contexts[lo]) / (self.contexts[hi] - self.contexts[lo])
        cols = np.arange(len(c))
        return (1 - w) * per_row[lo, cols] + w * per_row[hi, cols]


def _as_array(x: ArrayLike) -> tuple[np.ndarray, bool]:
    arr = np.asarray(x, dtype=float)
    return np.atleast_1d(arr), arr.ndim == 0


def _out(values: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(values[0]) if scalar else values


# ---------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------
class PrefillInterpolator:
    """TTFT (ms) and input throughput (tokens/s/GPU) of one engine at any ISL."""

    def __init__(self, isl: ArrayLike, ttft_ms: ArrayLike, thpt_per_gpu: ArrayLike) -> None:
        x = np.asarray(isl, dtype=float)
        y = np.asarray(ttft_ms, dtype=float)
        t = np.asarray(thpt_per_gpu, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(t) & (x > 0) & (y > 0) & (t > 0)
        x, y, t = x[ok], y[ok], t[ok]
        if len(x) == 0:
            raise ValueError("prefill interpolation needs at least one point with positive ISL, TTFT and throughput")
        self.isl, self.ttft, self.thpt = x, y, t
        # fewer points than parameters: keep the shape that the data can pin down
        cols = [np.ones_like(x), x, x * x][: max(1, min(3, len(np.unique(x))))]
        if len(cols) == 1:
            cols = [x]  # one point: proportional to ISL
        self.coef = np.zeros(3)
        fitted = _relative_nnls(np.column_stack(cols), y)
        if len(cols) == 1:
            self.coef[1] = fitted[0]
        else:
            self.coef[: len(fitted)] = fitted
        # residuals over log(ISL): the short-prompt regime (fixed costs, memory-bound steps)
        # spans a decade of ISL between the first two sweep points
        self._ttft_res = _Residual1D(np.log(x), np.log(y / self._shape(x)))
        self._k_res = _Residual1D(np.log(x), np.log(t * y / x))

    @classmethod
    def from_points(cls, points: Sequence[PrefillPoint]) -> PrefillInterpolator:
        return cls([p.isl for p in points], [p.ttft_ms for p in points], [p.thpt_per_gpu for p in points])

    @classmethod
    def from_planner_data(cls, data: PrefillPlannerData) -> PrefillInterpolator:
        return cls(data.prefill_isl, data.prefill_ttft, data.prefill_thpt_per_gpu)

    def _shape(self, x: np.ndarray) -> np.ndarray:
        a, b, c = self.coef
        return np.maximum(a + b * x + c * x * x, 1e-9)

    def _ttft(self, x: np.ndarray) -> np.ndarray:
        return self._shape(x) * np.exp(self._ttft_res(np.log(x)))

    def ttft_ms(self, isl: ArrayLike) -> float | np.ndarray:
        x, scalar = _as_array(isl)
        return _out(self._ttft(x), scalar)

    def thpt_per_gpu(self, isl: ArrayLike) -> float | np.ndarray:
        x, scalar = _as_array(isl)
        return _out(np.exp(self._k_res(np.log(x))) * x / self._ttft(x), scalar)

    def predict(self, isl: ArrayLike) -> tuple[float | np.ndarray, float | np.ndarray]:
        """(TTFT ms, throughput tokens/s/GPU)."""
        return self.ttft_ms(isl), self.thpt_per_gpu(isl)

    @property
    def isl_range(self) -> tuple[float, float]:
        return float(self.isl.min()), float(self.isl.max())


class DecodeInterpolator:
    """ITL (ms) and output throughput (tokens/s/GPU) of one engine at any (concurrency, context).

    With attention data parallelism (DEP) requests are spread round-robin over `attn_dp` ranks, so
    the busiest rank holds ceil(concurrency / attn_dp) of them: concurrency is rounded up to a
    multiple of attn_dp before anything else. MoE engines read more distinct experts as the batch
    grows, E * (1 - (1 - k/E)^batch): a saturating term 1 - exp(-batch/b0) joins the fit when it
    explains the data clearly better, with b0 chosen from a grid (dense models leave it out).
    """

    SATURATION_SCALES = np.geomspace(1.0, 512.0, 28)
    SATURATION_GAIN = 0.8  # keep the extra term only if it cuts the squared relative error by 20%

    def __init__(
        self,
        concurrency: ArrayLike,
        context: ArrayLike,
        itl_ms: ArrayLike,
        thpt_per_gpu: ArrayLike,
        max_kv_tokens: int,
        attn_dp: int | None = None,
    ) -> None:
        b = np.asarray(concurrency, dtype=float)
        c = np.asarray(context, dtype=float)
        y = np.asarray(itl_ms, dtype=float)
        t = np.asarray(thpt_per_gpu, dtype=float)
        ok = np.isfinite(b) & np.isfinite(c) & np.isfinite(y) & np.isfinite(t) & (b > 0) & (c > 0) & (y > 0) & (t > 0)
        b, c, y, t = b[ok], c[ok], y[ok], t[ok]
        if len(b) == 0:
            raise ValueError(
                "decode interpolation needs at least one point with positive concurrency, ITL and throughput"
            )
        # a sweep's concurrencies are multiples of attn_dp (its smallest point is attn_dp itself)
        self.attn_dp = int(attn_dp or max(1, int(np.gcd.reduce(np.round(b).astype(np.int64)))))
        self.concurrency, self.context, self.itl, self.thpt = b, c, y, t
        self.max_kv_tokens = int(max_kv_tokens)
        be = self._effective(b)
        self.coef, self.saturation_scale = self._fit_shape(be, c, y)
        self._itl_res = _ResidualRows(be, c, np.log(y / self._shape(be, c)))
        self._k_res = _ResidualRows(be, c, np.log(t * y / be))

    def _effective(self, b: np.ndarray) -> np.ndarray:
        return np.ceil(np.maximum(b, 1.0) / self.attn_dp) * self.attn_dp

    def _fit_shape(self, b: np.ndarray, c: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
        base = [np.ones_like(b), b, b * c]
        if len(b) < 3:
            return np.array([y.mean(), 0.0, 0.0, 0.0]), None

        def fit(cols: list[np.ndarray]) -> tuple[np.ndarray, float]:
            design = np.column_stack(cols)
            coef = _relative_nnls(design, y)
            return coef, float(np.sum(((design @ coef) / y - 1.0) ** 2))

        coef3, err3 = fit(base)
        best: tuple[np.ndarray, float, float | None] = (np.append(coef3, 0.0), err3, None)
        if len(b) >= 5 and err3 > 1e-12 * len(b):  # an exact affine fit needs nothing more
            for scale in self.SATURATION_SCALES:
                coef4, err4 = fit([*base, 1.0 - np.exp(-b / scale)])
                if err4 < best[1]:
                    best = (coef4, err4, float(scale))
            if best[2] is not None and best[1] > self.SATURATION_GAIN * err3:
                best = (np.append(coef3, 0.0), err3, None)
        return best[0], best[2]

    @classmethod
    def from_points(
        cls, points: Sequence[DecodePoint], max_kv_tokens: int, attn_dp: int | None = None
    ) -> DecodeInterpolator:
        return cls(
            [p.concurrency for p in points],
            [p.context for p in points],
            [p.itl_ms for p in points],
            [p.thpt_per_gpu for p in points],
            max_kv_tokens,
            attn_dp,
        )

    @classmethod
    def from_planner_data(cls, data: DecodePlannerData, attn_dp: int | None = None) -> DecodeInterpolator:
        """Rebuilt from the planner files; attn_dp defaults to the gcd of the recovered concurrencies."""
        return cls(
            data.concurrency(), data.y_context_length, data.z_itl, data.z_thpt_per_gpu, data.max_kv_tokens, attn_dp
        )

    def _shape(self, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        a0, a1, a2, a3 = self.coef
        shape = a0 + a1 * b + a2 * b * c
        if self.saturation_scale is not None:
            shape = shape + a3 * (1.0 - np.exp(-b / self.saturation_scale))
        return np.maximum(shape, 1e-9)

    def _itl(self, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        b = self._effective(b)
        return self._shape(b, c) * np.exp(self._itl_res(b, c))

    def _pair(self, concurrency: ArrayLike, context: ArrayLike) -> tuple[np.ndarray, np.ndarray, bool]:
        b, sb = _as_array(concurrency)
        c, sc = _as_array(context)
        b, c = np.broadcast_arrays(b, c)
        return b.astype(float), c.astype(float), sb and sc

    def itl_ms(self, concurrency: ArrayLike, context: ArrayLike) -> float | np.ndarray:
        b, c, scalar = self._pair(concurrency, context)
        return _out(self._itl(b, c), scalar)

    def thpt_per_gpu(self, concurrency: ArrayLike, context: ArrayLike) -> float | np.ndarray:
        b, c, scalar = self._pair(concurrency, context)
        return _out(np.exp(self._k_res(self._effective(b), c)) * b / self._itl(b, c), scalar)

    def predict(self, concurrency: ArrayLike, context: ArrayLike) -> tuple[float | np.ndarray, float | np.ndarray]:
        """(ITL ms, throughput tokens/s/GPU)."""
        return self.itl_ms(concurrency, context), self.thpt_per_gpu(concurrency, context)

    def predict_kv(self, kv_usage: ArrayLike, context: ArrayLike) -> tuple[float | np.ndarray, float | np.ndarray]:
        """As the planner queries: by KV usage (0..1) and context length."""
        x, sx = _as_array(kv_usage)
        c, sc = _as_array(context)
        b = np.maximum(1.0, x * self.max_kv_tokens / c)
        itl, thpt = self.predict(b, c)
        if sx and sc:
            return float(np.ravel(itl)[0]), float(np.ravel(thpt)[0])
        return itl, thpt

    def best_under_itl(
        self, itl_target_ms: float, context: float, max_concurrency: int | None = None, step: int | None = None
    ) -> tuple[int, float, float] | None:
        """Highest-throughput concurrency at `context` whose ITL meets the target:
        (concurrency, ITL ms, thpt/GPU), or None when even one request misses it."""
        most = max_concurrency or max(1, int(self.max_kv_tokens // max(context, 1.0)))
        step = step or self.attn_dp  # whole attention-DP ranks
        batch = np.arange(step, most + 1, step, dtype=float)
        if len(batch) == 0:
            return None
        itl, thpt = self.predict(batch, np.full_like(batch, float(context)))
        ok = np.asarray(itl) <= itl_target_ms
        if not ok.any():
            return None
        i = int(np.argmax(np.where(ok, thpt, -np.inf)))
        return int(batch[i]), float(np.asarray(itl)[i]), float(np.asarray(thpt)[i])


# ---------------------------------------------------------------------------
# baseline: what Dynamo's SLA planner does with the same data
# ---------------------------------------------------------------------------
class DynamoPrefillInterpolator:
    """`interp1d(kind="cubic")` of TTFT and throughput over ISL, ISL clamped to the measured range."""

    def __init__(self, data: PrefillPlannerData) -> None:
        from scipy.interpolate import interp1d

        isl = np.asarray(data.prefill_isl, dtype=float)
        kind = "cubic" if len(isl) >= 4 else "linear"  # interp1d's cubic needs four points
        self.min_isl, self.max_isl = float(isl.min()), float(isl.max())
        self._ttft = interp1d(isl, np.asarray(data.prefill_ttft, dtype=float), kind=kind)
        self._thpt = interp1d(isl, np.asarray(data.prefill_thpt_per_gpu, dtype=float), kind=kind)

    def ttft_ms(self, isl: ArrayLike) -> np.ndarray:
        return self._ttft(np.clip(np.asarray(isl, dtype=float), self.min_isl, self.max_isl))

    def thpt_per_gpu(self, isl: ArrayLike) -> np.ndarray:
        return self._thpt(np.clip(np.asarray(isl, dtype=float), self.min_isl, self.max_isl))


class DynamoDecodeInterpolator:
    """`griddata(method="cubic")` onto a resolution x resolution grid over kv_usage in [0, 1] and
    context in [0, max context], NaN cells filled by `method="nearest"`, nearest-cell lookup."""

    def __init__(self, data: DecodePlannerData, resolution: int = 100) -> None:
        x = np.asarray(data.x_kv_usage, dtype=float)
        y = np.asarray(data.y_context_length, dtype=float)
        self.max_kv_tokens = data.max_kv_tokens
        self.resolution = resolution
        self.xi = np.linspace(0, 1, resolution)
        self.yi = np.linspace(0, y.max(), resolution)
        grid_x, grid_y = np.meshgrid(self.xi, self.yi)
        grid = (grid_x, grid_y)
        self.itl_grid = self._fill(x, y, np.asarray(data.z_itl, dtype=float), grid)
        self.thpt_grid = self._fill(x, y, np.asarray(data.z_thpt_per_gpu, dtype=float), grid)

    @staticmethod
    def _fill(x: np.ndarray, y: np.ndarray, z: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        from scipy.interpolate import griddata

        try:
            surface = griddata((x, y), z, grid, method="cubic")
        except Exception:  # degenerate point sets (one row) cannot be triangulated
            surface = np.full(grid[0].shape, np.nan)
        nan = np.isnan(surface)
        if nan.any():
            surface[nan] = griddata((x, y), z, grid, method="nearest")[nan]
        return surface

    def _index(self, concurrency: ArrayLike, context: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        b = np.asarray(concurrency, dtype=float)
        c = np.asarray(context, dtype=float)
        kv = b * c / self.max_kv_tokens
        ix = np.clip(np.round((kv - self.xi[0]) / (self.xi[1] - self.xi[0])), 0, self.resolution - 1).astype(int)
        iy = np.clip(np.round((c - self.yi[0]) / (self.yi[1] - self.yi[0])), 0, self.resolution - 1).astype(int)
        return ix, iy

    def itl_ms(self, concurrency: ArrayLike, context: ArrayLike) -> np.ndarray:
        ix, iy = self._index(concurrency, context)
        return self.itl_grid[iy, ix]

    def thpt_per_gpu(self, concurrency: ArrayLike, context: ArrayLike) -> np.ndarray:
        ix, iy = self._index(concurrency, context)
        return self.thpt_grid[iy, ix]

    def find_best_throughput_per_gpu(self, itl_ms: float, context: float) -> tuple[float, float, float]:
        """Scan KV usage from high to low at the context's row: (thpt/GPU, ITL ms, kv_usage)."""
        iy = int(np.clip(np.round((context - self.yi[0]) / (self.yi[1] - self.yi[0])), 0, self.resolution - 1))
        for ix in range(self.resolution - 1, -1, -1):
            if self.itl_grid[iy, ix] <= itl_ms:
                return float(self.thpt_grid[iy, ix]), float(self.itl_grid[iy, ix]), float(self.xi[ix])
        return float(self.thpt_grid[iy, 0]), float(self.itl_grid[iy, 0]), float(self.xi[0])
