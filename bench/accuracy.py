"""Accuracy of the offline performance model against measured deployments.

For every row of AI Configurator's silicon_sample.csv the built-in model can evaluate (agg and
disagg, each row at its own precision and TP / attention-DP / expert-parallel sizes), prints per
system and backend: rows, MAPE and median signed error of TTFT and TPOT, the median absolute
error, and the share of rows within 20%. Calibration systems (h100_sxm, h200_sxm) and held-out
systems (b200_sxm, gb200, b300_sxm, gb300) are reported separately, then the rows skipped and
why. With --aic N, the AI Configurator adapter is scored on N sampled rows of the same kinds.

Needs the `aic` extra (the measured rows ship with AI Configurator): pip install 'slaprof[aic]'.

    python bench/accuracy.py
    python bench/accuracy.py --aic 24
    python bench/accuracy.py --breakdown --speed 0   # where the held-out TTFT error comes from
    python bench/accuracy.py --aic-surface --speed 0  # AIC surfaces: every point vs anchor points

It ends with the speed of offline surfaces (one candidate, all candidates of a plan) against
point-by-point estimation measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slaprof.steps.core.errors import UserError  # noqa: E402


def stats(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = pred / meas - 1.0
    return {
        "mape": float(np.mean(np.abs(rel)) * 100),
        "median": float(np.median(rel) * 100),
        "mdape": float(np.median(np.abs(rel)) * 100),
        "within20": float(np.mean(np.abs(rel) <= 0.2) * 100),
    }


def fmt(s: dict[str, float]) -> str:
    return f"{s['mape']:7.1f} {s['median']:+7.1f} {s['mdape']:6.1f} {s['within20']:5.0f}%"


HEADER = (
    f"{'system':9s} {'backend':7s} {'rows':>5s} | {'TTFT MAPE':>9s} {'median':>7s} {'MdAPE':>6s} {'<=20%':>6s}"
    f" | {'TPOT MAPE':>9s} {'median':>7s} {'MdAPE':>6s} {'<=20%':>6s}"
)


def table(title: str, results: dict[tuple[str, str], list[tuple[float, float, float, float]]]) -> None:
    print(f"\n{title}")
    print(HEADER)
    print("-" * len(HEADER))
    everything: list[tuple[float, float, float, float]] = []
    for (system, backend), rows in sorted(results.items()):
        a = np.array(rows)
        everything += rows
        print(f"{system:9s} {backend:7s} {len(a):5d} | {fmt(stats(a[:, 0], a[:, 1]))} | {fmt(stats(a[:, 2], a[:, 3]))}")
    if everything:
        a = np.array(everything)
        print(f"{'all':9s} {'':7s} {len(a):5d} | {fmt(stats(a[:, 0], a[:, 1]))} | {fmt(stats(a[:, 2], a[:, 3]))}")


def builtin(cases, breakdown: bool = False) -> None:
    from slaprof.steps.perf.silicon import predict_case

    groups: dict[str, dict[tuple[str, str], list]] = {"cal": defaultdict(list), "held": defaultdict(list)}
    predictions: dict[str, tuple[float, float]] = {}
    t0 = time.perf_counter()
    for c in cases:
        ttft, tpot = predict_case(c)
        predictions[c.row_id] = (ttft, tpot)
        groups["cal" if c.calibration else "held"][(c.system, f"{c.backend}/{c.mode[:3]}")].append(
            (ttft, c.ttft_ms, tpot, c.tpot_ms)
        )
    elapsed = time.perf_counter() - t0
    table("built-in model, calibration systems (fitted on these rows)", groups["cal"])
    table("built-in model, held-out systems (never fitted)", groups["held"])
    print(f"\n{len(cases)} rows evaluated in {elapsed * 1e3:.0f} ms ({elapsed / max(1, len(cases)) * 1e6:.0f} us/row)")
    if breakdown:
        breakdown_table([c for c in cases if not c.calibration], predictions)


def _bucket(value: int, edges: tuple[int, ...]) -> str:
    lo = 0
    for edge in edges:
        if value <= edge:
            return f"{lo + 1}-{edge}"
        lo = edge
    return f">{edges[-1]}"


def _order(value: str) -> tuple[int, str]:
    head = value.lstrip(">").split("-")[0]
    return (int(head) + (value[0] == ">"), value) if head.isdigit() else (0, value)


BREAKDOWN = {
    "mode": lambda c: c.mode,
    "backend": lambda c: c.backend,
    "system": lambda c: c.system,
    "concurrency": lambda c: _bucket(c.concurrency, (4, 16, 64, 256)),
    "ISL": lambda c: _bucket(c.isl, (1024, 4096, 16384)),
    "precision": lambda c: c.precision,
    "architecture": lambda c: "MoE" if c.model.is_moe else "dense",
}


def breakdown_table(cases, predictions: dict[str, tuple[float, float]]) -> None:
    """Held-out TTFT and TPOT error split by one property at a time, with each group's share of the
    summed absolute TTFT error (where the MAPE comes from)."""
    rows = [(c, *predictions[c.row_id]) for c in cases]
    total = sum(abs(t / c.ttft_ms - 1.0) for c, t, _ in rows)
    print("\nheld-out systems, TTFT and TPOT error by one property at a time")
    print(
        f"{'property':12s} {'value':12s} {'rows':>5s} | {'TTFT MAPE':>9s} {'median':>7s} {'share':>6s} | {'TPOT MAPE':>9s}"
    )
    for name, key in BREAKDOWN.items():
        groups: dict[str, list] = defaultdict(list)
        for row in rows:
            groups[key(row[0])].append(row)
        for value, members in sorted(groups.items(), key=lambda kv: _order(kv[0])):
            rel_t = np.array([t / c.ttft_ms - 1.0 for c, t, _ in members])
            rel_p = np.array([p / c.tpot_ms - 1.0 for c, _, p in members])
            share = np.abs(rel_t).sum() / total * 100
            print(
                f"{name:12s} {value:12s} {len(members):5d} | {np.mean(np.abs(rel_t)) * 100:9.1f} "
                f"{np.median(rel_t) * 100:+7.1f} {share:5.0f}% | {np.mean(np.abs(rel_p)) * 100:9.1f}"
            )


def aic(cases, n: int, seed: int) -> None:
    from slaprof.steps.perf.aic import AicEstimator, aic_available
    from slaprof.steps.perf.silicon import aic_model_id

    if not aic_available():
        print("\nAI Configurator adapter: skipped (aiconfigurator is not installed)")
        return
    rng = random.Random(seed)
    pool = [c for c in cases if c.agg is not None]
    sample = rng.sample(pool, min(n, len(pool)))
    results: dict[tuple[str, str], list] = defaultdict(list)
    estimated = []
    failures: dict[str, int] = defaultdict(int)
    t0 = time.perf_counter()
    for c in sample:
        try:
            # the id whose config AI Configurator ships, so it never reaches for the network
            est = AicEstimator(c.model, c.gpu, c.backend, c.agg.mapping, hf_id=aic_model_id(c.model_path))
            out = est.agg(c.isl, c.osl, c.agg.batch)
        except UserError as exc:
            failures[str(exc).split(";")[0][:90]] += 1
            continue
        results[(c.system, c.backend)].append((out.ttft_ms, c.ttft_ms, out.itl_ms, c.tpot_ms))
        estimated.append(c)
    table(f"AI Configurator adapter on {len(sample)} sampled agg rows ({time.perf_counter() - t0:.0f} s)", results)
    if results:
        from slaprof.steps.perf.silicon import predict_case

        same: dict[tuple[str, str], list] = defaultdict(list)
        for c in estimated:
            ttft, tpot = predict_case(c)
            same[(c.system, c.backend)].append((ttft, c.ttft_ms, tpot, c.tpot_ms))
        table("built-in model on the same sampled rows", same)
    for why, count in sorted(failures.items(), key=lambda kv: -kv[1]):
        print(f"  AIC could not estimate {count} rows: {why}")


def aic_surface(model_name: str, mapping: str) -> None:
    """AI Configurator surfaces for one candidate: every point asked (exact, what `bench` runs)
    against anchor points filled with the built-in model's shape, in the same run."""
    from slaprof.steps.core.candidates import Candidate
    from slaprof.steps.core.request import build_request
    from slaprof.steps.dag.plan import make_plan
    from slaprof.steps.perf.aic import _estimate, _session, aic_available
    from slaprof.steps.perf.surfaces import estimator_for, offline_profile

    if not aic_available():
        print("\nAI Configurator surfaces: skipped (aiconfigurator is not installed)")
        return
    models = ROOT / "tests" / "fixtures" / "models"
    req = build_request(
        {
            "model": str(models / model_name),
            "backend": "vllm",
            "sla": {"isl": 3000, "osl": 300},
            "hardware": {"gpu": "h200_sxm"},
            "sweep": {"estimator": "aic", "aic_hf_id": f"Qwen/{model_name}"},
        }
    )
    plan = make_plan(req)
    cand = Candidate.parse(mapping)
    runs = {}
    estimator_for(req, plan, cand).prefill_ttft_ms(100)  # AI Configurator's one-time database load, untimed
    for label, anchored in (("exact", False), ("anchored", True)):
        _estimate.cache_clear()  # answers and sessions are cached per process: time each run cold
        _session.cache_clear()
        est = estimator_for(req, plan, cand, anchored=anchored)
        t0 = time.perf_counter()
        prof = offline_profile(req, plan, cand, estimator=est)
        runs[label] = (
            time.perf_counter() - t0,
            prof,
            getattr(est, "exact_calls", len(prof.prefill) + len(prof.decode)),
        )
    (t_exact, exact, n_exact), (t_anch, anch, n_anch) = runs["exact"], runs["anchored"]
    pre = np.array([a.ttft_ms / e.ttft_ms - 1 for a, e in zip(anch.prefill, exact.prefill)]) * 100
    dec = np.array([a.itl_ms / e.itl_ms - 1 for a, e in zip(anch.decode, exact.decode)]) * 100
    print(
        f"\nAI Configurator surfaces, {model_name} {mapping} on h200_sxm, vllm "
        f"({len(exact.prefill)} prefill + {len(exact.decode)} decode points)"
    )
    print(f"  exact:    {n_exact:3d} AIC points, {t_exact * 1e3:7.1f} ms")
    print(f"  anchored: {n_anch:3d} AIC points, {t_anch * 1e3:7.1f} ms ({t_exact / max(t_anch, 1e-9):.1f}x faster)")
    print(
        f"  anchored vs exact: prefill TTFT median |diff| {np.median(np.abs(pre)):.1f}%, max {np.max(np.abs(pre)):.1f}%;"
        f" decode ITL median |diff| {np.median(np.abs(dec)):.1f}%, max {np.max(np.abs(dec)):.1f}%"
    )


def speed(repeats: int) -> None:
    """Offline surfaces: vectorised (as `bench` runs them) against point-by-point calls, same run."""
    from slaprof.steps.core.request import build_request
    from slaprof.steps.dag.plan import decode_concurrencies, make_plan
    from slaprof.steps.perf import get_estimator
    from slaprof.steps.perf.surfaces import offline_profile
    from slaprof.steps.specs.gpus import get_gpu

    models = ROOT / "tests" / "fixtures" / "models"
    print(f"\noffline surface speed (median of {repeats} runs)")
    print(
        f"{'model':15s} {'cands':>5s} {'points/cand':>11s} | {'one cand ms':>11s} {'point-by-point ms':>17s} "
        f"{'ratio':>6s} | {'all cands ms':>12s}"
    )
    for name in ("Qwen3-32B", "Qwen3-30B-A3B", "DeepSeek-V3"):
        req = build_request({"model": str(models / name), "backend": "vllm", "sla": {"isl": 3000, "osl": 300}})
        plan = make_plan(req)
        cands = plan.runnable()
        one, each, every = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prof = offline_profile(req, plan, cands[0])
            one.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            est = get_estimator(plan.model, get_gpu(plan.gpu), plan.backend, cands[0])
            for isl in plan.grid.prefill_isls:
                est.prefill_ttft_ms(isl, cands[0].attn_dp)
            kv = est.max_kv_tokens()
            for isl in plan.grid.decode_isls:
                for conc in decode_concurrencies(
                    kv, isl, plan.grid.decode_osl, plan.grid.decode_granularity, cands[0].attn_dp
                ):
                    est.decode_itl_ms(conc, isl + plan.grid.decode_osl // 2)
            each.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for cand in cands:
                offline_profile(req, plan, cand)
            every.append(time.perf_counter() - t0)
        points = len(prof.prefill) + len(prof.decode)
        m1, m2, m3 = (float(np.median(x)) * 1e3 for x in (one, each, every))
        print(f"{name:15s} {len(cands):5d} {points:11d} | {m1:11.2f} {m2:17.2f} {m2 / m1:5.1f}x | {m3:12.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description="accuracy of the offline performance model vs measured rows")
    parser.add_argument("--aic", type=int, default=0, metavar="N", help="also score the AIC adapter on N rows")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--aic-surface",
        action="store_true",
        help="time one candidate's AI Configurator surfaces, exact against anchored (seconds)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also split the held-out error by mode, backend, system, load, ISL, precision, MoE/dense",
    )
    parser.add_argument(
        "--speed", type=int, default=20, metavar="N", help="time offline surfaces over N runs (0: skip)"
    )
    args = parser.parse_args()
    try:
        from slaprof.steps.perf.silicon import load_cases, silicon_csv_path, skip_summary

        cases = load_cases()
    except UserError as exc:
        sys.exit(f"accuracy: {exc}")
    from slaprof.steps.perf.constants import load_calibration

    cal = load_calibration()
    print(f"measured rows: {silicon_csv_path()}")
    print(f"calibration: {cal.source} (fitted {cal.fitted_at or 'never'})")
    usable = [c for c in cases if not c.skip]
    builtin(usable, args.breakdown)
    if args.aic:
        aic(usable, args.aic, args.seed)
    if args.aic_surface:
        aic_surface("Qwen3-32B", "tp2")
    if args.speed:
        speed(args.speed)
    print(f"\nskipped {len(cases) - len(usable)} of {len(cases)} rows:")
    for why, count in skip_summary(cases).most_common():
        print(f"  {count:5d}  {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
