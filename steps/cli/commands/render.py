"""`slaprof render --selection DIR --out FILE`: write the DynamoGraphDeployment for a finished run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.core.fields import add_field_options

    p = sub.add_parser(
        "render",
        help="write the disaggregated DGD (+ planner ConfigMap) for a profiled run",
        description="Render the run's selection into a multi-document YAML: the planner-profile-data ConfigMap, "
        "then a DynamoGraphDeployment with the chosen prefill and decode mappings. Apply it with "
        "`slaprof apply FILE` or `kubectl apply -f FILE`.",
    )
    p.add_argument(
        "--selection",
        required=True,
        metavar="DIR",
        help="run folder (or s3://bucket/prefix) holding selection.json, request.json, "
        "prefill_raw_data.json and decode_raw_data.json",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the YAML (- for stdout)")
    p.add_argument(
        "--base",
        metavar="DGD_YAML",
        help="disaggregated DGD to start from (like Dynamo's --config): everything in it is kept "
        "except what the profile decides; default: the built-in template for the backend",
    )
    over = p.add_argument_group("deployment overrides (default: the run's request)")
    add_field_options(over, optional=DEPLOYMENT_OVERRIDES, defaults=False)
    p.set_defaults(func=run)


DEPLOYMENT_OVERRIDES = tuple(
    f"deployment.{name}"
    for name in (
        "name",
        "namespace",
        "engine_image",
        "frontend_image",
        "dynamo_version",
        "model_cache_pvc",
        "model_cache_pvc_path",
        "model_cache_mount_path",
        "hf_token_secret",
    )
)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from slaprof.steps.core.errors import UserError
    from slaprof.steps.core.fields import cli_overrides
    from slaprof.steps.core.request import ProfileRequest, build_request, merge
    from slaprof.steps.core.results import Selection
    from slaprof.steps.core.store import Layout, MissingArtifact, open_store, read_model, write_file_atomic
    from slaprof.steps.dag.render import describe, load_base, render_selection, render_warnings, to_yaml

    store = open_store(args.selection, create=False)

    def missing(exc: MissingArtifact, needed: tuple[str, ...]) -> UserError:
        return UserError(
            f"{exc}: --selection must be a finished run folder (from `slaprof profile`) holding {', '.join(needed)}"
        )

    try:
        request = read_model(store, Layout.REQUEST, ProfileRequest)
        selection = read_model(store, Layout.SELECTION, Selection)
    except MissingArtifact as exc:
        raise missing(exc, (Layout.SELECTION, Layout.REQUEST)) from None

    def planner_json() -> tuple[str, str]:
        try:
            return store.get_bytes(Layout.PREFILL_JSON).decode(), store.get_bytes(Layout.DECODE_JSON).decode()
        except MissingArtifact as exc:
            raise missing(exc, (Layout.SELECTION, Layout.REQUEST, Layout.PREFILL_JSON, Layout.DECODE_JSON)) from None

    overrides = cli_overrides(args)
    if overrides:
        request = build_request(merge(request.model_dump(), overrides))
    base = load_base(args.base) if args.base else None
    text = to_yaml(
        render_selection(request, selection, planner_json, base=base), header=describe(request, selection, base)
    )
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    write_file_atomic(Path(args.out), text.encode())  # a full disk keeps the previous file whole
    print(f"wrote {args.out}: {describe(request, selection).splitlines()[1]}")
    for warning in render_warnings(request, selection, base):
        print(f"slaprof: {warning}", file=sys.stderr)
    return 0
