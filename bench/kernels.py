"""Kernel-level measurements behind the built-in model's physical constants, on one GPU.

The calibrated constants (steps/perf/calibration.json) are fitted to whole-deployment TTFT and
TPOT. This script times the kernels underneath on a real GPU and writes them as JSON, which
`bench/calibrate.py --kernels FILE` reads: it prints each kernel next to what the model assumes
for that GPU, so a constant that absorbed something unphysical stands out, and pins the fit's
kernel efficiencies to the measured ones.
  - HBM bandwidth (a device copy)                          -> mem_eff
  - bf16 GEMMs of Llama-3.1-8B's MLP at 16..8192 tokens    -> gemm_eff
  - FP8 GEMM (torch._scaled_mm, where the GPU has FP8)
  - causal prefill attention (SDPA, GQA 32/8, d=128)       -> attn_eff
  - decode attention over a KV cache
  - one eager Llama-3.1-8B layer, prefill and decode       -> implied activation passes
The eager layer runs unfused PyTorch ops, so its elementwise cost is an upper bound on what a
serving engine's fused kernels pay.

Standalone on purpose: the Python standard library and PyTorch with CUDA, nothing of slaprof, so
it runs in any PyTorch container (the README's cluster recipe mounts this file into one). Random
weights, nothing downloaded: 18 kernels, 13 runs each (the largest, an eager 8,192-token layer,
about 10 ms by the model's estimate); it starts no kernel after --budget-s (420 s), so it ends
within the 8 minutes of one GPU it is sized for.

    python bench/kernels.py --out kernels.json    # the JSON for bench/calibrate.py, a table on stderr
    python bench/kernels.py --out -               # the JSON as one line on stdout (a pod's log)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

FORMAT = "slaprof-kernels/1"
# Llama-3.1-8B's shapes (its config.json: hidden 4096, intermediate 14336, 32 query and 8 KV heads
# of 128); the calibration reads the same model's config to put the layer rows next to the model.
LLAMA_8B = {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "head_dim": 128}
BF16_BYTES = 2
GEMM_TOKENS = (16, 128, 1024, 4096, 8192)
FP8_GEMM_TOKENS = (4096, 8192)
PREFILL_ATTENTION = (1024, 4096, 8192)
DECODE_ATTENTION = ((16, 4096), (64, 4096), (128, 2048))
LAYER_PREFILL = (2048, 8192)
LAYER_DECODE = ((32, 2048), (128, 2048))
HBM_COPY_BYTES = 1 << 30


def fail(message: str) -> None:
    """A one-line error and exit status 2: the environment cannot run the check."""
    print(f"kernels: {message}", file=sys.stderr)
    raise SystemExit(2)


def kernel_row(kind: str, params: dict[str, int], ms: float) -> dict[str, Any]:
    """One measured kernel: its shape, the FLOPs and HBM bytes it must move at least, its time."""
    flops, nbytes = work(kind, params)
    return {"kind": kind, "params": params, "flops": flops, "bytes": nbytes, "ms": round(ms, 6)}


def work(kind: str, p: dict[str, int]) -> tuple[float, float]:
    """(FLOPs, bytes) of a kernel: what a roofline charges it."""
    hq, hkv, d = LLAMA_8B["heads"], LLAMA_8B["kv_heads"], LLAMA_8B["head_dim"]
    if kind == "hbm_copy":
        return 0.0, 2.0 * p["bytes"]  # a copy reads and writes every byte
    if kind in ("gemm_bf16", "gemm_fp8"):
        m, k, n = p["m"], p["k"], p["n"]
        size = BF16_BYTES if kind == "gemm_bf16" else 1
        return 2.0 * m * k * n, float(size * (k * n + m * k) + BF16_BYTES * m * n)
    if kind == "attn_prefill":  # QK^T and PV, halved by the causal mask
        s = p["seq"]
        return 2.0 * hq * 2 * d * s * s / 2, float(BF16_BYTES * s * d * (2 * hq + 2 * hkv))
    if kind == "attn_decode":  # K and V read once
        b, ctx = p["batch"], p["context"]
        return 2.0 * b * hq * 2 * d * ctx, float(BF16_BYTES * 2 * b * hkv * ctx * d)
    if kind in ("layer_prefill", "layer_decode"):
        return 0.0, 0.0  # a whole layer: the calibration compares it with the model's per-layer step
    raise ValueError(f"unknown kernel kind {kind!r}")


def build_report(device: dict[str, Any], software: dict[str, str], rows: list[dict[str, Any]], **run: Any) -> dict:
    """The JSON document bench/calibrate.py reads (format slaprof-kernels/1)."""
    return {
        "format": FORMAT,
        "device": device,
        "software": software,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),  # Python 3.10 has no datetime.UTC
        "shapes": LLAMA_8B,
        **run,
        "kernels": rows,
    }


class Session:
    """Times kernels on the GPU within a wall-clock budget; later checks are skipped past it."""

    def __init__(self, torch, budget_s: float, iters: int, warmup: int) -> None:
        self.torch, self.budget_s, self.iters, self.warmup = torch, budget_s, iters, warmup
        self.start = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[str] = []

    def over_budget(self, what: str) -> bool:
        if time.monotonic() - self.start <= self.budget_s:
            return False
        self.skipped.append(f"{what}: past the {self.budget_s:g} s budget")
        return True

    def time_ms(self, fn) -> float:
        """Median of CUDA-event timings of fn()."""
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def measure(self, kind: str, params: dict[str, int], fn) -> None:
        if not self.over_budget(f"{kind} {params}"):
            row = kernel_row(kind, params, self.time_ms(fn))
            self.rows.append(row)
            print(f"{kind:14s} {json.dumps(params):44s} {row['ms']:10.3f} ms", file=sys.stderr, flush=True)


def run_kernels(s: Session) -> None:
    torch = s.torch
    import torch.nn.functional as F

    dev, bf = "cuda", torch.bfloat16
    src = torch.empty(HBM_COPY_BYTES, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    s.measure("hbm_copy", {"bytes": HBM_COPY_BYTES}, lambda: dst.copy_(src))
    del src, dst

    k, n = LLAMA_8B["hidden"], 2 * LLAMA_8B["intermediate"]  # the gate/up projection
    w = torch.randn(n, k, dtype=bf, device=dev) / 64
    for m in GEMM_TOKENS:
        x = torch.randn(m, k, dtype=bf, device=dev)
        s.measure("gemm_bf16", {"m": m, "k": k, "n": n}, lambda: F.linear(x, w))
    if torch.cuda.get_device_capability(0) >= (8, 9) and hasattr(torch, "_scaled_mm"):
        w8, one = w.to(torch.float8_e4m3fn), torch.ones((), device=dev)
        for m in FP8_GEMM_TOKENS:
            x8 = torch.randn(m, k, dtype=bf, device=dev).to(torch.float8_e4m3fn)
            try:
                s.measure(
                    "gemm_fp8",
                    {"m": m, "k": k, "n": n},
                    lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=bf),
                )
            except (RuntimeError, TypeError, NotImplementedError) as exc:
                s.skipped.append(f"gemm_fp8: {str(exc).splitlines()[0][:200]}")
                break
    del w

    hq, hkv, d = LLAMA_8B["heads"], LLAMA_8B["kv_heads"], LLAMA_8B["head_dim"]
    for seq in PREFILL_ATTENTION:
        q = torch.randn(1, hq, seq, d, dtype=bf, device=dev)
        kv = torch.randn(1, hkv, seq, d, dtype=bf, device=dev)
        s.measure(
            "attn_prefill",
            {"seq": seq},
            lambda: F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True),
        )
    for batch, ctx in DECODE_ATTENTION:
        q = torch.randn(batch, hq, 1, d, dtype=bf, device=dev)
        kc = torch.randn(batch, hkv, ctx, d, dtype=bf, device=dev)
        s.measure(
            "attn_decode",
            {"batch": batch, "context": ctx},
            lambda: F.scaled_dot_product_attention(q, kc, kc, enable_gqa=True),
        )
        del kc
    run_layers(s, F)


def run_layers(s: Session, F) -> None:
    """One eager Llama-3.1-8B layer (RMSNorm, QKV, rotary, GQA attention, O, RMSNorm, SwiGLU MLP)."""
    torch = s.torch
    dev, bf = "cuda", torch.bfloat16
    h, inter = LLAMA_8B["hidden"], LLAMA_8B["intermediate"]
    hq, hkv, d = LLAMA_8B["heads"], LLAMA_8B["kv_heads"], LLAMA_8B["head_dim"]
    wqkv = torch.randn((hq + 2 * hkv) * d, h, dtype=bf, device=dev) / 64
    wo = torch.randn(h, hq * d, dtype=bf, device=dev) / 64
    wgu = torch.randn(2 * inter, h, dtype=bf, device=dev) / 64
    wd = torch.randn(h, inter, dtype=bf, device=dev) / 64
    norm1, norm2 = torch.ones(h, dtype=bf, device=dev), torch.ones(h, dtype=bf, device=dev)
    angles = torch.arange(8192, device=dev)[:, None] * torch.rand(d // 2, device=dev)[None, :]
    cos, sin = angles.cos().to(bf), angles.sin().to(bf)

    def rms(x, wt):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * wt

    def rotary(t, seq):
        a, b = t[..., : d // 2], t[..., d // 2 :]
        return torch.cat((a * cos[:seq] - b * sin[:seq], b * cos[:seq] + a * sin[:seq]), dim=-1)

    def layer(x, batch, seq, kcache=None):
        qkv = F.linear(rms(x, norm1), wqkv)
        q, kk, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        q = rotary(q.view(batch, seq, hq, d).transpose(1, 2), seq)
        kk = rotary(kk.view(batch, seq, hkv, d).transpose(1, 2), seq)
        v = v.view(batch, seq, hkv, d).transpose(1, 2)
        if kcache is None:
            o = F.scaled_dot_product_attention(q, kk, v, is_causal=True, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q, kcache, kcache, enable_gqa=True)
        x = x + F.linear(o.transpose(1, 2).reshape(batch * seq, hq * d), wo).view_as(x)
        g, u = F.linear(rms(x, norm2), wgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(g) * u, wd)

    for seq in LAYER_PREFILL:
        x = torch.randn(1, seq, h, dtype=bf, device=dev)
        s.measure("layer_prefill", {"seq": seq}, lambda: layer(x, 1, seq))
    for batch, ctx in LAYER_DECODE:
        x = torch.randn(batch, 1, h, dtype=bf, device=dev)
        kc = torch.randn(batch, hkv, ctx, d, dtype=bf, device=dev)
        s.measure("layer_decode", {"batch": batch, "context": ctx}, lambda: layer(x, batch, 1, kc))
        del kc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write, or - for one line on stdout")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting kernels after this many seconds")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per kernel (the median is kept)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ModuleNotFoundError:
        fail("needs PyTorch with CUDA (a PyTorch container, or pip install torch); it is not a slaprof dependency")
    if not torch.cuda.is_available():
        fail(f"no CUDA GPU visible to PyTorch {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    props = torch.cuda.get_device_properties(0)
    device = {
        "name": torch.cuda.get_device_name(0),
        "capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
    }
    software = {"torch": torch.__version__, "cuda": str(torch.version.cuda), "python": platform.python_version()}
    print(f"kernels on {device['name']} (torch {software['torch']}, CUDA {software['cuda']})", file=sys.stderr)
    session = Session(torch, args.budget_s, args.iters, args.warmup)
    run_kernels(session)
    report = build_report(
        device,
        software,
        session.rows,
        iters=args.iters,
        warmup=args.warmup,
        elapsed_s=round(time.monotonic() - session.start, 1),
        complete=not any("budget" in s for s in session.skipped),
        skipped=session.skipped,
    )
    if args.out == "-":
        print(json.dumps(report, separators=(",", ":")), flush=True)
    else:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}: {len(session.rows)} kernels in {report['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
