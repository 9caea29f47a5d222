"""Where the built-in model's TTFT error on measured rows comes from, and how low it could go.

Prints, for calibration (h100_sxm, h200_sxm) and held-out systems separately:
  1. the replicate floor: agg rows that describe the same deployment except for OSL (which barely
     changes TTFT) measured apart; the best single prediction per group still misses by this MAPE,
     so no deterministic model can do better on those rows;
  2. oracle scales: the model's MAPE when every group (model/system/precision, then each
     configuration) gets its own best scale factor, and when every sweep gets its own best fixed
     request overhead: how much of the error is level the inputs do not carry;
  3. GPU scaling: for configurations measured on both h200_sxm and b200_sxm, the measured TTFT
     speed-up against the model's, by backend, model and ISL.

Needs the `aic` extra (the measured rows ship with AI Configurator).

    python bench/error_floor.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slaprof.steps.core.errors import UserError  # noqa: E402


def best_constant_mape(values: np.ndarray) -> float:
    """min over p of mean |p / v - 1|: convex and piecewise linear in p, so a data point attains it."""
    return min(float(np.mean(np.abs(p / values - 1.0))) for p in values)


def _mapping(c) -> tuple:
    d = c.agg or c.decode
    return (d.mapping.attn_tp, d.mapping.attn_dp, d.mapping.moe_tp, d.mapping.moe_ep)


def replicate_floor(cases) -> None:
    groups: dict[tuple, list] = defaultdict(list)
    for c in cases:
        if c.agg is not None:
            groups[
                (c.calibration, c.system, c.backend, c.model_path, c.precision, _mapping(c), c.isl, c.concurrency)
            ].append(c.ttft_ms)
    print("\n1. replicate floor: agg rows alike except for OSL, best single TTFT per group")
    print(f"{'systems':12s} {'backend':8s} {'rows':>5s} {'groups':>6s} | {'floor MAPE':>10s}")
    for cal in (True, False):
        for backend in ("vllm", "sglang", "trtllm", "all"):
            sel = [
                (np.array(v), key)
                for key, v in groups.items()
                if len(v) > 1 and key[0] == cal and backend in ("all", key[2])
            ]
            rows = sum(len(v) for v, _ in sel)
            if rows:
                floor = sum(best_constant_mape(v) * len(v) for v, _ in sel) / rows
                print(
                    f"{'calibration' if cal else 'held out':12s} {backend:8s} {rows:5d} {len(sel):6d} | {floor * 100:9.1f}%"
                )


def oracle_scales(cases, predictions: dict[str, tuple[float, float]]) -> None:
    keys: dict[str, Callable] = {
        "none (the model as fitted)": lambda c: c.row_id,
        "per model, system, precision": lambda c: (c.system, c.backend, c.model_path, c.precision),
        "per configuration (+ mapping, ISL, OSL, mode)": lambda c: (
            c.system,
            c.backend,
            c.model_path,
            c.precision,
            _mapping(c),
            c.isl,
            c.osl,
            c.mode,
        ),
    }
    print("\n2. TTFT MAPE with an oracle scale factor per group (fitted on the rows it scores)")
    print(f"{'scale factor':46s} | {'calibration':>11s} {'held out':>9s}")
    for label, key in keys.items():
        out = []
        for cal in (True, False):
            ratios: dict = defaultdict(list)
            for c in cases:
                if c.calibration == cal:
                    ratios[key(c)].append(c.ttft_ms / predictions[c.row_id][0])
            n = sum(len(r) for r in ratios.values())
            if label.startswith("none"):
                total = sum(abs(1.0 / r[0] - 1.0) for r in ratios.values())
            else:  # mean |s / r - 1| over the group, minimised over s
                total = sum(best_constant_mape(np.array(r)) * len(r) for r in ratios.values())
            out.append(total / n * 100)
        print(f"{label:46s} | {out[0]:10.1f}% {out[1]:8.1f}%")


def overhead_oracle(cases) -> None:
    from slaprof.steps.perf.constants import constants_for
    from slaprof.steps.perf.silicon import predict_case

    sweeps: dict[tuple, list] = defaultdict(list)
    for c in cases:
        sweeps[(c.calibration, c.system, c.backend, c.model_path, c.backend_version)].append(c)
    grid = np.linspace(0.0, 400.0, 41)
    result = {}
    for cal in (True, False):
        errors: list[float] = []
        for key, members in sweeps.items():
            if key[0] != cal:
                continue
            base = constants_for(members[0].backend)
            best = min(
                (
                    np.abs(
                        [
                            predict_case(c, base.model_copy(update={"request_overhead_ms": float(ov)}))[0] / c.ttft_ms
                            - 1.0
                            for c in members
                        ]
                    )
                    for ov in grid
                ),
                key=np.mean,
            )
            errors.extend(best)
        result[cal] = float(np.mean(errors)) * 100
    print(f"{'per sweep, its own request overhead (0-400 ms)':46s} | {result[True]:10.1f}% {result[False]:8.1f}%")


def gpu_scaling(cases, predictions: dict[str, tuple[float, float]]) -> None:
    by_system: dict[str, dict[tuple, list]] = {"h200_sxm": defaultdict(list), "b200_sxm": defaultdict(list)}
    for c in cases:
        if c.agg is not None and c.system in by_system:
            key = (c.backend, c.model_path.split("/")[-1], c.precision, _mapping(c), c.isl, c.osl, c.concurrency)
            by_system[c.system][key].append((c.ttft_ms, predictions[c.row_id][0]))
    pairs: dict[tuple, list] = defaultdict(list)
    for key, h200 in by_system["h200_sxm"].items():
        b200 = by_system["b200_sxm"].get(key)
        if b200:
            h, b = np.median(np.array(h200), axis=0), np.median(np.array(b200), axis=0)
            pairs[(key[0], key[1], key[2], key[4])].append((h[0] / b[0], h[1] / b[1]))
    print("\n3. TTFT speed-up h200_sxm -> b200_sxm on configurations measured on both (median)")
    print(f"{'backend':8s} {'model':22s} {'prec':5s} {'ISL':>5s} {'pairs':>5s} | {'measured':>8s} {'model':>6s}")
    for (backend, model, prec, isl), values in sorted(pairs.items()):
        v = np.array(values)
        print(
            f"{backend:8s} {model:22s} {prec:5s} {isl:5d} {len(v):5d} | {np.median(v[:, 0]):7.2f}x {np.median(v[:, 1]):5.2f}x"
        )


def main() -> int:
    try:
        from slaprof.steps.perf.silicon import load_cases, predict_case

        cases = [c for c in load_cases() if not c.skip]
    except UserError as exc:
        sys.exit(f"error_floor: {exc}")
    predictions = {c.row_id: predict_case(c) for c in cases}
    print(f"{len(cases)} evaluable rows ({sum(c.calibration for c in cases)} calibration)")
    replicate_floor(cases)
    oracle_scales(cases, predictions)
    overhead_oracle(cases)
    gpu_scaling(cases, predictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
