"""AI Configurator adapter (offline `bench` with sweep.estimator=aic, `slaprof estimate --estimator aic`).

Input: the same (ModelInfo, GPU, backend, mapping) as the built-in model, plus AI Configurator's
names for the system, the model (a Hugging Face id it ships, or a local folder with config.json)
and the backend version. Output: the PerfEstimator interface:
  prefill_ttft_ms  AI Configurator `static_ctx` (one batch of prompts)
  decode_itl_ms    `static_gen` (one decode step at a batch size)
  agg              `agg` (in-flight batching at a concurrency)
  max_kv_tokens    slaprof's memory model (AI Configurator reports memory for a batch, not a capacity)

AI Configurator is an optional extra (`pip install 'slaprof[aic]'`), imported only when an
estimate is asked for. Its `cli_estimate` re-resolves the database version (re-reading every
system's YAML files) and rebuilds the model on every call (1.5-6 s); the adapter instead holds one
database and one InferenceSession per deployment and mode for the process, so a point costs
milliseconds, answers a whole sweep in one call and caches every point.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.engines import backend_names, get_backend
from slaprof.steps.perf.mapping import Mapping
from slaprof.steps.perf.memory import kv_capacity_tokens
from slaprof.steps.perf.roofline import AggEstimate, compute_dtype
from slaprof.steps.specs.gpus import GpuSpec
from slaprof.steps.specs.models import ModelInfo

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
        from aiconfigurator.sdk import inference_session
    except ImportError as exc:
        raise UserError(f"AI Configurator is installed but cannot be imported ({exc}); {_INSTALL}") from None

    return inference_session


@dataclass(frozen=True)
class AicTarget:
    """One deployment as AI Configurator sees it: everything but the runtime point."""

    model_path: str
    system: str
    backend: str
    version: str | None
    mapping: Mapping
    gemm: str | None
    kv: str
    is_moe: bool

    def describe(self, mode: str) -> str:
        version = f" {self.version}" if self.version else ""
        return (
            f"{self.model_path} on {self.system} with {self.backend}{version} ({mapping_label(self.mapping)}, {mode})"
        )


@lru_cache(maxsize=64)
def _database_version(system: str, backend: str, version: str | None) -> str:
    """The kernel-database version to load. AI Configurator looks the latest one up by re-reading
    every system's YAML files (1.5-3 s a time, twice per estimate); once per process is enough."""
    if version:
        return version
    _require()
    from aiconfigurator.sdk.perf_database import get_latest_database_version

    latest = get_latest_database_version(system=system, backend=backend)
    if latest is None:
        raise ValueError(f"No database found for system={system}, backend={backend}")
    return str(latest)


@lru_cache(maxsize=256)
def _session(target: AicTarget, mode: str) -> Any:
    """AI Configurator's InferenceSession for `target` in `mode` (static_ctx, static_gen, agg), built
    once: the database and the model cost 30-60 ms to set up and a few ms to query. The set-up follows
    the steps AI Configurator's own single estimate takes for that mode (quantization and FMHA
    resolution against the database), so a point answered here equals its `cli_estimate`."""
    _require()
    from aiconfigurator.sdk.backends.factory import get_backend as aic_backend
    from aiconfigurator.sdk.config_builders import build_model_config
    from aiconfigurator.sdk.inference_session import InferenceSession
    from aiconfigurator.sdk.models import (
        check_is_moe,
        get_model,
        resolve_context_fmha_by_data,
        resolve_dsv4_moe_arch,
        resolve_nvfp4_for_system,
    )
    from aiconfigurator.sdk.moe_comm_resolver import resolve_model_config_moe_comm
    from aiconfigurator.sdk.perf_database import get_database_view

    t, m = target, target.mapping
    version = _database_version(t.system, t.backend, t.version)
    database = get_database_view(t.system, t.backend, version, allow_missing_data=False, database_mode="SILICON")
    if database is None:
        raise ValueError(f"Failed to load perf database for system={t.system}, backend={t.backend}, {version=}")
    moe = (m.moe_tp, m.moe_ep, t.gemm) if t.is_moe else (None, None, None)
    config = build_model_config(m.attn_tp, 1, m.attn_dp, moe[0], moe[1], t.gemm, t.kv, None, moe[2], None)
    if mode != "agg" and check_is_moe(t.model_path):
        phases = ("context",) if mode == "static_ctx" else ("context", "generation")
        resolve_model_config_moe_comm(
            config,
            model_path=t.model_path,
            backend_name=t.backend,
            database=database,
            required_phases=phases,
            fmha_quant_mode_explicit=False,
            kvcache_quant_mode_explicit=True,
        )
    if mode == "agg" or config.moe_comm_backend is None:
        is_context = mode != "static_gen"
        resolve_context_fmha_by_data(config, t.model_path, database, t.backend, is_context_role=is_context)
    resolve_dsv4_moe_arch(config, t.model_path, system_name=t.system, backend_name=t.backend)
    resolve_nvfp4_for_system(config, t.system, t.model_path, backend_name=t.backend)
    return InferenceSession(get_model(t.model_path, config, t.backend), database, aic_backend(t.backend))


def _run(target: AicTarget, mode: str, isl: int, osl: int, batch: int) -> tuple[float, float]:
    from aiconfigurator.sdk.config import RuntimeConfig

    session = _session(target, mode)
    runtime = RuntimeConfig(isl=isl, osl=osl, batch_size=batch)
    if mode == "agg":
        summary = session.run_agg(runtime, ctx_tokens=isl)
        if summary.check_oom():
            raise RuntimeError(f"OOM: the model does not fit in GPU memory at batch size {batch}")
    else:
        summary = session.run_static(runtime_config=runtime, mode=mode, stride=32)
    # slaprof never asks for speculative decoding, so AI Configurator's projection of it is the identity
    result = summary.get_result_dict()
    if result is None:
        raise RuntimeError("Estimation produced no results. The configuration may be invalid.")
    return float(result.get("ttft") or 0.0), float(result.get("tpot") or 0.0)


@lru_cache(maxsize=16384)
def _estimate(target: AicTarget, mode: str, isl: int, osl: int, batch: int) -> tuple[float, float]:
    """(ttft_ms, tpot_ms) of one point; cached for the process."""
    noise = io.StringIO()
    try:  # AI Configurator prints data-loading notes; keep the terminal to slaprof's own output
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            return _run(target, mode, isl, osl, batch)
    except UserError:
        raise
    except Exception as exc:  # AIC raises many types for unsupported combinations
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"AI Configurator cannot estimate {target.describe(mode)}: {detail}; "
            "check --aic-system/--aic-hf-id/--aic-backend-version or use --estimator builtin"
        ) from None


def estimates(target: AicTarget, mode: str, points: Iterable[tuple[int, int, int]]) -> list[tuple[float, float]]:
    """(ttft_ms, tpot_ms) of many (isl, osl, batch) points of one deployment: one database, one model and
    one session answer them all (AI Configurator's API takes one point per query)."""
    return [_estimate(target, mode, int(isl), int(osl), int(batch)) for isl, osl, batch in points]


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

    @property
    def target(self) -> AicTarget:
        return AicTarget(
            self.model_path,
            self.system,
            self.aic_backend,
            self.version,
            self.map,
            self._gemm,
            self._kv,
            self.model.is_moe,
        )

    def _call(self, mode: str, isl: int, osl: int, batch: int) -> tuple[float, float]:
        return _estimate(self.target, mode, int(isl), int(osl), int(batch))

    def prefill_ttft_ms(self, isl, batch=1):
        """One prefill, or a whole sweep when given arrays (one session answers every point)."""
        if np.ndim(isl) == 0 and np.ndim(batch) == 0:
            return self._call("static_ctx", isl, 2, max(1, int(batch)))[0]
        isls, batches = np.broadcast_arrays(np.asarray(isl), np.asarray(batch))
        rows = [(i, 2, max(1, int(b))) for i, b in zip(isls.ravel(), batches.ravel())]
        return np.array([t for t, _ in estimates(self.target, "static_ctx", rows)]).reshape(isls.shape)

    def decode_itl_ms(self, batch, context):
        """One decode step, or a whole sweep when given arrays. static_gen decodes osl tokens after an
        isl prompt; a 2-token decode sits at context ~isl."""
        if np.ndim(batch) == 0 and np.ndim(context) == 0:
            return self._call("static_gen", max(1, int(context)), 2, max(1, int(batch)))[1]
        batches, contexts = np.broadcast_arrays(np.asarray(batch), np.asarray(context))
        rows = [(max(1, int(c)), 2, max(1, int(b))) for b, c in zip(batches.ravel(), contexts.ravel())]
        return np.array([i for _, i in estimates(self.target, "static_gen", rows)]).reshape(batches.shape)

    def max_kv_tokens(self) -> int:
        cand = self.cand if isinstance(self.cand, Candidate) else self.map.nearest_candidate()
        return kv_capacity_tokens(self.model, self.gpu, cand, self.backend)

    def _agg(self, osl: int, concurrency: int, ttft: float, tpot: float) -> AggEstimate:
        latency = ttft + max(0, osl - 1) * tpot
        thpt = concurrency * osl / (latency / 1e3) / self.map.num_gpus if latency > 0 else 0.0
        return AggEstimate(ttft_ms=ttft, itl_ms=tpot, thpt_per_gpu=thpt)

    def agg(self, isl: int, osl: int, concurrency: int) -> AggEstimate:
        return self._agg(osl, concurrency, *self._call("agg", isl, osl, max(1, concurrency)))

    def agg_sweep(self, isl: int, osl: int, concurrencies: list[int]) -> list[AggEstimate]:
        """Aggregated serving over a concurrency sweep, every point from one session."""
        rows = [(int(isl), int(osl), max(1, int(c))) for c in concurrencies]
        return [self._agg(osl, c, t, i) for c, (t, i) in zip(concurrencies, estimates(self.target, "agg", rows))]
