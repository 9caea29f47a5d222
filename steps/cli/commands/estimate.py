"""`slaprof estimate`: one offline performance estimate (TTFT, ITL, throughput/GPU, KV capacity)."""

from __future__ import annotations

import argparse
import json
from typing import Any

MODES = ("prefill", "decode", "agg")
# request fields this command takes one by one (their flags, types and checks come from the request)
REQUIRED_FIELDS = ("model", "hardware.gpu", "backend", "sla.isl", "sla.osl")
OPTIONAL_FIELDS = (
    "engine.quantization",
    "engine.kv_cache_dtype",
    "sweep.aic_system",
    "sweep.aic_hf_id",
    "sweep.aic_backend_version",
)


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.core.fields import add_field_options

    p = sub.add_parser(
        "estimate",
        help="estimate TTFT, ITL, throughput per GPU and KV capacity of one deployment, offline",
        description="Estimate one engine's performance without GPUs: prefill (TTFT of a batch of prompts), "
        "decode (one step for a batch at context isl + osl/2) or aggregated serving at a "
        "concurrency (TTFT with queueing and interference, ITL, throughput). A tpN mapping on an "
        "MoE model splits the experts by tensor parallelism too.",
    )
    add_field_options(p, required=REQUIRED_FIELDS, optional=OPTIONAL_FIELDS)
    p.add_argument("--mapping", required=True, help="parallel mapping: tpN, tepN or depN (e.g. tp4, dep8)")
    p.add_argument(
        "--batch", type=int, required=True, help="prompts (prefill), sequences (decode) or concurrency (agg)"
    )
    p.add_argument("--mode", default="agg", help=f"{' | '.join(MODES)} (default agg)")
    p.add_argument("--estimator", default="builtin", help="builtin (calibrated roofline) | aic (AI Configurator)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from slaprof.steps.core.errors import UserError
    from slaprof.steps.core.fields import check_values
    from slaprof.steps.perf import ESTIMATORS

    check_values(args, ("backend", "engine.quantization", "engine.kv_cache_dtype", "sla.isl", "sla.osl"))
    for flag, value, allowed in (("--mode", args.mode, MODES), ("--estimator", args.estimator, ESTIMATORS)):
        if value not in allowed:
            raise UserError(f"{flag} {value!r} is not one of: {', '.join(allowed)}")
    if args.batch <= 0:
        raise UserError(f"--batch must be a positive number of prompts/sequences, got {args.batch}")


def estimate(args: argparse.Namespace) -> dict[str, Any]:
    """The numbers `slaprof estimate` prints, as a dict."""
    from slaprof.steps.core.candidates import Candidate
    from slaprof.steps.core.errors import UserError
    from slaprof.steps.dag.plan import context_problem, divisibility_problem
    from slaprof.steps.perf import get_estimator
    from slaprof.steps.specs.gpus import get_gpu
    from slaprof.steps.specs.models import apply_overrides, load_model_info

    _check(args)
    cand = Candidate.parse(args.mapping)
    model = apply_overrides(load_model_info(args.model), args.quantization, args.kv_cache_dtype)
    too_long = context_problem(args.isl, args.osl, model)
    if too_long:
        raise UserError(too_long)
    problem = divisibility_problem(model, cand)
    if problem:
        raise UserError(f"mapping {cand.id} does not fit {model.name}: {problem}; choose another --mapping")
    gpu = get_gpu(args.gpu)
    opts = {
        k: v
        for k, v in (
            ("system", args.aic_system),
            ("hf_id", args.aic_hf_id),
            ("backend_version", args.aic_backend_version),
        )
        if v
    }
    est = get_estimator(model, gpu, args.backend, cand, args.estimator, **opts)
    isl, osl, batch = args.isl, args.osl, args.batch
    if args.mode == "prefill":
        ttft = float(est.prefill_ttft_ms(isl, batch))
        itl = float(est.decode_itl_ms(batch, isl + osl // 2))
        thpt = isl * batch / (ttft / 1e3) / cand.num_gpus
    elif args.mode == "decode":
        ttft = float(est.prefill_ttft_ms(isl, 1))
        itl = float(est.decode_itl_ms(batch, isl + osl // 2))
        thpt = batch / (itl / 1e3) / cand.num_gpus
    else:
        out = est.agg(isl, osl, batch)
        ttft, itl, thpt = out.ttft_ms, out.itl_ms, out.thpt_per_gpu
    bands: dict[str, list[float]] = {}
    if args.estimator == "builtin":  # the prediction intervals are the built-in model's
        from slaprof.steps.perf.intervals import Context

        ctx = Context(args.backend, isl, model.structure)
        load = max(1.0, batch / cand.attn_dp)
        t = ctx.band(ttft, "ttft", 1.0 if args.mode == "decode" else load)
        i = ctx.band(itl, "itl", load)
        # throughput per GPU is the work done over the latency that paces it
        pace = (t.lo, t.hi, ttft) if args.mode == "prefill" else (i.lo, i.hi, itl)
        bands = {
            "ttft_ms_80": [round(t.lo, 3), round(t.hi, 3)],
            "itl_ms_80": [round(i.lo, 3), round(i.hi, 3)],
            "thpt_per_gpu_80": [round(thpt * pace[2] / pace[1], 2), round(thpt * pace[2] / pace[0], 2)],
        }
    return {
        "ttft_ms": round(ttft, 3),
        "itl_ms": round(itl, 3),
        "thpt_per_gpu": round(thpt, 2),
        **bands,
        "max_kv_tokens": int(est.max_kv_tokens()),
        "mode": args.mode,
        "estimator": args.estimator,
        "model": model.name,
        "gpu": gpu.name,
        "backend": args.backend,
        "mapping": cand.id,
        "weight_dtype": model.weight_dtype,
        "kv_dtype": model.kv_dtype,
    }


def run(args: argparse.Namespace) -> int:
    result = estimate(args)
    if args.json:
        print(json.dumps(result))
        return 0
    unit = "input" if args.mode == "prefill" else "output"
    print(
        f"{result['model']} on {result['mapping']} x {result['gpu']}, {result['backend']}, "
        f"{result['weight_dtype']} weights, {result['kv_dtype']} KV ({result['estimator']}, {args.mode}, "
        f"isl {args.isl}, osl {args.osl}, batch {args.batch})"
    )

    def band(key: str, digits: int) -> str:
        lo_hi = result.get(f"{key}_80")
        return f"  [80%: {lo_hi[0]:.{digits}f}-{lo_hi[1]:.{digits}f}]" if lo_hi else ""

    print(f"  TTFT            {result['ttft_ms']:10.1f} ms{band('ttft_ms', 1)}")
    print(f"  ITL             {result['itl_ms']:10.2f} ms{band('itl_ms', 2)}")
    print(f"  throughput/GPU  {result['thpt_per_gpu']:10.1f} {unit} tokens/s{band('thpt_per_gpu', 1)}")
    print(f"  KV capacity     {result['max_kv_tokens']:10,d} tokens")
    return 0
