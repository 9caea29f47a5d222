"""`slaprof apply FILE`: create or update the rendered ConfigMap and DynamoGraphDeployment in a cluster."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="create or update a rendered DGD (and its planner ConfigMap) in a cluster",
        description="Apply the documents of FILE (from `slaprof render`) with the Kubernetes API: create what is "
        "missing, patch only what changed (applying the same file twice changes nothing), and "
        "optionally wait until the DynamoGraphDeployment reports Ready.",
    )
    p.add_argument("file", metavar="FILE", help="multi-document YAML written by `slaprof render` (- for stdin)")
    p.add_argument("--namespace", "-n", help="target namespace (default: the file's, else 'default')")
    p.add_argument("--wait", action="store_true", help="wait until the DGD is Ready (state successful)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="seconds to wait (default 1800)")
    p.add_argument("--poll-interval", type=float, default=10.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials, else ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context to use")
    p.add_argument(
        "--owner",
        metavar="REF",
        help="owner reference for every object: apiVersion=..,kind=..,name=..,uid=.. "
        "(the objects are deleted with their owner)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from slaprof.steps.core.errors import UserError
    from slaprof.steps.dag.apply import OwnerReference, apply_manifests, kube_api_client, load_manifests

    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout:g}")
    if args.file == "-":
        text, origin = sys.stdin.read(), "stdin"
    else:
        try:
            text, origin = Path(args.file).read_text(), args.file
        except OSError as exc:
            raise UserError(f"cannot read {args.file}: {exc.strerror}; render one with `slaprof render`") from None
    docs = load_manifests(text, origin=origin)
    namespace = args.namespace or next(
        (d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")), "default"
    )
    owner = OwnerReference.parse(args.owner) if args.owner else None
    client = kube_api_client(args.kubeconfig, args.context)
    result = apply_manifests(
        docs,
        namespace,
        wait=args.wait,
        timeout=args.timeout,
        owner=owner,
        api_client=client,
        progress=lambda line: print(line, flush=True),
        poll_interval=args.poll_interval,
    )
    if result.ready:
        print(f"ready: {result.summary()}")
    return 0
