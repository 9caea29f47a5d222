"""`slaprof models`: the built-in model catalog, used for Hugging Face ids that no local folder,
Hugging Face cache or reachable Hub answers."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the built-in model catalog (used when the Hugging Face Hub is not reachable)",
        description="The models whose config.json facts slaprof carries: --model ID works for these without "
        "Hub access. An id is looked up in the Hugging Face cache, then on the Hub (one request; "
        "HF_HUB_OFFLINE=1 skips it), then here.",
    )
    p.add_argument("filter", nargs="?", default="", help="show only ids containing this text (case-insensitive)")
    p.add_argument("--json", action="store_true", help="print one JSON object per model (its summary)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from slaprof.steps.core.errors import UserError
    from slaprof.steps.specs.catalog import catalog_models

    models = [m for m in catalog_models() if args.filter.lower() in m.name.lower()]
    if not models:
        raise UserError(f"no catalog model matches {args.filter!r}; `slaprof models` lists them all")
    if args.json:
        for m in models:
            print(json.dumps(m.summary()))
        return 0
    rows = [
        (
            m.name,
            f"MoE {m.num_experts}x top-{m.experts_per_token}" if m.is_moe else "dense",
            "MLA" if m.is_mla else f"GQA {m.num_attention_heads}/{m.num_kv_heads}",
            f"{m.total_params / 1e9:.1f}B" + (f" ({m.active_params / 1e9:.1f}B active)" if m.is_moe else ""),
            f"{m.weight_dtype}/{m.kv_dtype}",
            f"{m.max_context_length:,}",
        )
        for m in models
    ]
    header = ("model", "kind", "attention", "parameters", "weights/KV", "context")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
