"""Kernel-level check of the built-in model's physical constants on the local GPU.

The calibrated constants (steps/perf/calibration.json) are fitted to whole-deployment TTFT and
TPOT. This script measures the kernels underneath on a real GPU and prints each next to what the
model assumes for that GPU, so a constant that absorbed something unphysical stands out:
  - HBM bandwidth (a device copy)                          vs  mem_eff x datasheet bandwidth
  - bf16 GEMMs of Llama-3.1-8B's MLP at 16..8192 tokens    vs  the linear-layer roofline
  - FP8 GEMM (torch._scaled_mm, where the GPU has FP8)      vs  gemm_eff x FP8 peak
  - causal prefill attention (SDPA, GQA 32/8, d=128)       vs  attn_eff x bf16 peak
  - decode attention over a KV cache                        vs  mem_eff x bandwidth
  - one eager Llama-3.1-8B layer, prefill and decode        vs  the model's per-layer step time
The eager layer runs unfused PyTorch ops, so its elementwise cost is an upper bound on what a
serving engine's fused kernels pay; the "implied activation passes" column compares it with the
fitted act_passes.

Needs a CUDA GPU and PyTorch (neither is a slaprof dependency); random weights, nothing loaded.

    python bench/kernels.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.gpus import GpuSpec, get_gpu  # noqa: E402
from steps.models import ModelInfo, load_model_info_from_dir  # noqa: E402
from steps.perf.constants import constants_for  # noqa: E402
from steps.perf.mapping import Mapping  # noqa: E402
from steps.perf.roofline import ACT_BYTES, BuiltinEstimator  # noqa: E402

LLAMA_8B = ROOT / "tests" / "fixtures" / "models" / "Llama-3.1-8B"
GPU_NAMES = (
    ("H200", "h200_sxm"),
    ("H100", "h100_sxm"),
    ("B300", "b300_sxm"),
    ("B200", "b200_sxm"),
    ("GB200", "gb200"),
    ("GB300", "gb300"),
)


def detect_gpu(torch) -> GpuSpec:
    name = torch.cuda.get_device_name(0)
    for marker, key in GPU_NAMES:
        if marker in name:
            return get_gpu(key)
    sys.exit(f"kernels: {name} is not in slaprof's GPU catalog")


def timed_ms(torch, fn, iters: int = 10, warmup: int = 3) -> float:
    """Median of `iters` CUDA-event timings of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def row(label: str, measured_ms: float, model_ms: float, extra: str = "") -> None:
    print(f"{label:44s} {measured_ms:9.3f} {model_ms:9.3f} {model_ms / measured_ms:6.2f}  {extra}")


def one_layer_model(model: ModelInfo) -> ModelInfo:
    """The model cut to one layer with no LM head, so the estimator times a single layer."""
    return model.model_copy(update={"num_layers": 1, "vocab_size": 1})


def main() -> int:
    try:
        import torch
        import torch.nn.functional as F
    except ModuleNotFoundError:
        sys.exit("kernels: needs PyTorch with CUDA (pip install torch); it is not a slaprof dependency")
    if not torch.cuda.is_available():
        sys.exit("kernels: no CUDA GPU visible")
    gpu = detect_gpu(torch)
    k = constants_for("vllm")
    # framework costs are not kernels: leave them out of the model side
    kernel_k = k.model_copy(
        update={
            "layer_overhead_us": 0.0,
            "step_overhead_ms": 0.0,
            "prefill_layer_us": 0.0,
            "prefill_moe_layer_us": 0.0,
            "prefill_chunk_tokens": 1 << 20,
        }
    )
    ideal_k = kernel_k.model_copy(update={"gemm_eff": 1.0, "attn_eff": 1.0, "mem_eff": 1.0, "act_passes": 0.0})
    hbm, bf16 = gpu.hbm_bytes_per_s, gpu.peak_flops("bf16")
    print(f"GPU {torch.cuda.get_device_name(0)} -> catalog {gpu.name}; torch {torch.__version__}")
    print(
        f"calibrated (vllm): gemm_eff {k.gemm_eff}, attn_eff {k.attn_eff}, mem_eff {k.mem_eff}, "
        f"act_passes {k.act_passes}\n"
    )
    print(f"{'kernel':44s} {'meas ms':>9s} {'model ms':>9s} {'model/meas':>6s}  measured efficiency")
    dev, bf = "cuda", torch.bfloat16

    # HBM: a copy reads and writes every byte
    n = 1 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)
    ms = timed_ms(torch, lambda: dst.copy_(src))
    row("HBM copy 1 GiB (read + write)", ms, 2 * n / (hbm * k.mem_eff) * 1e3, f"mem_eff {2 * n / (ms / 1e3) / hbm:.2f}")
    del src, dst

    # linear layers: Llama-3.1-8B gate/up projection (4096 -> 2 x 14336)
    K, N = 4096, 2 * 14336
    w = torch.randn(N, K, dtype=bf, device=dev) / 64
    for m in (16, 128, 1024, 4096, 8192):
        x = torch.randn(m, K, dtype=bf, device=dev)
        ms = timed_ms(torch, lambda: F.linear(x, w))
        flops, nbytes = 2.0 * m * K * N, 2.0 * (K * N + m * K + m * N)
        model_ms = max(flops / (bf16 * k.gemm_eff), nbytes / (hbm * k.mem_eff)) * 1e3
        row(f"bf16 GEMM {m}x{K} @ {K}x{N}", ms, model_ms, f"{flops / (ms / 1e3) / bf16:.2f} of bf16 peak")
    if gpu.fp8_tflops > gpu.bf16_tflops and hasattr(torch, "_scaled_mm"):
        w8 = w.to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev)
        for m in (4096, 8192):
            x8 = torch.randn(m, K, dtype=bf, device=dev).to(torch.float8_e4m3fn)
            try:
                ms = timed_ms(torch, lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=bf))
            except (RuntimeError, TypeError, NotImplementedError) as exc:
                print(f"fp8 GEMM skipped: {exc}".splitlines()[0])
                break
            flops = 2.0 * m * K * N
            fp8 = gpu.peak_flops("fp8")
            row(
                f"fp8 GEMM {m}x{K} @ {K}x{N}",
                ms,
                flops / (fp8 * k.gemm_eff) * 1e3,
                f"{flops / (ms / 1e3) / fp8:.2f} of fp8 peak",
            )
    del w

    # attention: 32 query heads, 8 KV heads, head dim 128
    hq, hkv, d = 32, 8, 128
    for s in (1024, 4096, 8192):
        q = torch.randn(1, hq, s, d, dtype=bf, device=dev)
        kv = torch.randn(1, hkv, s, d, dtype=bf, device=dev)
        ms = timed_ms(torch, lambda: F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True))
        flops = 2.0 * hq * (d + d) * s * s / 2  # QK^T and PV, halved by the causal mask
        row(
            f"prefill attention causal S={s}",
            ms,
            flops / (bf16 * k.attn_eff) * 1e3,
            f"{flops / (ms / 1e3) / bf16:.2f} of bf16 peak",
        )
    for batch, ctx in ((16, 4096), (64, 4096), (128, 2048)):
        q = torch.randn(batch, hq, 1, d, dtype=bf, device=dev)
        kc = torch.randn(batch, hkv, ctx, d, dtype=bf, device=dev)
        ms = timed_ms(torch, lambda: F.scaled_dot_product_attention(q, kc, kc, enable_gqa=True))
        nbytes = 2.0 * batch * hkv * ctx * d * 2  # K and V read once
        row(
            f"decode attention B={batch} ctx={ctx}",
            ms,
            nbytes / (hbm * k.mem_eff) * 1e3,
            f"mem_eff {nbytes / (ms / 1e3) / hbm:.2f}",
        )
        del kc

    layer_checks(torch, F, gpu, kernel_k, ideal_k, k.act_passes)
    return 0


def layer_checks(torch, F, gpu: GpuSpec, kernel_k, ideal_k, fitted_passes: float) -> None:
    """One eager Llama-3.1-8B layer (RMSNorm, QKV, rotary, GQA attention, O, RMSNorm, SwiGLU MLP)."""
    model = one_layer_model(load_model_info_from_dir(LLAMA_8B, "meta-llama/Llama-3.1-8B"))
    dev, bf = "cuda", torch.bfloat16
    h, inter, hq, hkv, d = (
        model.hidden_size,
        model.intermediate_size,
        model.num_attention_heads,
        model.num_kv_heads,
        model.head_dim,
    )
    wqkv = torch.randn((hq + 2 * hkv) * d, h, dtype=bf, device=dev) / 64
    wo = torch.randn(h, hq * d, dtype=bf, device=dev) / 64
    wgu = torch.randn(2 * inter, h, dtype=bf, device=dev) / 64
    wd = torch.randn(h, inter, dtype=bf, device=dev) / 64
    norm1, norm2 = torch.ones(h, dtype=bf, device=dev), torch.ones(h, dtype=bf, device=dev)

    def rms(x, wt):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * wt

    def rotary(t, cos, sin):
        a, b = t[..., : d // 2], t[..., d // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    def layer(x, batch, seq, kcache=None, vcache=None):
        y = rms(x, norm1)
        qkv = F.linear(y, wqkv)
        q, kk, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        q = q.view(batch, seq, hq, d).transpose(1, 2)
        kk = kk.view(batch, seq, hkv, d).transpose(1, 2)
        v = v.view(batch, seq, hkv, d).transpose(1, 2)
        q, kk = rotary(q, cos[:seq], sin[:seq]), rotary(kk, cos[:seq], sin[:seq])
        if kcache is None:
            o = F.scaled_dot_product_attention(q, kk, v, is_causal=True, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q, kcache, vcache, enable_gqa=True)
        x = x + F.linear(o.transpose(1, 2).reshape(batch * seq, hq * d), wo).view_as(x)
        g, u = F.linear(rms(x, norm2), wgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(g) * u, wd)

    angles = torch.arange(8192, device=dev)[:, None] * torch.rand(d // 2, device=dev)[None, :]
    cos, sin = angles.cos().to(bf), angles.sin().to(bf)
    print(f"\none eager Llama-3.1-8B layer (unfused PyTorch) vs the model's per-layer step on {gpu.name}")
    print(
        f"{'step':28s} {'meas ms':>9s} {'model ms':>9s} {'ideal ms':>9s} {'implied act passes':>19s} (fitted {fitted_passes:g})"
    )
    fitted = BuiltinEstimator(model, gpu, "vllm", Mapping(attn_tp=1, attn_dp=1, moe_tp=1, moe_ep=1), kernel_k)
    no_act = BuiltinEstimator(
        model,
        gpu,
        "vllm",
        Mapping(attn_tp=1, attn_dp=1, moe_tp=1, moe_ep=1),
        kernel_k.model_copy(update={"act_passes": 0.0}),
    )
    ideal = BuiltinEstimator(model, gpu, "vllm", Mapping(attn_tp=1, attn_dp=1, moe_tp=1, moe_ep=1), ideal_k)
    one_pass_ms = (
        (model.hidden_size + model.intermediate_size) * ACT_BYTES / (gpu.hbm_bytes_per_s * kernel_k.mem_eff) * 1e3
    )
    for seq in (2048, 8192):
        x = torch.randn(1, seq, h, dtype=bf, device=dev)
        ms = timed_ms(torch, lambda: layer(x, 1, seq))
        model_ms = float(fitted.prefill_work_s(seq, 1)) * 1e3
        passes = (ms - float(no_act.prefill_work_s(seq, 1)) * 1e3) / (seq * one_pass_ms)
        print(
            f"{'prefill ' + str(seq) + ' tokens':28s} {ms:9.3f} {model_ms:9.3f} {float(ideal.prefill_work_s(seq, 1)) * 1e3:9.3f} {passes:19.1f}"
        )
    for batch, ctx in ((32, 2048), (128, 2048)):
        x = torch.randn(batch, 1, h, dtype=bf, device=dev)
        kc = torch.randn(batch, hkv, ctx, d, dtype=bf, device=dev)
        ms = timed_ms(torch, lambda: layer(x, batch, 1, kc, kc))
        model_ms = float(fitted.decode_itl_ms(batch, ctx))
        passes = (ms - float(no_act.decode_itl_ms(batch, ctx))) / (batch * one_pass_ms)
        print(
            f"{f'decode B={batch} ctx={ctx}':28s} {ms:9.3f} {model_ms:9.3f} {float(ideal.decode_itl_ms(batch, ctx)):9.3f} {passes:19.1f}"
        )
        del kc
    print(
        "\nmodel/meas < 1 on a kernel means the model assumes more than the GPU delivers there; "
        "'ideal' is the pure roofline (no row may measure below it)."
    )


if __name__ == "__main__":
    sys.exit(main())
