"""`slaprof fit`: select engines from stored profiles and write the selection, planner data,
plots and report.html (DAG step `fit` on the command line)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.results import CandidateProfile
    from slaprof.steps.core.store import ArtifactStore
    from slaprof.steps.dag.plan import Plan
    from slaprof.steps.fitting.fit_result import FitResult


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "fit",
        help="select prefill/decode engines from stored profiles; write planner data, plots and report.html",
        description="Read the candidate profiles of a run (a run folder with profiles/, or a folder of profile JSON "
        "files; local or s3://), select the prefill and decode engines under the SLA, and write "
        "selection.json, the Dynamo planner data, plots and report.html to --out. SLA flags (--ttft, "
        "--itl, --isl, --osl, --request-rate) override the run's request.json.",
    )
    p.add_argument(
        "--profiles", required=True, metavar="DIR", help="run folder (or its profiles/ folder), or s3://bucket/run"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder or s3://bucket/prefix")
    p.add_argument("--no-report", action="store_true", help="skip plots and report.html")
    add_request_options(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------
# shared with `slaprof select`
# ---------------------------------------------------------------------------
def _parent_run(location: str) -> str | None:
    """The run folder above a local `.../profiles` folder, when it holds request.json."""
    from pathlib import Path
    from urllib.parse import urlparse

    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    parent = Path(parsed.path if parsed.scheme == "file" else location).expanduser().resolve().parent
    return str(parent) if (parent / "request.json").is_file() else None


def load_inputs(args: argparse.Namespace) -> tuple[ProfileRequest, Plan, list[CandidateProfile], ArtifactStore]:
    """(request, plan, profiles, run store) for --profiles: the stored request overridden by flags."""
    from slaprof.steps.cli.main import request_overrides
    from slaprof.steps.core.errors import UserError
    from slaprof.steps.core.request import build_request, load_request_file, merge
    from slaprof.steps.core.store import Layout, open_store, read_json
    from slaprof.steps.dag.fit import load_plan, load_profiles

    store = open_store(args.profiles, create=False)
    if store.list(Layout.PROFILES):  # a run folder
        root, profiles = store, load_profiles(store, Layout.PROFILES)
    else:  # a folder of profiles, maybe the profiles/ of a run
        parent = _parent_run(args.profiles)
        root = open_store(parent, create=False) if parent else store
        profiles = load_profiles(store, "")
    if not profiles:
        raise UserError(
            f"no candidate profiles found at {store.uri()} (expected profiles/<id>.json or <id>.json); "
            "run `slaprof profile` first or point --profiles at a run folder"
        )
    base: dict[str, Any] = read_json(root, Layout.REQUEST) if root.exists(Layout.REQUEST) else {}  # type: ignore[assignment]
    if getattr(args, "config", None):
        base = merge(base, load_request_file(args.config))
    data = merge(base, request_overrides(args))
    if not data.get("model"):
        raise UserError(
            f"no request.json at {root.uri()}: pass --model (and the request's other flags) or --config FILE"
        )
    request = build_request(data)
    return request, load_plan(root, request), profiles, root


def print_result(result: FitResult) -> None:
    import sys

    sel = result.selection
    for line in sel.recommendation:
        print(line)
    if sel.replicas and sel.deployment is None:  # a deployment's line already carries its engine counts
        r = sel.replicas
        print(
            f"Replicas at {r.request_rate:g} req/s: {r.prefill} prefill x {sel.prefill.candidate.label if sel.prefill else '?'}"
            f", {r.decode} decode x {sel.decode.candidate.label if sel.decode else '?'} = {r.total_gpus} GPUs"
        )
    if sel.nearest_sla:
        print(
            f"Nearest achievable SLA: TTFT {sel.nearest_sla['ttft_ms']:.2f} ms, ITL {sel.nearest_sla['itl_ms']:.2f} ms"
        )
    for w in sel.warnings:
        print(f"slaprof: warning: {w}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from slaprof.steps.core.store import Layout, open_store, write_model
    from slaprof.steps.dag.fit import fit_profiles, write_outputs

    request, plan, profiles, root = load_inputs(args)
    result = fit_profiles(request, plan, profiles)
    out = open_store(args.out)
    if out.uri() != root.uri():  # a self-contained output that `slaprof render` can read
        write_model(out, Layout.REQUEST, request)
        write_model(out, Layout.PLAN, plan)
    write_outputs(out, result, request, report=not args.no_report)
    print_result(result)
    print(f"Selection: {out.uri(Layout.SELECTION)}")
    if not args.no_report:
        print(f"Report: {out.uri(Layout.REPORT)}")
    return 0 if result.selection.recommendation else 1
