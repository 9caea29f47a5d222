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
        "into --out, and into charts/slaprof/files/ when the chart is in this checkout.",
    )
    r.add_argument("--out", required=True, help="folder to write the YAML into")
    r.add_argument("--image", default=None, help="slaprof step image (default: ghcr.io/slaprof/slaprof:<version>)")
    r.add_argument("--service-account", default=None, help="service account of the workflow pods (default: slaprof)")
    r.add_argument("--no-chart", action="store_true", help="do not also write charts/slaprof/files/")
    r.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workflows.params import WorkflowSettings
    from workflows.render import CHART_FILES, write_manifests

    settings = WorkflowSettings()
    if args.image:
        settings.image = args.image
    if args.service_account:
        settings.service_account = args.service_account
    for path in write_manifests(Path(args.out), settings, chart_files=None if args.no_chart else CHART_FILES):
        print(path)
    return 0
