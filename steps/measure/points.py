"""Surface points from AIPerf's per-request records (online and simulated measurements alike).

Times are wall milliseconds divided by `scale` (a simulated engine's clock runs `scale` times
slower than the modelled one; 1 for real engines).
"""

from __future__ import annotations

from slaprof.steps.core.results import DecodePoint, PrefillPoint
from slaprof.steps.measure.loadgen import RequestRecord, steady_itl_ms


def prefill_point(isl: int, ttfts_ms: list[float], scale: float, attn_dp: int, num_gpus: int) -> PrefillPoint:
    """TTFT of `isl`-token prompts (mean over repeats); throughput/GPU = ISL x ranks / TTFT / GPUs."""
    ttft = sum(ttfts_ms) / len(ttfts_ms) / scale
    thpt = isl * attn_dp / ttft * 1000.0 / num_gpus
    return PrefillPoint(isl=isl, ttft_ms=round(ttft, 4), thpt_per_gpu=round(thpt, 3))


def decode_point(
    isl: int,
    context: int,
    concurrency: int,
    records: list[RequestRecord],
    scale: float,
    num_gpus: int,
    max_kv: int,
    run_throughput: float | None = None,
    simulated: bool = False,
) -> DecodePoint:
    """ITL over the steady window (every request decoding; see `steady_itl_ms`, robust for a simulated
    engine, whose steps there all last the same), throughput/GPU = concurrency / ITL / GPUs.
    A run too short for a steady window falls back to whole-request ITL and the run's output
    throughput (`run_throughput`, tokens/s; else concurrency / ITL).
    Raises ValueError when no record has an ITL."""
    itls = [r.itl_ms for r in records if r.itl_ms]
    if not itls:
        raise ValueError("no inter-token latency")
    steady = steady_itl_ms(records, robust=simulated)
    if steady is not None:
        itl = steady / scale
        thpt = concurrency * 1000.0 / itl / num_gpus
    else:
        itl = sum(itls) / len(itls) / scale
        thpt = (
            run_throughput * scale / num_gpus if run_throughput is not None else concurrency * 1000.0 / itl / num_gpus
        )
    return DecodePoint(
        isl=isl,
        context=context,
        concurrency=concurrency,
        kv_usage=round(concurrency * context / max_kv, 6),
        itl_ms=round(itl, 4),
        thpt_per_gpu=round(thpt, 3),
    )
