"""`slaprof render --selection DIR --out FILE`: write the DynamoGraphDeployment for a finished run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steps.dynamo_releases import supported

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
    over.add_argument("--name", help="DGD name (default: <model>-<backend>, shortened to fit pod-name limits)")
    over.add_argument("--namespace", help="namespace written into the manifests")
    over.add_argument("--engine-image", help="worker image")
    over.add_argument("--frontend-image", help="frontend and planner image")
    over.add_argument(
        "--dynamo-version",
        help=f"Dynamo release to render for: {supported()} (default: the images' tag, else the newest)",
    )
    over.add_argument("--model-cache-pvc", help="PVC holding the model weights (mounted at --model-cache-mount-path)")
    over.add_argument("--model-cache-pvc-path", help="the model's folder inside that PVC")
    over.add_argument("--model-cache-mount-path", help="where the PVC is mounted (default /opt/model-cache)")
    over.add_argument("--hf-token-secret", help="Secret with HF_TOKEN for the workers (default hf-token-secret)")
    p.set_defaults(func=run)


_OVERRIDES = (
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


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from steps.errors import UserError
    from steps.render import describe, load_base, local_model_warning, render_selection, to_yaml
    from steps.request import ProfileRequest, build_request
    from steps.results import Selection
    from steps.store import Layout, MissingArtifact, open_store, read_model, write_file_atomic

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

    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    if overrides:
        data = request.model_dump()
        data["deployment"].update(overrides)
        request = build_request(data)
    base = load_base(args.base) if args.base else None
    text = to_yaml(render_selection(request, selection, planner_json, base=base), header=describe(request, selection))
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    write_file_atomic(Path(args.out), text.encode())  # a full disk keeps the previous file whole
    print(f"wrote {args.out}: {describe(request, selection).splitlines()[1]}")
    warning = local_model_warning(request)
    if warning:
        print(f"slaprof: {warning}", file=sys.stderr)
    return 0
