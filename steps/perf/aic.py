"""AI Configurator adapter (offline `bench` with sweep.estimator=aic, `slaprof estimate --estimator aic`).

Input: the same (ModelInfo, GPU, backend, mapping) as the built-in model, plus AI Configurator's
names for the system, the model (a Hugging Face id it ships, or a local folder with config.json)
and the backend version. Output: the PerfEstimator interface:
  prefill_ttft_ms  AI Configurator `static_ctx` (one batch of prompts)
  decode_itl_ms    `static_gen` (one decode step at a batch size)
  agg              `agg` (in-flight batching at a concurrency)
  max_kv_tokens    slaprof's memory model (AI Configurator reports memory for a batch, not a capacity)

AI Configurator is an optional extra (`pip install 'slaprof[aic]'`), imported only when an
estimate is asked for; each call takes 1.5-6 s, so results are cached per process.
"""

from __future__ import annotations

import contextlib
import io
import logging
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from steps.candidates import Candidate
from steps.engines import backend_names, get_backend
from steps.errors import UserError
from steps.gpus import GpuSpec
from steps.models import ModelInfo
from steps.perf.mapping import Mapping
from steps.perf.memory import kv_capacity_tokens
from steps.perf.roofline import AggEstimate, compute_dtype

_GEMM = {"bf16": "bfloat16", "fp8": "fp8", "fp4": "nvfp4"}
_KV = {"bf16": "bfloat16", "fp8": "fp8"}
_INSTALL = "install the optional extra: pip install 'slaprof[aic]' (AI Configurator 0.12)"


def aic_available() -> bool:
    try:
        return find_spec("aiconfigurator") is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as missing
        return False


def _require() -> Any:
    if not aic_available():
        raise UserError(
            f"estimator 'aic' needs AI Configurator, which is not installed; {_INSTALL}, or use --estimator builtin"
        )
    logging.getLogger("aiconfigurator").setLevel(logging.ERROR)
    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
    try:
        from aiconfigurator.cli.api import cli_estimate
    except ImportError as exc:
        raise UserError(f"AI Configurator is installed but cannot be imported ({exc}); {_INSTALL}") from None

    return cli_estimate


@lru_cache(maxsize=4096)
def _estimate(
    model_path: str,
    system: str,
    backend: str,
    version: str | None,
    mode: str,
    isl: int,
    osl: int,
    batch: int,
    mapping: Mapping,
    gemm: str | None,
    kv: str,
    is_moe: bool,
) -> tuple[float, float]:
    """(ttft_ms, tpot_ms) from one AI Configurator call; cached for the process."""
    cli_estimate = _require()
    kwargs: dict[str, Any] = dict(
        mode=mode,
        backend_name=backend,
        backend_version=version,
        isl=isl,
        osl=osl,
        batch_size=batch,
        tp_size=mapping.attn_tp,
        attention_dp_size=mapping.attn_dp,
        gemm_quant_mode=gemm,
        kvcache_quant_mode=kv,
    )
    if is_moe:
        kwargs.update(moe_tp_size=mapping.moe_tp, moe_ep_size=mapping.moe_ep, moe_quant_mode=gemm)
    noise = io.StringIO()
    try:  # AI Configurator prints data-loading notes; keep the terminal to slaprof's own output
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            result = cli_estimate(model_path, system, **kwargs)
    except Exception as exc:  # AIC raises many types for unsupported combinations
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"AI Configurator cannot estimate {model_path} on {system} with {backend}"
            f"{' ' + version if version else ''} ({mapping_label(mapping)}, {mode}): {detail}; "
            "check --aic-system/--aic-hf-id/--aic-backend-version or use --estimator builtin"
        ) from None
    return float(result.ttft or 0.0), float(result.tpot or 0.0)


def mapping_label(m: Mapping) -> str:
    return f"tp{m.attn_tp} dp{m.attn_dp} moe_tp{m.moe_tp} ep{m.moe_ep}"


def aic_model_path(model: ModelInfo, hf_id: str | None = None) -> str:
    """What AI Configurator should load: the given id, the local folder, or the model's HF id."""
    if hf_id:
        return hf_id
    if model.source and Path(model.source).is_dir() and (Path(model.source) / "config.json").is_file():
        return model.source
    return model.name


class AicEstimator:
    """PerfEstimator backed by AI Configurator's measured kernel database."""

    name = "aic"

    def __init__(
        self,
        model: ModelInfo,
        gpu: GpuSpec,
        backend: str,
        cand: Candidate | Mapping,
        *,
        system: str | None = None,
        hf_id: str | None = None,
        backend_version: str | None = None,
    ) -> None:
        aic_backend = get_backend(backend).aic_name  # the simulated engine's: the emulated backend's
        if aic_backend is None:
            covered = [n for n in backend_names() if get_backend(n).aic_name]
            raise UserError(f"AI Configurator has no backend {backend!r}; it covers {', '.join(covered)}")
        _require()
        self.model, self.gpu, self.backend, self.cand = model, gpu, backend, cand
        self.aic_backend = aic_backend
        self.map = Mapping.of(cand)
        self.system = system or gpu.name
        self.model_path = aic_model_path(model, hf_id)
        self.version = backend_version
        # FP4 on a GPU without FP4 Tensor Cores: let AI Configurator pick its weight-only kernel data
        native = compute_dtype(model.weight_dtype, gpu) == model.weight_dtype
        self._gemm = _GEMM[model.weight_dtype] if native else None
        self._kv = _KV[model.kv_dtype]

    def _call(self, mode: str, isl: int, osl: int, batch: int) -> tuple[float, float]:
        return _estimate(
            self.model_path,
            self.system,
            self.aic_backend,
            self.version,
            mode,
            int(isl),
            int(osl),
            int(batch),
            self.map,
            self._gemm,
            self._kv,
            self.model.is_moe,
        )

    def prefill_ttft_ms(self, isl: int, batch: int = 1) -> float:
        return self._call("static_ctx", isl, 2, max(1, batch))[0]

    def decode_itl_ms(self, batch: int, context: int) -> float:
        # static_gen decodes osl tokens after an isl prompt; a 2-token decode sits at context ~isl
        return self._call("static_gen", max(1, int(context)), 2, max(1, batch))[1]

    def max_kv_tokens(self) -> int:
        cand = self.cand if isinstance(self.cand, Candidate) else self.map.nearest_candidate()
        return kv_capacity_tokens(self.model, self.gpu, cand, self.backend)

    def agg(self, isl: int, osl: int, concurrency: int) -> AggEstimate:
        ttft, tpot = self._call("agg", isl, osl, max(1, concurrency))
        latency = ttft + max(0, osl - 1) * tpot
        thpt = concurrency * osl / (latency / 1e3) / self.map.num_gpus if latency > 0 else 0.0
        return AggEstimate(ttft_ms=ttft, itl_ms=tpot, thpt_per_gpu=thpt)
