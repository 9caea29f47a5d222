"""`slaprof select`: re-select engines for a new SLA from stored profiles, in seconds, without
measuring again. Prints Dynamo's recommendation lines; --out also writes selection.json and the
planner data (and plots plus report.html with --report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "select",
        help="re-select engines for a new SLA from stored profiles (no re-benchmark)",
        description="Re-run the selection on a finished run's profiles with new targets, e.g. "
        "`slaprof select --profiles runs/qwen --ttft 200 --itl 15 --isl 4000`. Values at an ISL or "
        "context the sweep did not measure come from the fitted curves.",
    )
    p.add_argument(
        "--profiles", required=True, metavar="DIR", help="run folder (or its profiles/ folder), or s3://bucket/run"
    )
    p.add_argument("--out", metavar="DIR", help="also write selection.json and the planner data here")
    p.add_argument("--report", action="store_true", help="with --out: also write plots and report.html")
    p.add_argument("--json", action="store_true", help="print the selection as JSON")
    add_request_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from slaprof.steps.cli.commands.fit import load_inputs, print_result
    from slaprof.steps.core.errors import UserError
    from slaprof.steps.core.store import Layout, open_store
    from slaprof.steps.dag.fit import fit_profiles, write_outputs

    if args.report and not args.out:
        raise UserError("--report needs --out DIR (where to write plots and report.html)")
    request, plan, profiles, _root = load_inputs(args)
    result = fit_profiles(request, plan, profiles)
    if args.json:
        print(result.selection.model_dump_json(indent=2))
    else:
        print_result(result)
    if args.out:
        out = open_store(args.out)
        write_outputs(out, result, request, report=args.report)
        where = sys.stderr if args.json else sys.stdout  # --json keeps stdout one JSON document
        print(f"Selection: {out.uri(Layout.SELECTION)}", file=where)
        if args.report:
            print(f"Report: {out.uri(Layout.REPORT)}", file=where)
    return 0 if result.selection.recommendation else 1
