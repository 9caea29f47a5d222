"""Fit the built-in performance model's constants to measured H100/H200 rows.

Reads AI Configurator's silicon_sample.csv (needs the `aic` extra: pip install 'slaprof[aic]'),
fits the kernel efficiencies (shared by all backends) and each backend's overheads and load
terms with scipy.optimize.least_squares on the relative error predicted/measured - 1 of TTFT and
TPOT (soft-L1 loss with a small scale, i.e. close to minimising the mean absolute percentage
error that bench/accuracy.py reports, so a few overloaded runs do not dominate), and writes
steps/perf/calibration.json with the data source, date and fit error.
Only h100_sxm and h200_sxm rows are used: the other systems measure generalisation
(bench/accuracy.py).

    python bench/calibrate.py            # fit and write steps/perf/calibration.json
    python bench/calibrate.py --check    # fit, print, do not write
    python bench/calibrate.py --per-backend --out /tmp/c.json   # every constant per backend
    python bench/calibrate.py --kernels kernels.json             # kernel efficiencies measured on a GPU
    python bench/calibrate.py --kernels kernels.json --kernels-only   # compare only, no fit
    python bench/calibrate.py --intervals-only   # only the prediction intervals, from the constants in the file

After the constants, the prediction intervals: quantiles of log(measured / estimated) of the same
rows under the fitted constants, by backend, phase, load, ISL and structure (dense, MoE, MLA)
(steps/perf/intervals.py), written to steps/perf/intervals.json beside the constants.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slaprof.steps.core.errors import UserError  # noqa: E402
from slaprof.steps.engines import backend_names, get_backend  # noqa: E402
from slaprof.steps.perf.constants import (  # noqa: E402
    CALIBRATION_FILE,
    BackendConstants,
    Calibration,
    constants_for,
    engine_defaults,
)
from slaprof.steps.perf.intervals import INTERVALS_FILE, fit_intervals  # noqa: E402
from slaprof.steps.perf.roofline import LONE_REQUEST_OVERHEAD_MAX_MS  # noqa: E402

# name: (start, lower, upper). The bounds are physical priors: kernels reach 30-90% of peak
# FLOP/s and 50-95% of HBM bandwidth; a lone request pays tens of ms on the host, what loaded
# requests pay beyond that is admission queueing (SGLang's TTFT floor of 150-300 ms at moderate
# load), and a step a few ms. They keep the fit from trading a large fixed overhead against load effects.
FITTED: dict[str, tuple[float, float, float]] = {
    "gemm_eff": (0.6, 0.3, 0.9),
    "moe_eff": (0.4, 0.1, 0.9),
    "attn_eff": (0.4, 0.2, 0.9),
    "mem_eff": (0.75, 0.5, 0.95),
    "act_passes": (4.0, 0.0, 40.0),
    "comm_latency_us": (10.0, 2.0, 50.0),
    "layer_overhead_us": (10.0, 0.5, 60.0),
    "step_overhead_ms": (2.0, 0.1, 10.0),
    "prefill_layer_us": (50.0, 0.0, 300.0),
    "prefill_moe_layer_us": (100.0, 0.0, 1000.0),
    "request_overhead_ms": (10.0, 2.0, LONE_REQUEST_OVERHEAD_MAX_MS),
    "admission_ms": (20.0, 0.0, 500.0),
    "request_token_us": (1.0, 0.0, 5.0),
    "agg_mix_factor": (1.0, 0.1, 2.0),
    "burst_fraction": (0.15, 0.0, 1.0),
}
# The backends AI Configurator's silicon data measures, by their registered names (the same as AIC's).
BACKENDS = tuple(n for n in backend_names() if get_backend(n).aic_name == n)
# Kernel efficiencies are properties of the GPU and its libraries more than of the serving framework:
# they are fitted once for all backends (fewer constants, better transfer to unseen GPUs), the
# overheads and load terms per backend. --per-backend fits everything per backend instead.
SHARED = ("gemm_eff", "moe_eff", "attn_eff", "mem_eff", "act_passes", "comm_latency_us")


# Sweeps whose fixed per-request latency is far from every other release of their backend get a
# request overhead of their own during the fit (a nuisance parameter, not written to the file):
# the H100 TRT-LLM 1.0.0rc3 sweep (479 rows, a third of all calibration rows) has a TTFT floor of
# 100-230 ms even for 128-token prompts, where the other TRT-LLM releases measured add 15-40 ms.
OWN_OVERHEAD: tuple[tuple[str, str], ...] = (("trtllm", "1.0.0rc3"),)


def load(systems: tuple[str, ...]):
    try:
        from slaprof.steps.perf.silicon import CALIBRATION_SYSTEMS, load_cases, silicon_csv_path
    except UserError as exc:
        sys.exit(f"calibrate: {exc}")
    cases = load_cases()
    return [c for c in cases if not c.skip and c.system in (systems or CALIBRATION_SYSTEMS)], silicon_csv_path()


def residuals(
    theta: np.ndarray, cases, base: BackendConstants, sweep_overheads: dict[tuple[str, str], float] | None = None
) -> np.ndarray:
    from slaprof.steps.perf.silicon import predict_case

    k = base.model_copy(update=dict(zip(FITTED, (float(x) for x in theta))))
    sweep_k = {key: k.model_copy(update={"request_overhead_ms": v}) for key, v in (sweep_overheads or {}).items()}
    out = np.empty(2 * len(cases))
    for i, c in enumerate(cases):
        ttft, tpot = predict_case(c, sweep_k.get((c.backend, c.backend_version), k))
        out[2 * i] = ttft / c.ttft_ms - 1.0
        out[2 * i + 1] = tpot / c.tpot_ms - 1.0
    return out


def errors(cases, k: BackendConstants) -> dict[str, float]:
    from slaprof.steps.perf.silicon import predict_case

    pred = np.array([predict_case(c, k) for c in cases])
    meas = np.array([(c.ttft_ms, c.tpot_ms) for c in cases])
    rel = pred / meas - 1.0
    return {
        "rows": len(cases),
        "ttft_mape": round(float(np.mean(np.abs(rel[:, 0]))) * 100, 1),
        "tpot_mape": round(float(np.mean(np.abs(rel[:, 1]))) * 100, 1),
        "ttft_median_error": round(float(np.median(rel[:, 0])) * 100, 1),
        "tpot_median_error": round(float(np.median(rel[:, 1])) * 100, 1),
    }


def fit_backend(
    cases, backend: str, table: dict[str, tuple[float, float, float]] = FITTED
) -> tuple[BackendConstants, dict[str, float]]:
    from scipy.optimize import least_squares

    rows = [c for c in cases if c.backend == backend]
    base = engine_defaults(backend)
    x0 = np.array([table[n][0] for n in FITTED])
    lo = np.array([table[n][1] for n in FITTED])
    hi = np.array([table[n][2] for n in FITTED])
    result = least_squares(
        residuals,
        x0,
        bounds=(lo, hi),
        args=(rows, base),
        loss="soft_l1",
        f_scale=0.05,
        x_scale=np.maximum(np.abs(x0), 0.1),
        max_nfev=400,
    )
    fitted = base.model_copy(update={n: round(float(x), 4) for n, x in zip(FITTED, result.x)})
    return fitted, errors(rows, fitted)


def fit_shared(
    cases, table: dict[str, tuple[float, float, float]] = FITTED
) -> tuple[dict[str, BackendConstants], dict[str, dict[str, float]]]:
    """One set of kernel efficiencies for all backends; overheads and load terms per backend."""
    from scipy.optimize import least_squares

    own = [n for n in FITTED if n not in SHARED]
    names = list(SHARED) + [f"{b}.{n}" for b in BACKENDS for n in own] + [f"sweep.{b}.{v}" for b, v in OWN_OVERHEAD]
    bounds = {
        **{n: table[n] for n in SHARED},
        **{f"{b}.{n}": table[n] for b in BACKENDS for n in own},
        **{f"sweep.{b}.{v}": (100.0, 2.0, 400.0) for b, v in OWN_OVERHEAD},
    }
    rows = {b: [c for c in cases if c.backend == b] for b in BACKENDS}

    def constants(theta: np.ndarray) -> dict[str, BackendConstants]:
        values = dict(zip(names, (float(x) for x in theta)))
        return {
            b: engine_defaults(b).model_copy(
                update={**{n: values[n] for n in SHARED}, **{n: values[f"{b}.{n}"] for n in own}}
            )
            for b in BACKENDS
        }

    def all_residuals(theta: np.ndarray) -> np.ndarray:
        ks = constants(theta)
        sweeps = {key: float(x) for key, x in zip(OWN_OVERHEAD, theta[len(names) - len(OWN_OVERHEAD) :])}
        return np.concatenate(
            [residuals(np.array([getattr(ks[b], n) for n in FITTED]), rows[b], ks[b], sweeps) for b in BACKENDS]
        )

    x0 = np.array([bounds[n][0] for n in names])
    result = least_squares(
        all_residuals,
        x0,
        bounds=(np.array([bounds[n][1] for n in names]), np.array([bounds[n][2] for n in names])),
        loss="soft_l1",
        f_scale=0.05,
        x_scale=np.maximum(np.abs(x0), 0.1),
        max_nfev=400,
    )
    ks = {b: k.model_copy(update={n: round(getattr(k, n), 4) for n in FITTED}) for b, k in constants(result.x).items()}
    for key, x in zip(OWN_OVERHEAD, result.x[len(names) - len(OWN_OVERHEAD) :]):
        print(f"nuisance: request overhead of the {key[0]} {key[1]} sweep {x:.1f} ms (used in the fit only)")
    return ks, {b: errors(rows[b], ks[b]) for b in BACKENDS}


# ---- kernel measurements of a GPU (bench/kernels.py) ----------------------------------------
LAYER_MODEL = ROOT / "tests" / "fixtures" / "models" / "Llama-3.1-8B"  # the layer bench/kernels.py times


def kernel_pins(paths: list[Path], k: BackendConstants) -> tuple[dict[str, float], str]:
    """The kernel efficiencies bench/kernels.py measured (the mean over the GPUs of `paths`), and a
    note for the calibration's method; each file's kernels are printed next to the model's
    assumptions under `k`."""
    from slaprof.steps.perf.kernel_report import catalog_gpu, compare, measured_efficiencies, read_kernel_report
    from slaprof.steps.specs.models import load_model_info_from_dir

    layer_model = load_model_info_from_dir(LAYER_MODEL, "meta-llama/Llama-3.1-8B")
    measured: dict[str, list[float]] = {}
    sources = []
    for path in paths:
        report = read_kernel_report(path)
        gpu = catalog_gpu(report)
        found = measured_efficiencies(report, gpu)
        print(
            f"\n{path.name}: {report.device.name} -> {gpu.name}, torch {report.software.get('torch', '?')}, "
            f"{report.measured_at}{'' if report.complete else ' (incomplete: ' + '; '.join(report.skipped) + ')'}"
        )
        print(f"{'kernel':44s} {'meas ms':>9s} {'model ms':>9s} {'model/meas':>10s}  measured")
        for row in compare(report, gpu, k, layer_model):
            ratio = row.model_ms / row.measured_ms
            print(f"{row.label:44s} {row.measured_ms:9.3f} {row.model_ms:9.3f} {ratio:10.2f}  {row.achieved}")
        print("measured: " + ", ".join(f"{n} {v:g} (calibrated {getattr(k, n):g})" for n, v in found.items()))
        for name, value in found.items():
            measured.setdefault(name, []).append(value)
        sources.append(f"{report.device.name} {report.measured_at}")
    pins = {name: round(float(np.mean(values)), 4) for name, values in measured.items()}
    note = (
        "; " + ", ".join(f"{n}={v:g}" for n, v in pins.items()) + " pinned to bench/kernels.py on " + ", ".join(sources)
    )
    return pins, note


def pinned(
    table: dict[str, tuple[float, float, float]], pins: dict[str, float]
) -> dict[str, tuple[float, float, float]]:
    """`table` with each pinned constant held at its measured value (least_squares needs a
    non-empty interval, so a tiny one)."""
    unknown = set(pins) - set(table)
    if unknown:
        raise ValueError(f"not fitted constants: {', '.join(sorted(unknown))}")
    return {n: (pins[n], pins[n] - 1e-6, pins[n] + 1e-6) if n in pins else bound for n, bound in table.items()}


def write_intervals(cases, backends: dict[str, BackendConstants], source: str, out: Path) -> None:
    """Prediction intervals from the residuals of `cases` under `backends`' constants."""
    from slaprof.steps.perf.silicon import case_residuals

    residuals = [r for c in cases for r in case_residuals(c, backends.get(c.backend))]
    cal = fit_intervals(residuals, source, datetime.now(UTC).isoformat(timespec="seconds"))
    out.write_text(json.dumps(cal.model_dump(), indent=1) + "\n")
    print(f"wrote {len(cal.groups)} interval groups to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the fit without writing the file")
    parser.add_argument(
        "--per-backend",
        action="store_true",
        help="fit every constant per backend (default: kernel efficiencies shared by all backends)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "steps" / "perf" / CALIBRATION_FILE)
    parser.add_argument(
        "--kernels",
        type=Path,
        action="append",
        default=[],
        help="a bench/kernels.py report (repeat for several GPUs): its measured kernel efficiencies are pinned",
    )
    parser.add_argument("--kernels-only", action="store_true", help="compare the --kernels reports, do not fit")
    parser.add_argument(
        "--intervals-only", action="store_true", help="refit the prediction intervals only, from the file's constants"
    )
    parser.add_argument("--intervals-out", type=Path, default=ROOT / "steps" / "perf" / INTERVALS_FILE)
    args = parser.parse_args()
    table, kernel_note = FITTED, ""
    if args.kernels:
        try:
            pins, kernel_note = kernel_pins(args.kernels, constants_for("vllm"))
        except UserError as exc:
            print(f"calibrate: {exc}", file=sys.stderr)
            return 2
        table = pinned(FITTED, pins)
        if args.kernels_only:
            return 0
    elif args.kernels_only:
        parser.error("--kernels-only needs --kernels FILE")
    cases, csv_path = load(())
    from importlib.metadata import version as dist_version

    source = (
        f"aiconfigurator_core {dist_version('aiconfigurator-core')} systems/silicon_sample.csv, rows of h100_sxm "
        "and h200_sxm (agg, and disagg rows with batch sizes and worker counts)"
    )
    if args.intervals_only:
        write_intervals(cases, {b: constants_for(b) for b in BACKENDS}, source, args.intervals_out)
        return 0
    print(f"calibrating on {len(cases)} measured rows (h100_sxm, h200_sxm) from {csv_path.name}")
    backends: dict[str, BackendConstants] = {}
    fit_error: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    if not args.per_backend:
        backends, fit_error = fit_shared(cases, table)
    for backend in BACKENDS:
        if args.per_backend:
            backends[backend], fit_error[backend] = fit_backend(cases, backend, table)
        e = fit_error[backend]
        print(
            f"{backend:7s} rows {e['rows']:4d}  TTFT MAPE {e['ttft_mape']:5.1f}% (median {e['ttft_median_error']:+.1f}%)"
            f"  TPOT MAPE {e['tpot_mape']:5.1f}% (median {e['tpot_median_error']:+.1f}%)"
        )
        print("        " + ", ".join(f"{n}={getattr(backends[backend], n):g}" for n in FITTED))
    print(f"fitted in {time.perf_counter() - t0:.0f} s")
    cal = Calibration(
        version=1,
        source=source,
        fitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        systems=["h100_sxm", "h200_sxm"],
        method=(
            "scipy.optimize.least_squares, soft-L1 (scale 0.05) on predicted/measured - 1 of TTFT and TPOT; "
            + "own request overhead for the "
            + ", ".join(" ".join(k) for k in OWN_OVERHEAD)
            + " sweep during the fit; "
            + (
                "every constant per backend"
                if args.per_backend
                else f"{', '.join(SHARED)} shared by all backends, the rest per backend"
            )
            + kernel_note
        ),
        fit_error=fit_error,
        backends=backends,
    )
    if args.check:
        print(json.dumps(cal.model_dump(), indent=2))
        return 0
    args.out.write_text(json.dumps(cal.model_dump(), indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    write_intervals(cases, backends, source, args.intervals_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
