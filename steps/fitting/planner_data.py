"""Planner interpolation data (part of DAG step `fit`): the selected engines' prefill curve and
decode surface in Dynamo SLA planner's layout and units.

Outputs, relative to the run prefix:
- `prefill/raw_data.npz`: `prefill_isl`, `prefill_ttft` (ms), `prefill_thpt_per_gpu` (tokens/s/GPU);
- `decode/raw_data.npz`: `x_kv_usage` (0..1), `y_context_length`, `z_itl` (ms), `z_thpt_per_gpu`,
  `max_kv_tokens` (one-element array);
- `prefill_raw_data.json` / `decode_raw_data.json`: the same content as JSON lists, the keys of the
  planner's `planner-profile-data` ConfigMap (there `max_kv_tokens` is a plain integer, which is
  what the planner's JSON loader reads).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.results import CandidateProfile

PREFILL_KEYS = ("prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu")
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")


class PrefillPlannerData(BaseModel):
    """TTFT and throughput over ISL of one prefill engine, sorted by ISL."""

    prefill_isl: list[float]
    prefill_ttft: list[float] = Field(..., description="ms")
    prefill_thpt_per_gpu: list[float] = Field(..., description="input tokens/s/GPU")

    @model_validator(mode="after")
    def _same_length(self) -> PrefillPlannerData:
        if not len(self.prefill_isl) == len(self.prefill_ttft) == len(self.prefill_thpt_per_gpu):
            raise ValueError("prefill_isl, prefill_ttft and prefill_thpt_per_gpu must have the same length")
        return self

    @classmethod
    def from_profile(cls, profile: CandidateProfile) -> PrefillPlannerData:
        points = sorted(profile.prefill, key=lambda p: p.isl)
        return cls(
            prefill_isl=[float(p.isl) for p in points],
            prefill_ttft=[p.ttft_ms for p in points],
            prefill_thpt_per_gpu=[p.thpt_per_gpu for p in points],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64) for k in PREFILL_KEYS}

    def to_npz(self) -> bytes:
        return _npz_bytes(self.arrays())

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in PREFILL_KEYS}, indent=1)

    @classmethod
    def from_npz(cls, data: bytes) -> PrefillPlannerData:
        arrays = _load_npz(data, PREFILL_KEYS, "prefill")
        return cls(**{k: arrays[k].astype(float).tolist() for k in PREFILL_KEYS})

    @classmethod
    def from_json(cls, text: str | bytes) -> PrefillPlannerData:
        doc = _load_json(text, PREFILL_KEYS, "prefill")
        return cls(**{k: [float(v) for v in doc[k]] for k in PREFILL_KEYS})


class DecodePlannerData(BaseModel):
    """ITL and throughput over (KV usage, context length) of one decode engine."""

    x_kv_usage: list[float] = Field(..., description="active KV tokens / max_kv_tokens, 0..1")
    y_context_length: list[float]
    z_itl: list[float] = Field(..., description="ms")
    z_thpt_per_gpu: list[float] = Field(..., description="output tokens/s/GPU")
    max_kv_tokens: int = Field(..., gt=0)

    @model_validator(mode="after")
    def _same_length(self) -> DecodePlannerData:
        n = len(self.x_kv_usage)
        if not n == len(self.y_context_length) == len(self.z_itl) == len(self.z_thpt_per_gpu):
            raise ValueError("x_kv_usage, y_context_length, z_itl and z_thpt_per_gpu must have the same length")
        return self

    @classmethod
    def from_profile(cls, profile: CandidateProfile) -> DecodePlannerData:
        points = sorted(profile.decode, key=lambda p: (p.context, p.concurrency))
        return cls(
            x_kv_usage=[p.kv_usage for p in points],
            y_context_length=[float(p.context) for p in points],
            z_itl=[p.itl_ms for p in points],
            z_thpt_per_gpu=[p.thpt_per_gpu for p in points],
            max_kv_tokens=profile.max_kv_tokens,
        )

    def concurrency(self) -> np.ndarray:
        """Concurrency of each point, recovered from kv_usage = concurrency * context / max_kv_tokens."""
        x, y = np.asarray(self.x_kv_usage), np.asarray(self.y_context_length)
        return np.maximum(1.0, np.round(x * self.max_kv_tokens / y))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in DECODE_KEYS[:4]}
        out["max_kv_tokens"] = np.asarray([self.max_kv_tokens], dtype=np.int64)
        return out

    def to_npz(self) -> bytes:
        return _npz_bytes(self.arrays())

    def to_json(self) -> str:
        doc: dict[str, Any] = {k: getattr(self, k) for k in DECODE_KEYS[:4]}
        doc["max_kv_tokens"] = self.max_kv_tokens
        return json.dumps(doc, indent=1)

    @classmethod
    def from_npz(cls, data: bytes) -> DecodePlannerData:
        arrays = _load_npz(data, DECODE_KEYS, "decode")
        fields: dict[str, Any] = {k: arrays[k].astype(float).tolist() for k in DECODE_KEYS[:4]}
        fields["max_kv_tokens"] = int(np.ravel(arrays["max_kv_tokens"])[0])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> DecodePlannerData:
        doc = _load_json(text, DECODE_KEYS, "decode")
        fields: dict[str, Any] = {k: [float(v) for v in doc[k]] for k in DECODE_KEYS[:4]}
        kv = doc["max_kv_tokens"]
        fields["max_kv_tokens"] = int(kv[0] if isinstance(kv, list) else kv)
        return cls(**fields)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub mistakes the names for its own keywords
    return buf.getvalue()


def _load_npz(data: bytes, keys: tuple[str, ...], phase: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data)) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{phase} planner data is not a valid .npz file: {exc}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UserError(f"{phase} planner data lacks {', '.join(missing)}; expected keys {', '.join(keys)}")
    return arrays


def _load_json(text: str | bytes, keys: tuple[str, ...], phase: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{phase} planner data is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{phase} planner data must be a JSON object with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in doc]
    if missing:
        raise UserError(f"{phase} planner data lacks {', '.join(missing)}; expected keys {', '.join(keys)}")
    return doc
