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

    from workflows.params import WorkflowSettings
    from workflows.render import write_manifests

    settings = WorkflowSettings()
    if args.image:
        settings.image = args.image
    if args.service_account:
        settings.service_account = args.service_account
    if args.deployer_service_account:
        settings.deployer_service_account = args.deployer_service_account
    for path in write_manifests(Path(args.out), settings):
        print(path)
    return 0
