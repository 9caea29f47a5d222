"""`slaprof profile`: the whole job on one machine (plan -> bench -> fit -> render), offline by default."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "profile",
        help="profile a model end to end on this machine and recommend a deployment (aggregated or disaggregated)",
        description="Plan the candidate parallel mappings, measure each (offline estimate by default; "
        "--method simulate or online to measure served engines with AIPerf), select under the SLA, "
        "and write the selection, planner data, plots, report.html and the DGD to --out. "
        "Re-running with the same --out reuses the candidates already measured.",
    )
    add_request_options(p)
    p.add_argument(
        "--out",
        help="output folder or s3://bucket/prefix (endpoint and keys from SLAPROF_S3_ENDPOINT, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); default: "
        "./slaprof-out/<model>-<backend>-<gpu>-<method>",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="candidates measured at once (default: 1 offline, one per CPU core for simulate, "
        "as many as the GPUs allow online)",
    )
    p.add_argument("--force", action="store_true", help="measure every candidate again, even those already measured")
    p.add_argument(
        "--pick",
        nargs="?",
        const=ASK,
        default=AUTO,
        metavar="CHOICE",
        help="deploy these engines instead of fit's recommendation: prefill=tp2,decode=tp4 or agg=agg-tp4; "
        "without a value, choose among fit's Pareto choices at a prompt (needs a terminal); default: auto",
    )
    meas = p.add_argument_group("measuring (simulate and online)")
    meas.add_argument(
        "--tokenizer",
        help="tokenizer folder or Hugging Face id for AIPerf and the prompts (default: the model; "
        "env SLAPROF_TOKENIZER)",
    )
    meas.add_argument(
        "--time-scale",
        help="simulate: wall ms per modelled ms, or auto (default: chosen per point so that each is "
        "long enough to measure; env SLAPROF_SIM_TIME_SCALE)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress display: live rows on a terminal (auto), log lines, or nothing",
    )
    p.set_defaults(func=run)


AUTO = "auto"
ASK = "ask"
PICK_ROLES = ("prefill", "decode", "agg")


def pick_choice(text: str) -> str:
    """--pick's value as a choice of the pick step: `tp2+tp4` (prefill+decode), `agg-tp4`, or auto."""
    from slaprof.steps.core.candidates import AGG_PREFIX
    from slaprof.steps.core.errors import UserError

    if text.strip() in ("", AUTO):
        return AUTO
    roles: dict[str, str] = {}
    for part in text.split(","):
        role, sep, cid = (x.strip() for x in part.partition("="))
        if not sep or role not in PICK_ROLES or not cid or role in roles:
            raise UserError(
                f"--pick {text!r}: give prefill=<id>,decode=<id> (e.g. prefill=tp2,decode=tp4) or agg=<id> "
                "(e.g. agg=agg-tp4), ids as in plan.json"
            )
        roles[role] = cid
    if set(roles) == {"agg"} and roles["agg"].startswith(AGG_PREFIX):
        return roles["agg"]
    if set(roles) == {"prefill", "decode"}:
        return f"{roles['prefill']}+{roles['decode']}"
    raise UserError(f"--pick {text!r}: name both prefill and decode, or only agg (an {AGG_PREFIX}... id)")


def ask_choice(choices: list[str]) -> str:
    """Show fit's Pareto choices on the terminal and return the one taken (Enter: the first, fit's)."""
    from slaprof.steps.core.errors import UserError

    if not choices:
        return AUTO
    print("Pareto choices (fit's recommendation first):", file=sys.stderr)
    for i, label in enumerate(choices, 1):
        print(f"  {i}. {label}", file=sys.stderr)
    while True:
        try:
            answer = input(f"deploy which? [1-{len(choices)}, Enter = 1] ").strip()
        except EOFError:
            raise UserError("--pick: no choice was given at the prompt") from None
        if not answer:
            return choices[0]
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1]
        print(f"  type a number from 1 to {len(choices)}", file=sys.stderr)


def _pick_options(text: str) -> dict[str, Any]:
    """RunOptions fields for --pick: a fixed choice, or a prompt (which needs a terminal)."""
    from slaprof.steps.core.errors import UserError

    if text != ASK:
        return {"pick": pick_choice(text)}
    if not sys.stdin.isatty():
        raise UserError(
            "--pick without a value asks at a prompt, but stdin is not a terminal; "
            "give the choice instead, e.g. --pick prefill=tp2,decode=tp4"
        )
    return {"ask": ask_choice}


def default_out(model: str, backend: str, gpu: str, method: str) -> str:
    """A stable folder per (model, backend, GPU, method), so re-running the same command resumes."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model.rstrip("/").split("/")[-1]).strip("-") or "model"
    return f"slaprof-out/{name}-{backend}-{gpu}-{method}"


def _bench_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    """--tokenizer and --time-scale for every bench step (the runner checks that the tokenizer can
    count tokens before any candidate starts)."""
    from slaprof.steps.dag.bench import check_tokenizer_path, parse_time_scale

    overrides: dict[str, Any] = {}
    if args.tokenizer:
        check_tokenizer_path(args.tokenizer)  # before the plan: one line, nothing written
        overrides["tokenizer"] = args.tokenizer
    if args.time_scale is not None:
        parse_time_scale(args.time_scale)  # a bad value is an error here, not in every worker
        overrides["time_scale"] = args.time_scale
    return overrides or None


def run(args: argparse.Namespace) -> int:
    from slaprof.steps.cli.main import request_from_args
    from slaprof.steps.core.errors import UserError
    from slaprof.steps.runner.local import Interrupted, RunOptions, run_profile
    from slaprof.steps.runner.progress import make_progress

    request = request_from_args(args)
    out = args.out or default_out(request.model, request.backend, request.hardware.gpu, request.method)
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: must be at least 1")
    overrides = _bench_overrides(args)
    pick = _pick_options(args.pick)  # a bad --pick is an error before anything runs
    reporter = make_progress(args.progress)
    # in a pod the runner is stopped with SIGTERM: stop like Ctrl-C, engines included
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run_profile(
            request,
            RunOptions(out=out, parallel=args.parallel, force=args.force, bench_overrides=overrides, **pick),
            reporter,
        )
    except Interrupted as exc:
        reporter.close()
        running = f"; stopped the running candidates ({exc}) and their engines" if str(exc) else ""
        print(
            f"slaprof: interrupted{running}. Profiles finished so far are kept in {out}: "
            "run the same command again to resume.",
            file=sys.stderr,
        )
        return Interrupted.exit_code
    else:
        steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
        reporter.step("done", steps)
    finally:
        reporter.close()

    for error in result.errors:
        print(f"slaprof: error: {error}", file=sys.stderr)
    selection = result.selection
    if selection is not None:
        for warning in selection.warnings:
            print(f"slaprof: warning: {warning}", file=sys.stderr)
    if not result.recommended:
        failed = [o for o in result.outcomes if o.status in ("failed", "infeasible")]
        if selection is None:  # fit did not run or failed: its warnings did not list the candidates
            why = "; ".join(f"{o.candidate_id}: {o.reason}" for o in failed) or "see the errors above"
        else:
            why = f"{len(failed)} of {len(result.outcomes)} candidates failed or are infeasible, see above"
        print(f"slaprof: no recommendation could be made ({why})", file=sys.stderr)
        if result.report:
            print(f"Report: {result.report}")
        return 1
    assert selection is not None
    if result.dgd:
        note = ""
        if selection.deployment is not None and selection.deployment.mode == "agg":
            from slaprof.steps.dag.render_agg import PLANNER_OMITTED

            note = f" (aggregated; {PLANNER_OMITTED})"
        print(f"DGD: {result.dgd}{note}", file=sys.stderr)
        sla_note = selection.sla_note()
        if sla_note:
            print(f"slaprof: warning: {sla_note}", file=sys.stderr)
        from slaprof.steps.dag.render import render_warnings

        for warning in render_warnings(request, selection):  # also in the DGD file's header
            print(f"slaprof: {warning}", file=sys.stderr)
    if result.drift:
        print(f"slaprof: drift: {result.drift}", file=sys.stderr)
    for line in selection.recommendation:
        print(line)
    print(f"Report: {result.report or result.location}")
    return 1 if result.errors else 0  # a step after fit failed (pick, render, record, apply): its line is above
