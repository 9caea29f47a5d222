"""Measured reference rows for calibrating and checking the built-in model (bench time only).

Input: AI Configurator's `silicon_sample.csv` (measured TTFT/TPOT of real deployments) and the
HF config.json files AI Configurator ships for its models (optional extra `aic`).
Output: SiliconCase rows, each with a ModelInfo at the row's precision, its GPU, backend and
parallel mapping, or a reason why the row cannot be evaluated.

Nothing in the product's runtime path imports this module; `bench/calibrate.py`,
`bench/accuracy.py` and the tests do.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from slaprof.steps.core.errors import UserError
from slaprof.steps.perf.constants import BackendConstants, constants_for
from slaprof.steps.perf.mapping import Mapping
from slaprof.steps.perf.memory import kv_bytes_per_token_per_gpu
from slaprof.steps.perf.roofline import BuiltinEstimator, compute_dtype, disagg_ttft_ms, kv_transfer_ms
from slaprof.steps.specs.gpus import GPU_NAMES, GpuSpec, get_gpu
from slaprof.steps.specs.models import ModelInfo, model_info_from_config

CALIBRATION_SYSTEMS: tuple[str, ...] = ("h100_sxm", "h200_sxm")
GPUS_PER_NODE = {"gb200": 72, "gb300": 72}  # NVL72 racks; HGX systems have 8 GPUs per NVLink domain
_PRECISIONS = {"bf16": "bf16", "fp8": "fp8", "fp4": "fp4"}
QUANTISED_KV_PRECISIONS = ("fp8", "fp4")


@dataclass(frozen=True)
class Deployment:
    """One engine's mapping, its batch per engine, and how many engines serve."""

    mapping: Mapping
    batch: int  # concurrent requests per engine
    workers: int = 1


@dataclass
class SiliconCase:
    """One measured row: what ran (model at its precision, GPU, backend, mapping, load) and TTFT/TPOT."""

    row_id: str
    system: str
    backend: str
    backend_version: str
    model_path: str
    precision: str
    mode: str  # agg | disagg
    isl: int
    osl: int
    concurrency: int
    ttft_ms: float
    tpot_ms: float
    model: ModelInfo | None = None
    agg: Deployment | None = None
    prefill: Deployment | None = None
    decode: Deployment | None = None
    skip: str = ""  # why the row cannot be evaluated; empty when it can

    @property
    def gpu(self) -> GpuSpec:
        return get_gpu(self.system)

    @property
    def calibration(self) -> bool:
        return self.system in CALIBRATION_SYSTEMS


def _aic_root():
    try:
        return resources.files("aiconfigurator_core")
    except ModuleNotFoundError:
        raise UserError(
            "AI Configurator is not installed; its measured rows come with it: pip install 'slaprof[aic]'"
        ) from None


def silicon_csv_path() -> Path:
    return Path(str(_aic_root() / "systems" / "silicon_sample.csv"))


def _norm(name: str) -> str:
    name = name.lower().split("/")[-1]
    for suffix in ("-instruct", "-nvfp4", "-fp8"):
        name = name.replace(suffix, "")
    return re.sub(r"^meta-", "", name)


@lru_cache(maxsize=1)
def _config_index() -> dict[str, Path]:
    """Normalised model name -> shipped config.json (plain checkpoints preferred over quantised copies)."""
    folder = Path(str(_aic_root() / "model_configs"))
    index: dict[str, Path] = {}
    for path in sorted(folder.glob("*_config.json")):
        if path.name.endswith("_hf_quant_config.json"):
            continue
        hf_id = path.name.removesuffix("_config.json").replace("--", "/", 1)
        key = _norm(hf_id)
        quantised = any(s in hf_id.lower() for s in ("fp8", "nvfp4"))
        if key not in index or not quantised:
            index[key] = path
    return index


def aic_model_id(model_path: str) -> str | None:
    """The Hugging Face id AI Configurator ships a config for (offline), e.g. meta-llama/Meta-Llama-3.1-70B."""
    path = _config_index().get(_norm(model_path))
    return path.name.removesuffix("_config.json").replace("--", "/", 1) if path else None


@cache
def model_for(model_path: str) -> tuple[ModelInfo | None, str]:
    """ModelInfo from the config AI Configurator ships for `model_path`, or (None, why not)."""
    path = _config_index().get(_norm(model_path))
    if path is None:
        return None, "no config.json shipped for this model"
    cfg = json.loads(path.read_text())
    text = cfg.get("text_config", cfg)
    if "linear_attention" in (text.get("layer_types") or []):
        return None, "hybrid linear-attention model (not modelled)"
    return model_info_from_config(cfg, model_path, source=str(path)), ""


def _int(value: str) -> int:
    return int(float(value)) if value not in ("", None) else 0


def _mapping(row: dict[str, str], prefix: str = "") -> Mapping | None:
    # an empty or zero attention-DP / MoE size means "not used" (1)
    tp, dp = _int(row[f"{prefix}tp_size"]), _int(row[f"{prefix}attention_dp_size"]) or 1
    mtp, ep = _int(row[f"{prefix}moe_tp_size"]), _int(row[f"{prefix}moe_ep_size"])
    pp = _int(row[f"{prefix}pp_size"]) or 1
    if tp <= 0 or dp <= 0 or pp != 1:
        return None
    return Mapping(attn_tp=tp, attn_dp=dp, moe_tp=mtp or 1, moe_ep=ep or 1)


def _consistent(model: ModelInfo, m: Mapping) -> bool:
    """Experts must be spread over exactly the engine's GPUs (dense models ignore the MoE sizes)."""
    return not model.is_moe or m.moe_tp * m.moe_ep == m.num_gpus


def _case(row: dict[str, str]) -> SiliconCase:
    conc = re.search(r"silicon_concurrency=(\d+)", row["silicon_data_source"])
    case = SiliconCase(
        row_id=row["id"],
        system=row["system"],
        backend=row["backend"],
        backend_version=row["backend_version"],
        model_path=row["model_path"],
        precision=row["precision"] or "",
        mode=row["mode"],
        isl=_int(row["isl"]),
        osl=_int(row["osl"]),
        concurrency=int(conc.group(1)) if conc else 0,
        ttft_ms=float(row["silicon_ttft_ms"] or 0),
        tpot_ms=float(row["silicon_tpot_ms"] or 0),
    )
    if case.system not in GPU_NAMES:
        case.skip = "system not in the GPU catalog"
        return case
    if case.ttft_ms <= 0 or case.tpot_ms <= 0:
        case.skip = "no measurement"
        return case
    model, why = model_for(case.model_path)
    if model is None:
        case.skip = why
        return case
    if not case.precision and not row["gemm_quant_mode"]:
        case.precision = model.weight_dtype  # no quantization given: the checkpoint as declared
    if case.precision not in _PRECISIONS:
        case.skip = f"precision {case.precision} not modelled"
        return case
    # quantised deployments store the KV cache in FP8 (AI Configurator's fp8 and nvfp4 profiles do;
    # the CSV does not record it), so their engines hold twice the tokens of a bf16 cache
    kv_dtype = "fp8" if case.precision in QUANTISED_KV_PRECISIONS else model.kv_dtype
    case.model = model.model_copy(update={"weight_dtype": _PRECISIONS[case.precision], "kv_dtype": kv_dtype})
    per_domain = GPUS_PER_NODE.get(case.system, 8)
    if case.mode == "agg":
        m = _mapping(row)
        if m is None:
            case.skip = "mapping missing or pipeline-parallel"
            return case
        if not case.concurrency:
            case.skip = "load not recorded (no silicon_concurrency)"
            return case
        case.agg = Deployment(m, case.concurrency)  # batch_size is per attention-DP rank; the load is the total
        if m.num_gpus > per_domain:
            case.skip = f"engine spans {m.num_gpus} GPUs, more than one NVLink domain ({per_domain})"
    else:
        p, d = _mapping(row, "prefill_"), _mapping(row, "decode_")
        if not (_int(row["prefill_batch_size"]) and _int(row["decode_batch_size"]) and _int(row["decode_num_workers"])):
            case.skip = "disaggregated row without batch sizes and worker counts"
            return case
        if p is None or d is None:
            case.skip = "mapping missing or pipeline-parallel"
            return case
        case.prefill = Deployment(p, _int(row["prefill_batch_size"]) * p.attn_dp, _int(row["prefill_num_workers"]) or 1)
        case.decode = Deployment(d, _int(row["decode_batch_size"]) * d.attn_dp, _int(row["decode_num_workers"]) or 1)
        case.concurrency = case.concurrency or case.decode.batch * case.decode.workers
        if max(p.num_gpus, d.num_gpus) > per_domain:
            case.skip = "engine spans more than one NVLink domain"
    deployments = [d for d in (case.agg, case.prefill, case.decode) if d is not None]
    if not case.skip and not all(_consistent(case.model, d.mapping) for d in deployments):
        case.skip = "MoE TP x EP differs from attention TP x DP (inconsistent row)"
    if not case.skip and any(case.model.num_attention_heads % d.mapping.attn_tp for d in deployments):
        case.skip = "attention TP does not divide the model's heads (mislabelled row)"
    if not case.skip and implied_prefill_utilisation(case) > 1.0:
        case.skip = "measured load needs more than the GPUs' peak FLOP/s (inconsistent row)"
    if not case.skip and implied_kv_memory_share(case) > 1.0:
        case.skip = "measured load needs more KV memory than the GPUs have (inconsistent row)"
    return case


def implied_kv_memory_share(case: SiliconCase) -> float:
    """Share of one GPU's whole memory the KV cache of the row's decoding requests needs.

    Of `concurrency` closed-loop clients, concurrency * (OSL-1) * TPOT / (TTFT + (OSL-1) * TPOT)
    are past their first token at any time (Little's law), each holding at least its ISL tokens
    of KV, spread over the decode engines' attention-DP ranks, at the smallest KV format engines
    offer (FP8). Above 1.0 the recorded numbers cannot hold for the recorded mapping, whatever
    the weights and the runtime take.
    """
    assert case.model is not None
    deployment = case.agg or case.decode
    assert deployment is not None
    decode_s = max(0, case.osl - 1) * case.tpot_ms
    decoding = case.concurrency * decode_s / (case.ttft_ms + decode_s)
    ranks = deployment.mapping.attn_dp * deployment.workers
    per_token = kv_bytes_per_token_per_gpu(
        case.model.model_copy(update={"kv_dtype": "fp8"}), deployment.mapping.nearest_candidate()
    )
    return decoding / ranks * case.isl * per_token / case.gpu.memory_bytes


def implied_prefill_utilisation(case: SiliconCase) -> float:
    """Share of the prefill GPUs' dense peak FLOP/s the row's own numbers require.

    A closed loop of `concurrency` clients completes concurrency / (TTFT + (OSL-1) * TPOT)
    requests a second (Little's law); each needs at least 2 * active params * ISL FLOPs of linear
    layers to prefill (attention and decode not counted). Above 1.0 the recorded TTFT, TPOT and
    concurrency cannot all be true (for example prefix caching was on, or the load is
    mislabelled), whatever model predicts them: such rows are excluded from calibration and
    accuracy alike.
    """
    assert case.model is not None
    latency_s = (case.ttft_ms + max(0, case.osl - 1) * case.tpot_ms) / 1e3
    rate = case.concurrency / latency_s
    flops = rate * 2.0 * (case.model.active_params - case.model.embedding_params) * case.isl
    if case.agg is not None:
        gpus = case.agg.mapping.num_gpus
    else:
        assert case.prefill is not None
        gpus = case.prefill.mapping.num_gpus * case.prefill.workers
    return flops / (gpus * case.gpu.peak_flops(compute_dtype(case.model.weight_dtype, case.gpu)))


def _identity(case: SiliconCase) -> tuple:
    dep = [(d.mapping, d.batch, d.workers) for d in (case.agg, case.prefill, case.decode) if d]
    # the model name is left out: the same measurement is listed under checkpoints of one
    # architecture (DeepSeek-R1 and DeepSeek-V3) with TTFT and TPOT equal to the microsecond
    return (
        case.system,
        case.backend,
        case.precision,
        case.mode,
        case.isl,
        case.osl,
        case.concurrency,
        tuple(dep),
        round(case.ttft_ms, 3),
        round(case.tpot_ms, 3),
    )


def load_cases(path: Path | None = None) -> list[SiliconCase]:
    """Every row of the silicon CSV, evaluable or with a skip reason (a row listed twice counts once)."""
    with (path or silicon_csv_path()).open(newline="") as fh:
        cases = [_case(row) for row in csv.DictReader(fh)]
    seen: set[tuple] = set()
    for case in cases:
        if case.skip:
            continue
        key = _identity(case)
        if key in seen:
            case.skip = "duplicate of another row"
        seen.add(key)
    return cases


def skip_summary(cases: list[SiliconCase]) -> Counter[str]:
    return Counter(c.skip for c in cases if c.skip)


# ---------------------------------------------------------------------------
# predictions of the built-in model for a row
# ---------------------------------------------------------------------------
def predict_case(case: SiliconCase, constants: BackendConstants | None = None) -> tuple[float, float]:
    """(TTFT ms, TPOT ms) the built-in model predicts for an evaluable row."""
    assert case.model is not None and not case.skip, case.row_id
    k = constants or constants_for(case.backend)
    if case.agg is not None:
        est = BuiltinEstimator(case.model, case.gpu, case.backend, case.agg.mapping, k)
        out = est.agg(case.isl, case.osl, case.agg.batch)
        return out.ttft_ms, out.itl_ms
    assert case.prefill is not None and case.decode is not None
    pre = BuiltinEstimator(case.model, case.gpu, case.backend, case.prefill.mapping, k)
    dec = BuiltinEstimator(case.model, case.gpu, case.backend, case.decode.mapping, k)
    tpot = dec.decode_itl_ms(case.decode.batch, case.isl + case.osl / 2.0)
    # requests reach each prefill rank in the same closed-loop waves as in aggregated serving
    per_rank = max(1.0, case.concurrency / (case.prefill.workers * case.prefill.mapping.attn_dp))
    transfer = kv_transfer_ms(case.model, case.isl, k)
    ttft = disagg_ttft_ms(pre.loaded_ttft_ms(case.isl, per_rank), transfer, float(tpot))
    return ttft, float(tpot)


def case_residuals(case: SiliconCase, constants: BackendConstants | None = None):
    """The row's (system, phase, backend, load per rank, ISL, architecture, log(measured / estimated)) for TTFT and ITL
    (the prediction intervals' groups, `slaprof.steps.perf.intervals`)."""
    import math

    assert case.model is not None
    ttft, tpot = predict_case(case, constants)
    if case.agg is not None:
        ttft_load = tpot_load = case.agg.batch / case.agg.mapping.attn_dp
    else:
        assert case.prefill is not None and case.decode is not None
        ttft_load = case.concurrency / (case.prefill.workers * case.prefill.mapping.attn_dp)
        tpot_load = case.decode.batch / case.decode.mapping.attn_dp
    structure = case.model.structure
    return [
        (case.system, "ttft", case.backend, ttft_load, case.isl, structure, math.log(case.ttft_ms / ttft)),
        (case.system, "itl", case.backend, tpot_load, case.isl, structure, math.log(case.tpot_ms / tpot)),
    ]
