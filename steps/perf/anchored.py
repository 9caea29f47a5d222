"""Anchored surfaces (`surfaces.estimator_for(..., anchored=True)`): a slow exact estimator at a few points.

Input: an exact PerfEstimator that answers one point at a time (AI Configurator: 1.5-6 s a call)
and the built-in model for the same (model, GPU, backend, mapping).
Output: the PerfEstimator interface. A whole surface asked for at once (arrays, as
`surfaces.offline_profile` asks) is answered by calling the exact estimator only at anchor points
(the smallest, a middle and the largest ISL of the prefill sweep; the same three contexts by three
concurrencies of the decode sweep; three concurrencies of an aggregated sweep) and filling the rest with the built-in model's shape, scaled by
the exact/built-in ratio interpolated in log space between the anchors. Single points go to the
exact estimator unchanged.
"""

from __future__ import annotations

import numpy as np

from slaprof.steps.perf.roofline import AggEstimate

ANCHORS_PER_AXIS = 3


def anchor_values(values, n: int = ANCHORS_PER_AXIS) -> list[int]:
    """Up to `n` of the distinct `values`: the smallest, the largest and those nearest to evenly
    spaced points in log space between them."""
    distinct = np.unique(np.asarray(values, dtype=float))
    if len(distinct) <= n:
        return [int(v) for v in distinct]
    targets = np.exp(np.linspace(np.log(distinct[0]), np.log(distinct[-1]), n))
    picks = {int(distinct[np.argmin(np.abs(np.log(distinct) - np.log(t)))]) for t in targets}
    return sorted(picks)


def _interp_log(x, anchors: list[int], ratios: list[float]):
    """Ratio at x, linear in log x between anchors, constant beyond them."""
    if len(anchors) == 1:
        return np.full(np.shape(x), ratios[0])
    return np.interp(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(anchors, dtype=float)), ratios)


class AnchoredEstimator:
    """`exact` at anchor points, `shape` (the built-in model) in between."""

    def __init__(self, exact, shape) -> None:
        self.exact, self.shape = exact, shape
        self.name = getattr(exact, "name", "exact")
        self.exact_calls = 0

    def _exact(self, fn: str, *args: int) -> float:
        self.exact_calls += 1
        return float(getattr(self.exact, fn)(*args))

    def prefill_ttft_ms(self, isl, batch=1):
        if np.ndim(isl) == 0:
            return self._exact("prefill_ttft_ms", int(isl), int(batch))
        isl = np.asarray(isl, dtype=float)
        batch = np.broadcast_to(np.asarray(batch, dtype=float), isl.shape)
        anchors = anchor_values(isl)
        ratios = []
        for a in anchors:
            b = int(batch[np.argmax(isl == a)])
            ratios.append(self._exact("prefill_ttft_ms", a, b) / float(self.shape.prefill_ttft_ms(a, b)))
        return np.asarray(self.shape.prefill_ttft_ms(isl, batch)) * _interp_log(isl, anchors, ratios)

    def decode_itl_ms(self, batch, context):
        if np.ndim(batch) == 0 and np.ndim(context) == 0:
            return self._exact("decode_itl_ms", int(batch), int(context))
        batch, context = (np.asarray(a, dtype=float) for a in np.broadcast_arrays(batch, context))
        ctx_anchors = anchor_values(context)
        curves: list[tuple[list[int], list[float]]] = []  # per anchor context: batch anchors and ratios
        for c in ctx_anchors:
            b_anchors = anchor_values(batch[context == c])
            ratios = [self._exact("decode_itl_ms", b, c) / float(self.shape.decode_itl_ms(b, c)) for b in b_anchors]
            curves.append((b_anchors, ratios))
        # ratio at each point: along the batch axis on every anchor context, then along the context axis
        per_ctx = np.stack([_interp_log(batch, b, r) for b, r in curves])  # (anchor contexts, points)
        if len(ctx_anchors) == 1:
            ratio = per_ctx[0]
        else:
            logc, loga = np.log(context), np.log(np.asarray(ctx_anchors, dtype=float))
            idx = np.clip(np.searchsorted(loga, logc) - 1, 0, len(loga) - 2)
            w = np.clip((logc - loga[idx]) / (loga[idx + 1] - loga[idx]), 0.0, 1.0)
            cols = np.arange(len(context))
            ratio = (1 - w) * per_ctx[idx, cols] + w * per_ctx[idx + 1, cols]
        return np.asarray(self.shape.decode_itl_ms(batch, context)) * ratio

    def max_kv_tokens(self) -> int:
        return int(self.exact.max_kv_tokens())

    def agg(self, isl: int, osl: int, concurrency: int) -> AggEstimate:
        return self.exact.agg(isl, osl, concurrency)

    def agg_sweep(self, isl: int, osl: int, concurrencies: list[int]) -> list[AggEstimate]:
        """Aggregated serving over a concurrency sweep: exact TTFT and ITL at anchor concurrencies,
        the built-in model's shape between them; throughput from TTFT and ITL, as AI Configurator
        derives it."""
        anchors = anchor_values(concurrencies)
        exact = {c: self.exact.agg(isl, osl, c) for c in anchors}
        self.exact_calls += len(anchors)
        shape = {c: self.shape.agg(isl, osl, c) for c in concurrencies}
        t_ratio = _interp_log(concurrencies, anchors, [exact[c].ttft_ms / shape[c].ttft_ms for c in anchors])
        i_ratio = _interp_log(concurrencies, anchors, [exact[c].itl_ms / shape[c].itl_ms for c in anchors])
        out = []
        for c, tr, ir in zip(concurrencies, t_ratio, i_ratio):
            ttft, itl = shape[c].ttft_ms * float(tr), shape[c].itl_ms * float(ir)
            latency = ttft + max(0, osl - 1) * itl
            thpt = c * osl / (latency / 1e3) / self.shape.map.num_gpus if latency > 0 else 0.0
            out.append(AggEstimate(ttft_ms=ttft, itl_ms=itl, thpt_per_gpu=thpt))
        return out
