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
        "into --out (and nowhere else; the chart's copies are refreshed with --out charts/slaprof/files).",
    )
    r.add_argument("--out", required=True, help="folder to write the YAML into")
    r.add_argument("--image", default=None, help="slaprof step image (default: ghcr.io/slaprof/slaprof:<version>)")
    r.add_argument(
        "--service-account",
        default=None,
        help="service account of the workflow pods and Argo's executor (default: slaprof)",
    )
    r.add_argument(
        "--deployer-service-account",
        default=None,
        help="service account of apply and cleanup, the steps that change the cluster (default: slaprof-deployer)",
    )
    r.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slaprof.steps.core.errors import UserError
    from slaprof.workflows.params import WorkflowSettings
    from slaprof.workflows.render import CRON_WORKFLOW_FILE, WORKFLOW_TEMPLATE_FILE, write_manifests

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
    if args.deployer_service_account:
        settings.deployer_service_account = args.deployer_service_account
    try:
        paths = write_manifests(out, settings)
    except OSError as exc:  # the folder cannot be created (a file on its path, no permission)
        raise UserError(f"cannot create the folder {exc.filename or out}: {exc.strerror or exc}") from None
    for path in paths:
        print(path)
    return 0
