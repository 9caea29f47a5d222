"""`slaprof` command line: the request options shared by every subcommand, and the dispatcher.

Each subcommand lives in `steps/cli/commands/<name>.py` and exposes `register(subparsers)`.
Modules there import heavy libraries inside their `run` functions so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from slaprof.steps.cli import commands
from slaprof.steps.core import fields
from slaprof.steps.core.errors import StepFailed, UserError
from slaprof.steps.core.request import ProfileRequest, build_request, load_request_file, merge


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """`--config` and a flag per request field (generated from the fields' declarations in
    steps/core/request.py); every value defaults to 'not given' so --config values survive."""
    group = parser.add_argument_group("request (flags override --config)")
    group.add_argument("--config", help="request file: slaprof YAML/JSON or a Dynamo DynamoGraphDeploymentRequest")
    fields.add_request_options(group)


def request_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nested request values of the request flags given."""
    return fields.cli_overrides(args)


def request_from_args(args: argparse.Namespace) -> ProfileRequest:
    """Request file (if any) overridden by flags, validated."""
    base: dict[str, Any] = load_request_file(args.config) if getattr(args, "config", None) else {}
    data = merge(base, request_overrides(args))
    if not data.get("model"):
        raise UserError("no model given: pass --model (a Hugging Face id or a local model folder) or --config FILE")
    return build_request(data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slaprof",
        description="SLA-driven profiler for LLM inference deployments (vLLM, SGLang, TensorRT-LLM on Dynamo).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"slaprof.steps.cli.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, StepFailed) as exc:
        if args.verbose:
            raise
        print(f"slaprof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slaprof: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
