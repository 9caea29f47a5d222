"""`slaprof workflow render`: write the Argo WorkflowTemplate and CronWorkflow YAML."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "workflow",
        help="generate the Argo Workflows manifests (WorkflowTemplate, CronWorkflow)",
        description="Generate slaprof's Argo Workflows manifests with Hera.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = actions.add_parser(
        "render",
        help="write workflowtemplate.yaml and cronworkflow.yaml",
        description="Write the slaprof-profile WorkflowTemplate and the slaprof-reprofile CronWorkflow "
        "into --out, and into charts/slaprof/files/ when the chart is in this checkout. Files of those "
        "names already there are regenerated (each replaced whole, never half-written); nothing else is touched.",
    )
    r.add_argument("--out", required=True, help="folder to write the YAML into (created if missing)")
    r.add_argument("--image", default=None, help="slaprof step image (default: ghcr.io/slaprof/slaprof:<version>)")
    r.add_argument("--service-account", default=None, help="service account of the workflow pods (default: slaprof)")
    r.add_argument("--no-chart", action="store_true", help="do not also write charts/slaprof/files/")
    r.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steps.errors import UserError
    from workflows.params import WorkflowSettings
    from workflows.render import CHART_FILES, CRON_WORKFLOW_FILE, WORKFLOW_TEMPLATE_FILE, write_manifests

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {out} is a file, not a folder: give a folder to write {WORKFLOW_TEMPLATE_FILE} and "
            f"{CRON_WORKFLOW_FILE} into"
        )
    settings = WorkflowSettings()
    if args.image:
        settings.image = args.image
    if args.service_account:
        settings.service_account = args.service_account
    try:
        paths = write_manifests(out, settings, chart_files=None if args.no_chart else CHART_FILES)
    except OSError as exc:  # the folder cannot be created (a file on its path, no permission)
        raise UserError(f"cannot create the folder {exc.filename or out}: {exc.strerror or exc}") from None
    for path in paths:
        print(path)
    return 0
