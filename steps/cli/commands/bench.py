"""`slaprof bench`: measure (or estimate) one candidate and write DIR/<candidate>.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "bench",
        help="measure one candidate's prefill and decode surfaces",
        description="Measure one candidate mapping: offline (estimate), simulate (simulated engine + AIPerf on "
        "CPUs) or online (a real engine on this machine's GPUs + AIPerf). Writes DIR/<candidate>.json.",
    )
    add_request_options(p)
    p.add_argument("--candidate", required=True, help="mapping id from `slaprof plan`, e.g. tp2, tep8, dep8")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <candidate>.json (created)")
    quick = p.add_argument_group("quick sweeps (thin the plan's grid)")
    quick.add_argument("--max-prefill-points", type=int, help="at most this many prefill ISLs")
    quick.add_argument("--max-decode-contexts", type=int, help="at most this many decode contexts")
    quick.add_argument("--max-concurrency-points", type=int, help="concurrencies per decode context")
    quick.add_argument("--decode-osl", type=int, help="output tokens per decode request (default: --osl)")
    quick.add_argument("--prefill-repeats", type=int, help="requests per prefill ISL (default 2)")
    meas = p.add_argument_group("measuring")
    meas.add_argument(
        "--tokenizer", help="tokenizer folder or id for AIPerf and prompts (default: the model; env SLAPROF_TOKENIZER)"
    )
    meas.add_argument("--torch-profile", action="store_true", help="capture a torch-profiler trace after the sweeps")
    meas.add_argument("--no-pipeline", action="store_true", help="start each AIPerf run only when the previous ended")
    meas.add_argument("--port", type=int, help="engine port (default: a free one)")
    meas.add_argument("--ready-timeout", type=float, help="seconds to wait for the engine (default 1800)")
    meas.add_argument("--keep-workdir", action="store_true", help="keep engine and AIPerf logs in DIR/<candidate>-work")
    sim = p.add_argument_group("simulate")
    sim.add_argument(
        "--time-scale",
        help="wall ms per modelled ms, or auto (results are rescaled; default: auto, chosen per point so that "
        "each is long enough to measure)",
    )
    sim.add_argument("--sim-startup", type=float, help="simulated engine start-up seconds")
    sim.add_argument("--sim-max-kv-tokens", type=int, help="override the simulated engine's KV capacity")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import signal
    from pathlib import Path

    from slaprof.steps.cli.main import request_from_args
    from slaprof.steps.dag.bench import BenchOptions, measure_candidate
    from slaprof.steps.dag.plan import make_plan
    from slaprof.steps.measure.simcheck import summary

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the bench's cleanup: stop the engine and AIPerf

    signal.signal(signal.SIGTERM, _interrupt)
    request = request_from_args(args)
    plan = make_plan(request)
    planned = plan.get(args.candidate.strip().lower())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / f"{planned.id}-work"
    options = BenchOptions.from_env(
        tokenizer=args.tokenizer,
        time_scale=args.time_scale,
        startup_s=args.sim_startup,
        sim_max_kv_tokens=args.sim_max_kv_tokens,
        prefill_repeats=args.prefill_repeats,
        decode_osl=args.decode_osl,
        max_prefill_points=args.max_prefill_points,
        max_decode_isls=args.max_decode_contexts,
        max_concurrency_points=args.max_concurrency_points,
        torch_profile=args.torch_profile or None,
        pipeline=False if args.no_pipeline else None,
        port=args.port,
        ready_timeout_s=args.ready_timeout,
        keep_workdir=args.keep_workdir or None,
    )

    def show(phase: str, done: int, total: int) -> None:
        print(f"{planned.id}: {phase} {done}/{total}", flush=True)

    if planned.status != "runnable":
        print(f"{planned.id}: the plan dropped this candidate ({planned.reason}); measuring it anyway", flush=True)
    try:
        profile = measure_candidate(request, plan, planned.candidate, workdir, show, options)
        # torch-profiler traces are stored next to the profile
        for name, path in list(profile.artifacts.items()):
            if name.startswith("torch_trace"):
                target = out / f"{planned.id}-traces" / Path(path).name
                target.parent.mkdir(exist_ok=True)
                shutil.copy2(path, target)
                profile.artifacts[name] = str(target)
    finally:
        if not options.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if not options.keep_workdir:
        profile.artifacts.pop("workdir", None)
    profile_path = out / f"{planned.id}.json"
    profile_path.write_text(profile.model_dump_json(indent=2))
    prov = profile.provenance
    ratio = f", {prov.measuring_s / prov.engine_up_s:.0%} of it measuring" if prov.engine_up_s else ""
    failed = f"; {len(profile.failed_points)} failed" if profile.failed_points else ""
    off = summary(profile)
    print(
        f"{planned.id}: {profile.status}{': ' + profile.reason if profile.reason else ''}; "
        f"{len(profile.prefill)} prefill and {len(profile.decode)} decode points{failed}, max KV "
        f"{profile.max_kv_tokens:,} tokens; engine up {prov.engine_up_s:.1f} s{ratio}" + (f"; {off}" if off else "")
    )
    print(profile_path)
    return 0 if profile.status == "ok" else 1
