"""Kernel measurements of one GPU (`bench/kernels.py`) read against the built-in model's constants.

Input: the JSON `bench/kernels.py` writes (format slaprof-kernels/1: the device, and for every
kernel its shape, the FLOPs and bytes a roofline charges it and its measured time), from a file
or from a pod's log that holds it on one line.
Output: the kernel efficiencies it measures (`mem_eff`, `gemm_eff`, `attn_eff`: what
`bench/calibrate.py --kernels` pins in its fit) and each kernel's measured time next to what the
model assumes, with the activation passes a whole eager layer implies.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slaprof.steps.core.errors import UserError
from slaprof.steps.perf.constants import BackendConstants
from slaprof.steps.perf.mapping import Mapping
from slaprof.steps.perf.roofline import ACT_BYTES, BuiltinEstimator
from slaprof.steps.specs.gpus import GPU_NAMES, GpuSpec, get_gpu
from slaprof.steps.specs.models import ModelInfo

FORMAT = "slaprof-kernels/1"
KernelKind = Literal[
    "hbm_copy", "gemm_bf16", "gemm_fp8", "attn_prefill", "attn_decode", "layer_prefill", "layer_decode"
]
# what bench/calibrate.py may pin: the kernel efficiencies these measurements isolate
MEASURED_CONSTANTS = ("mem_eff", "gemm_eff", "attn_eff")


class Device(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    capability: str = ""
    memory_gib: float = 0.0
    multiprocessors: int = 0


class KernelRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: KernelKind
    params: dict[str, int]
    flops: float = Field(ge=0)
    bytes: float = Field(ge=0)
    ms: float = Field(gt=0)


class KernelReport(BaseModel):
    """What bench/kernels.py writes."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["slaprof-kernels/1"]
    device: Device
    software: dict[str, str] = {}
    measured_at: str
    shapes: dict[str, int]
    iters: int = Field(gt=0)
    warmup: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)
    complete: bool
    skipped: list[str] = []
    note: str = ""
    kernels: list[KernelRow]

    def of(self, kind: str) -> list[KernelRow]:
        return [r for r in self.kernels if r.kind == kind]


class KernelComparison(BaseModel):
    """One kernel: measured against the model's assumption for it."""

    label: str
    measured_ms: float
    model_ms: float
    achieved: str  # what the measurement reached, in the unit that matters for the kernel


def read_kernel_report(path: Path) -> KernelReport:
    """The report in `path`: a JSON file, or a log with the report on one of its lines."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read kernel measurements {path}: {exc.strerror or exc}") from None
    start = text.find('{"format"')
    candidates = [text] + ([text[start:].splitlines()[0]] if start >= 0 else [])
    for doc in candidates:
        try:
            data = json.loads(doc)
        except json.JSONDecodeError:
            continue
        try:
            return KernelReport.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{path} is not a bench/kernels.py report ({FORMAT}): {where}: {err['msg']}") from None
    raise UserError(f"{path} holds no bench/kernels.py report ({FORMAT}): write one with python bench/kernels.py --out")


def catalog_gpu(report: KernelReport) -> GpuSpec:
    """The catalog GPU the report measured; a GPU slaprof does not model is the user's error."""
    for name in GPU_NAMES:
        gpu = get_gpu(name)
        if re.search(gpu.device_pattern, report.device.name):
            return gpu
    raise UserError(f"{report.device.name} (measured in the kernel report) is not a GPU of slaprof's catalog")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def measured_efficiencies(report: KernelReport, gpu: GpuSpec) -> dict[str, float]:
    """mem_eff from the HBM copy; gemm_eff from the bf16 GEMMs past the GPU's ridge point (those a
    roofline calls compute-bound); attn_eff from causal prefill attention. Absent kernels are left out."""
    hbm, bf16 = gpu.hbm_bytes_per_s, gpu.peak_flops("bf16")
    ridge = bf16 / hbm
    found = {
        "mem_eff": _median([r.bytes / (r.ms / 1e3) / hbm for r in report.of("hbm_copy")]),
        "gemm_eff": _median(
            [r.flops / (r.ms / 1e3) / bf16 for r in report.of("gemm_bf16") if r.flops > ridge * r.bytes]
        ),
        "attn_eff": _median([r.flops / (r.ms / 1e3) / bf16 for r in report.of("attn_prefill")]),
    }
    return {name: round(v, 4) for name, v in found.items() if v is not None}


def _one_layer(model: ModelInfo) -> ModelInfo:
    """The model cut to one layer with no LM head, so the estimator times a single layer."""
    return model.model_copy(update={"num_layers": 1, "vocab_size": 1})


def compare(report: KernelReport, gpu: GpuSpec, k: BackendConstants, layer_model: ModelInfo) -> list[KernelComparison]:
    """Every kernel of the report next to the model's time for it under constants `k`. Framework
    costs are not kernels: they are left out of the model side. The eager layers (of `layer_model`,
    the model whose shapes the report names) carry the activation passes they imply."""
    m = layer_model
    shapes = {
        "hidden": m.hidden_size,
        "intermediate": m.intermediate_size,
        "heads": m.num_attention_heads,
        "kv_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
    }
    if report.shapes != shapes:
        raise UserError(f"the kernel report timed shapes {report.shapes}, not {m.name}'s {shapes}")
    kk = k.model_copy(
        update={
            "layer_overhead_us": 0.0,
            "step_overhead_ms": 0.0,
            "prefill_layer_us": 0.0,
            "prefill_moe_layer_us": 0.0,
            "prefill_chunk_tokens": 1 << 20,
            "prefill_chunk_tokens_160g": 1 << 20,
        }
    )
    hbm, bf16, fp8 = gpu.hbm_bytes_per_s, gpu.peak_flops("bf16"), gpu.peak_flops("fp8")
    mem_s = hbm * k.mem_eff
    one = Mapping(attn_tp=1, attn_dp=1, moe_tp=1, moe_ep=1)
    layer = _one_layer(layer_model)
    fitted = BuiltinEstimator(layer, gpu, "vllm", one, kk)
    no_act = BuiltinEstimator(layer, gpu, "vllm", one, kk.model_copy(update={"act_passes": 0.0}))
    one_pass_ms = (layer.hidden_size + layer.intermediate_size) * ACT_BYTES / mem_s * 1e3
    out: list[KernelComparison] = []
    for r in report.kernels:
        p, s = r.params, r.ms / 1e3
        label = f"{r.kind} " + " ".join(f"{name}={v}" for name, v in p.items())
        if r.kind in ("hbm_copy", "attn_decode"):
            model_ms, achieved = r.bytes / mem_s * 1e3, f"mem_eff {r.bytes / s / hbm:.2f}"
        elif r.kind in ("gemm_bf16", "gemm_fp8"):
            peak = bf16 if r.kind == "gemm_bf16" else fp8
            model_ms = max(r.flops / (peak * k.gemm_eff), r.bytes / mem_s) * 1e3
            achieved = f"{r.flops / s / peak:.2f} of peak"
        elif r.kind == "attn_prefill":
            model_ms, achieved = r.flops / (bf16 * k.attn_eff) * 1e3, f"{r.flops / s / bf16:.2f} of bf16 peak"
        elif r.kind == "layer_prefill":
            seq = p["seq"]
            model_ms = float(fitted.prefill_work_s(seq, 1)) * 1e3
            passes = (r.ms - float(no_act.prefill_work_s(seq, 1)) * 1e3) / (seq * one_pass_ms)
            achieved = f"implies {passes:.1f} activation passes (fitted {k.act_passes:g})"
        else:  # layer_decode
            batch, ctx = p["batch"], p["context"]
            model_ms = float(fitted.decode_itl_ms(batch, ctx))
            passes = (r.ms - float(no_act.decode_itl_ms(batch, ctx))) / (batch * one_pass_ms)
            achieved = f"implies {passes:.1f} activation passes (fitted {k.act_passes:g})"
        out.append(KernelComparison(label=label, measured_ms=r.ms, model_ms=model_ms, achieved=achieved))
    return out
