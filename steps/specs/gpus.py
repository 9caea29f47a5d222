"""GPU catalog: the datasheet numbers the planner and the performance model use.

Names follow AI Configurator's system names so one name works everywhere. FLOP/s are
dense Tensor-Core numbers (NVIDIA headline numbers are usually 2:4-sparse, i.e. 2x).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from slaprof.steps.core.errors import UserError

GIB = 1024**3


class GpuSpec(BaseModel):
    """One GPU type. Bandwidths are per GPU, in bytes/s; NVLink is one direction."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    # what torch.cuda.get_device_name() says of it (the kernel check maps its report here); PCIe and
    # NVL parts have other bandwidths and do not match
    device_pattern: str
    memory_gb: float  # marketed capacity, decimal GB
    usable_memory_gib: float  # what the driver reports as total
    bf16_tflops: float
    fp8_tflops: float  # equals bf16 where the GPU has no FP8 Tensor Cores
    fp4_tflops: float  # equals fp8 where the GPU has no FP4 Tensor Cores
    hbm_gbps: float  # GB/s
    link_gbps: float  # NVLink (or PCIe where no NVLink) GB/s, one direction
    has_nvlink: bool
    source: str

    @property
    def memory_bytes(self) -> float:
        return self.usable_memory_gib * GIB

    def peak_flops(self, dtype: str) -> float:
        """Dense FLOP/s for math in `dtype` (bf16 | fp8 | fp4)."""
        table = {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "fp4": self.fp4_tflops}
        return table[dtype] * 1e12

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_gbps * 1e9

    @property
    def link_bytes_per_s(self) -> float:
        return self.link_gbps * 1e9


_CATALOG: dict[str, GpuSpec] = {
    g.name: g
    for g in [
        GpuSpec(
            name="a100_sxm",
            device_pattern=r"\bA100\b.*\b80GB\b(?!.*PCIe)",
            description="NVIDIA A100 80GB SXM",
            memory_gb=80,
            usable_memory_gib=79.15,
            bf16_tflops=312,
            fp8_tflops=312,
            fp4_tflops=312,
            hbm_gbps=2039,
            link_gbps=300,
            has_nvlink=True,
            source="NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web): 312 TF BF16 dense, "
            "2,039 GB/s, NVLink 3 600 GB/s bidirectional; no FP8 Tensor Cores",
        ),
        GpuSpec(
            name="h100_sxm",
            device_pattern=r"\bH100\b(?!.*\b(PCIe|NVL)\b)",
            description="NVIDIA H100 80GB SXM5",
            memory_gb=80,
            usable_memory_gib=79.19,
            bf16_tflops=989,
            fp8_tflops=1979,
            fp4_tflops=1979,
            hbm_gbps=3350,
            link_gbps=450,
            has_nvlink=True,
            source="nvidia.com H100 product page: 989 TF BF16 / 1,979 TF FP8 dense, 3.35 TB/s HBM3, "
            "NVLink 4 900 GB/s bidirectional",
        ),
        GpuSpec(
            name="h200_sxm",
            device_pattern=r"\bH200\b",
            description="NVIDIA H200 141GB SXM",
            memory_gb=141,
            usable_memory_gib=139.8,
            bf16_tflops=989,
            fp8_tflops=1979,
            fp4_tflops=1979,
            hbm_gbps=4800,
            link_gbps=450,
            has_nvlink=True,
            source="nvidia.com H200 product page: 989 TF BF16 / 1,979 TF FP8 dense, 4.8 TB/s HBM3e, "
            "NVLink 4 900 GB/s bidirectional",
        ),
        GpuSpec(
            name="b200_sxm",
            device_pattern=r"\bB200\b",
            description="NVIDIA B200 180GB (HGX, 1,000 W)",
            memory_gb=180,
            usable_memory_gib=178.4,
            bf16_tflops=2250,
            fp8_tflops=4500,
            fp4_tflops=9000,
            hbm_gbps=7700,
            link_gbps=900,
            has_nvlink=True,
            source="NVIDIA HGX B200 spec table: 4.5 PF BF16 / 9 PF FP8 sparse per GPU (half dense), "
            "FP4 18 PF sparse, 7.7 TB/s HBM3e, NVLink 5 1.8 TB/s bidirectional",
        ),
        GpuSpec(
            name="b300_sxm",
            device_pattern=r"\bB300\b",
            description="NVIDIA B300 288GB (HGX Blackwell Ultra)",
            memory_gb=288,
            usable_memory_gib=268.0,
            bf16_tflops=2250,
            fp8_tflops=4500,
            fp4_tflops=13500,
            hbm_gbps=8000,
            link_gbps=900,
            has_nvlink=True,
            source="NVIDIA HGX B300 spec table: 108 PF dense FP4 and 72 PF FP8 sparse per 8 GPUs, "
            "2.3 TB HBM3e per 8 GPUs, 8 TB/s per GPU, NVLink 5 1.8 TB/s bidirectional",
        ),
        GpuSpec(
            name="gb200",
            device_pattern=r"\bGB200\b",
            description="NVIDIA GB200 NVL72 (per Blackwell GPU, 1,200 W)",
            memory_gb=186,
            usable_memory_gib=184.0,
            bf16_tflops=2500,
            fp8_tflops=5000,
            fp4_tflops=10000,
            hbm_gbps=8000,
            link_gbps=900,
            has_nvlink=True,
            source="NVIDIA GB200 NVL72 spec: per GPU 2.5 PF BF16 / 5 PF FP8 / 10 PF FP4 dense, 186 GB HBM3e, "
            "8 TB/s, NVLink 5 1.8 TB/s bidirectional",
        ),
        GpuSpec(
            name="gb300",
            device_pattern=r"\bGB300\b",
            description="NVIDIA GB300 NVL72 (per Blackwell Ultra GPU)",
            memory_gb=288,
            usable_memory_gib=275.0,
            bf16_tflops=2500,
            fp8_tflops=5000,
            fp4_tflops=15000,
            hbm_gbps=8000,
            link_gbps=900,
            has_nvlink=True,
            source="NVIDIA GB300 NVL72 spec: 1,080 PF dense FP4 per 72 GPUs, 360 PF FP8/FP6 sparse per 72, "
            "up to 288 GB HBM3e and 8 TB/s per GPU, NVLink 5 1.8 TB/s bidirectional",
        ),
        GpuSpec(
            name="l40s",
            device_pattern=r"\bL40S\b",
            description="NVIDIA L40S 48GB (PCIe)",
            memory_gb=48,
            usable_memory_gib=44.4,
            bf16_tflops=362,
            fp8_tflops=733,
            fp4_tflops=733,
            hbm_gbps=864,
            link_gbps=32,
            has_nvlink=False,
            source="NVIDIA L40S datasheet: 362 TF BF16 / 733 TF FP8 dense (733/1,466 sparse), 48 GB GDDR6 "
            "864 GB/s, PCIe Gen4 x16 64 GB/s bidirectional, no NVLink",
        ),
    ]
}

GPU_NAMES: tuple[str, ...] = tuple(_CATALOG)


def get_gpu(name: str) -> GpuSpec:
    try:
        return _CATALOG[name]
    except KeyError:
        raise UserError(f"unknown GPU {name!r}; choose one of: {', '.join(GPU_NAMES)}") from None
