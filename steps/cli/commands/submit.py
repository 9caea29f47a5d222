"""`slaprof submit`: start a profiling run on Argo Workflows and print its name and UI link."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "submit",
        help="run the profile on Argo Workflows (slaprof-profile WorkflowTemplate)",
        description="Validate the request here, then create a Workflow from the slaprof-profile "
        "WorkflowTemplate through the Argo Server API and print its name and UI link. The token is "
        "read from ARGO_TOKEN (as the argo CLI does), never from the command line.",
    )
    add_request_options(p)
    argo = p.add_argument_group("Argo")
    argo.add_argument("--argo-server", help="Argo Server URL, e.g. https://localhost:2746 (default: $ARGO_SERVER)")
    argo.add_argument(
        "--workflow-namespace", help="namespace of the WorkflowTemplate (default: $ARGO_NAMESPACE or argo)"
    )
    argo.add_argument(
        "--insecure-skip-verify", action="store_true", default=None, help="do not verify the server's TLS certificate"
    )
    argo.add_argument(
        "--pick",
        choices=["auto", "manual"],
        default="auto",
        help="manual: pause after fit so you pick a Pareto choice in the Argo UI",
    )
    argo.add_argument(
        "--drift-threshold",
        type=float,
        default=None,
        help="fail the run when results move more than this many percent from the previous run",
    )
    argo.add_argument(
        "--print", dest="print_only", action="store_true", help="print the Workflow as YAML instead of submitting it"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from slaprof.steps.cli.main import request_from_args
    from slaprof.workflows.submit import ArgoServer, describe, submit, workflow_for

    request = request_from_args(args)
    workflow = workflow_for(request, pick=args.pick, drift_threshold=args.drift_threshold)
    if args.print_only:
        print(yaml.safe_dump(describe(workflow), sort_keys=False), end="")
        return 0
    server = ArgoServer.from_env(args.argo_server, args.workflow_namespace, args.insecure_skip_verify)
    name = submit(workflow, server)
    print(f"submitted {name} in namespace {server.namespace}")
    print(f"watch it: {server.ui_link(name)}")
    if args.pick == "manual":
        print("after fit, open the `choose` node, press RESUME and pick a prefill+decode choice")
    return 0
