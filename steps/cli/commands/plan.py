"""`slaprof plan`: show the candidate mappings and sweep grids for a request."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from slaprof.steps.cli.main import add_request_options

    p = sub.add_parser(
        "plan",
        help="list candidate parallel mappings and why others were dropped",
        description="Detect the model's size and list the candidate mappings slaprof would profile.",
    )
    add_request_options(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from slaprof.steps.cli.main import request_from_args
    from slaprof.steps.dag.plan import make_plan

    request = request_from_args(args)
    plan = make_plan(request)
    if args.json:
        print(plan.model_dump_json(indent=2))
        return 0
    console = Console()
    info = plan.model.summary()
    console.print(
        f"[bold]{info['name']}[/] ({info['architecture']}, {info['total_params_b']}B params, "
        f"{info['active_params_b']}B active, {info['weight_dtype']} weights {info['weight_gb']} GB) "
        f"on {plan.gpu}, backend {plan.backend}: {plan.min_gpus}-{plan.max_gpus} GPUs per engine, "
        f"deployments of at most {request.hardware.gpu_budget} GPUs, serving {request.serving}"
    )
    table = Table("candidate", "GPUs", "weights GiB/GPU", "KV capacity (tokens)", "status")
    for p in plan.candidates:
        status = "runnable" if p.status == "runnable" else f"[red]dropped[/]: {p.reason}"
        table.add_row(
            p.id, str(p.candidate.num_gpus), f"{p.weight_gib_per_gpu:.2f}", f"{p.kv_tokens_estimate:,}", status
        )
    console.print(table)
    g = plan.grid
    console.print(f"prefill ISLs ({len(g.prefill_isls)}): {g.prefill_isls}")
    console.print(f"decode ISLs ({len(g.decode_isls)}), OSL {g.decode_osl}: {g.decode_isls}")
    return 0
