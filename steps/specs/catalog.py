"""The built-in model catalog: config.json facts of widely served open models.

slaprof reads a model's shapes from its config.json. When a Hugging Face id is in neither a local
folder, the Hugging Face cache nor the Hub (an air-gapped cluster, a CI machine, a gated model
without a token), the catalog (`steps/specs/data/model_catalog.json`) answers instead: for each model the
config.json keys that `slaprof.steps.specs.models.model_info_from_config` reads and its declared quantization,
so both paths build ModelInfo the same way. `slaprof models` lists it.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slaprof.steps.specs.models import ModelInfo

CATALOG_PATH = Path(__file__).resolve().parent / "data" / "model_catalog.json"
SOURCE = "catalog"  # ModelInfo.source of a catalog entry


@cache
def catalog_configs() -> dict[str, dict[str, Any]]:
    """Model id -> config.json facts (with `hf_quant_config` when declared), `same_as` resolved."""
    raw: dict[str, dict[str, Any]] = json.loads(CATALOG_PATH.read_text())["models"]
    out = {}
    for model_id, entry in raw.items():
        base = entry.get("same_as")
        if base is not None:
            entry = {**raw[base], **{k: v for k, v in entry.items() if k != "same_as"}}
        out[model_id] = entry
    return out


def _canonical(model_id: str) -> str | None:
    """The catalog's spelling of `model_id` (Hub ids are case-insensitive)."""
    by_lower = {m.lower(): m for m in catalog_configs()}
    return by_lower.get(model_id.lower())


def catalog_info(model_id: str) -> ModelInfo | None:
    """ModelInfo of a catalog model, or None when the catalog does not have it."""
    from slaprof.steps.specs.models import model_info_from_config

    name = _canonical(model_id)
    if name is None:
        return None
    cfg = dict(catalog_configs()[name])
    quant = cfg.pop("hf_quant_config", None)
    return model_info_from_config(cfg, name, quant, source=SOURCE)


def catalog_models() -> list[ModelInfo]:
    infos = (catalog_info(m) for m in catalog_configs())
    return [i for i in infos if i is not None]


def suggestions(model: str, limit: int = 3) -> list[str]:
    """Catalog ids a mistyped or org-less model name probably meant."""
    ids = list(catalog_configs())
    tail = model.rsplit("/", 1)[-1].lower()
    exact_tail = [m for m in ids if m.lower().rsplit("/", 1)[-1] == tail]
    if exact_tail:
        return exact_tail[:limit]
    lowered = {m.lower(): m for m in ids}
    return [lowered[m] for m in difflib.get_close_matches(model.lower(), list(lowered), n=limit, cutoff=0.75)]
