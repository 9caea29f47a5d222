"""Model-size detection (DAG step `plan`): ModelInfo from a model's config, never its weights.

Inputs: a local model directory (config.json, optional hf_quant_config.json and safetensors
index or headers); for a Hugging Face id, in this order: its Hugging Face cache entry, the Hub's
metadata files (`slaprof.steps.specs.hub`, one short request), the built-in catalog (`slaprof.steps.specs.catalog`).
Output: ModelInfo, the shapes the planner and the performance model need.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from slaprof.steps.core.errors import Unreachable, UserError

WeightDtype = Literal["bf16", "fp8", "fp4"]
Structure = Literal["dense", "moe", "mla"]
BYTES_PER_WEIGHT: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5 + 1.0 / 16}  # NVFP4: + 1 scale/16
BYTES_PER_KV: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


class ModelInfo(BaseModel):
    """Shapes of a decoder-only transformer, dense or MoE, GQA or MLA."""

    model_config = ConfigDict(frozen=True)

    name: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int  # dense MLP (also DeepSeek's first dense layers)
    max_context_length: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # MLA (DeepSeek V2/V3): latent KV cache
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # MoE
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0  # leading layers with a dense MLP in an MoE model
    # precision as declared by the checkpoint
    weight_dtype: WeightDtype = "bf16"
    kv_dtype: Literal["bf16", "fp8"] = "bf16"
    quant_block_size: int | None = None
    checkpoint_bytes: int | None = None  # from the safetensors index or headers, when available
    source: str = ""

    # ---- structure -------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def structure(self) -> Structure:
        """Dense, MoE, or MLA attention (DeepSeek, Kimi): the offline model's errors differ by it."""
        return "mla" if self.is_mla else "moe" if self.is_moe else "dense"

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    # ---- parameter counts (per layer pieces, so perf/ can reuse them) ----
    @property
    def attention_params_per_layer(self) -> int:
        d, hq = self.hidden_size, self.num_attention_heads
        if self.kv_lora_rank is not None:  # MLA
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = d * self.q_lora_rank + self.q_lora_rank * hq * qk if self.q_lora_rank else d * hq * qk
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * hq * (
                self.qk_nope_head_dim + self.v_head_dim
            )
            o = hq * self.v_head_dim * d
            return q + kv + o
        hd, hkv = self.head_dim, self.num_kv_heads
        params = d * hq * hd + 2 * d * hkv * hd + hq * hd * d
        if self.attention_bias:
            params += hq * hd + 2 * hkv * hd
        return params

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """One routed expert (gated MLP)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def shared_expert_params(self) -> int:
        inter = self.shared_expert_intermediate_size or self.num_shared_experts * self.moe_intermediate_size
        return 3 * self.hidden_size * inter

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def _layer_params(self, experts_counted: float) -> float:
        attn = self.num_layers * (self.attention_params_per_layer + 2 * self.hidden_size)
        if not self.is_moe:
            return attn + self.num_layers * self.dense_mlp_params
        moe = self.num_moe_layers * (
            self.router_params + self.shared_expert_params + experts_counted * self.expert_params
        )
        return attn + self.num_dense_layers * self.dense_mlp_params + moe

    @property
    def total_params(self) -> int:
        body = self._layer_params(self.num_experts)
        return int(body + self.embedding_params + self.lm_head_params + self.hidden_size)

    @property
    def active_params(self) -> int:
        """Parameters touched per token (routed experts: top-k), LM head included."""
        body = self._layer_params(self.experts_per_token)
        head = self.lm_head_params or self.embedding_params
        return int(body + head + self.hidden_size)

    @property
    def routed_expert_params_total(self) -> int:
        return self.num_moe_layers * self.num_experts * self.expert_params

    # ---- bytes ----------------------------------------------------------
    def weight_bytes(self, dtype: WeightDtype | None = None) -> float:
        """Checkpoint bytes: linear layers at `dtype`, embeddings, LM head and norms at bf16."""
        dtype = dtype or self.weight_dtype
        high_precision = self.embedding_params + self.lm_head_params
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        linear = self.total_params - high_precision - norms
        return linear * BYTES_PER_WEIGHT[dtype] + (high_precision + norms) * 2.0

    def kv_elements_per_token_per_layer(self) -> int:
        """K and V elements stored per token per layer (all KV heads, or the MLA latent)."""
        if self.kv_lora_rank is not None:  # MLA: the latent and the rope key
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_dtype: str | None = None) -> float:
        """KV-cache bytes per token for the whole model (not split by parallelism)."""
        kv_dtype = kv_dtype or self.kv_dtype
        return self.num_layers * self.kv_elements_per_token_per_layer() * BYTES_PER_KV[kv_dtype]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "moe": self.is_moe,
            "mla": self.is_mla,
            "total_params_b": round(self.total_params / 1e9, 3),
            "active_params_b": round(self.active_params / 1e9, 3),
            "weight_dtype": self.weight_dtype,
            "weight_gb": round(self.weight_bytes() / 1e9, 2),
            "kv_bytes_per_token": self.kv_bytes_per_token(),
            "max_context_length": self.max_context_length,
        }


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "model_max_length")


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _declared_weight_dtype(cfg: dict[str, Any], quant: dict[str, Any] | None) -> tuple[WeightDtype, str, int | None]:
    """(weight dtype, kv dtype, fp8 block size) declared by config.json or hf_quant_config.json."""
    kv: str = "bf16"
    if quant:  # ModelOpt: {"quantization": {"quant_algo": "FP8" | "NVFP4", "kv_cache_quant_algo": "FP8"}}
        q = quant.get("quantization", quant)
        algo = str(q.get("quant_algo") or "").upper()
        if str(q.get("kv_cache_quant_algo") or "").upper() == "FP8":
            kv = "fp8"
        if "FP4" in algo:
            return "fp4", kv, None
        if "FP8" in algo:
            return "fp8", kv, None
    qc = cfg.get("quantization_config") or {}
    method = str(qc.get("quant_method") or "").lower()
    if method == "mxfp4":  # gpt-oss: MXFP4 experts (a scale per 32 weights, counted as NVFP4's per 16)
        return "fp4", kv, None
    if method in ("fp8", "fbgemm_fp8"):
        block = qc.get("weight_block_size")
        return "fp8", kv, int(block[0]) if block else None
    if method in ("modelopt",):
        algo = str(qc.get("quant_algo") or "").upper()
        if str(qc.get("kv_cache_quant_algo") or "").upper() == "FP8":
            kv = "fp8"
        if "FP4" in algo:
            return "fp4", kv, None
        if "FP8" in algo:
            return "fp8", kv, None
    if method == "compressed-tensors":
        text = json.dumps(qc).lower()
        if "float" in text and '"num_bits": 4' in text:
            return "fp4", kv, None
        if '"num_bits": 8' in text and "float" in text:
            return "fp8", kv, None
    return "bf16", kv, None


_SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "num_key_value_heads",
    "head_dim",
)


def _check_shapes(cfg: dict[str, Any], name: str) -> None:
    """Every size the models and estimates divide by must be a positive integer."""
    for key in _SHAPE_KEYS:
        value = cfg.get(key)
        if value is None and key not in _SHAPE_KEYS[:4]:
            continue  # optional, and absent
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"model {name!r}: config.json has {key} = {value!r}; it must be a positive integer")


def model_info_from_config(
    cfg: dict[str, Any], name: str, quant_config: dict[str, Any] | None = None, source: str = ""
) -> ModelInfo:
    """Build ModelInfo from a Hugging Face config.json dict (text configs of VL models included)."""
    if "text_config" in cfg and "num_hidden_layers" not in cfg:
        cfg = {**cfg["text_config"], "architectures": cfg.get("architectures", [])}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in cfg]
    if missing:
        raise UserError(f"model {name!r}: config.json lacks {', '.join(missing)}; is this a decoder-only LLM config?")
    _check_shapes(cfg, name)
    arch = (cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0]
    d = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(_first(cfg, "num_key_value_heads", default=heads))
    head_dim = int(_first(cfg, "head_dim", default=d // heads))
    num_experts = int(_first(cfg, "n_routed_experts", "num_local_experts", "num_experts", default=0) or 0)
    top_k = int(_first(cfg, "num_experts_per_tok", "moe_topk", "num_experts_per_token", default=0) or 0)
    dense_layers = 0
    if num_experts:
        if "first_k_dense_replace" in cfg:
            dense_layers = int(cfg["first_k_dense_replace"])
        elif cfg.get("mlp_only_layers"):
            dense_layers = len(cfg["mlp_only_layers"])
    max_ctx = int(_first(cfg, *_CONTEXT_KEYS, default=4096))
    wdtype, kvdtype, block = _declared_weight_dtype(cfg, quant_config)
    mla = cfg.get("kv_lora_rank") is not None
    return ModelInfo(
        name=name,
        architecture=arch,
        model_type=str(cfg.get("model_type", "")),
        num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=d,
        num_attention_heads=heads,
        num_kv_heads=heads if mla else kv_heads,
        head_dim=int(cfg.get("v_head_dim", head_dim)) if mla else head_dim,
        vocab_size=int(cfg["vocab_size"]),
        intermediate_size=int(_first(cfg, "intermediate_size", "ffn_hidden_size", default=4 * d)),
        max_context_length=max_ctx,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", cfg.get("model_type") in ("qwen2", "qwen2_moe"))),
        q_lora_rank=cfg.get("q_lora_rank") if mla else None,
        kv_lora_rank=int(cfg["kv_lora_rank"]) if mla else None,
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim", 0)) if mla else 0,
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim", 0)) if mla else 0,
        v_head_dim=int(cfg.get("v_head_dim", 0)) if mla else 0,
        num_experts=num_experts,
        experts_per_token=top_k,
        moe_intermediate_size=int(_first(cfg, "moe_intermediate_size", "expert_intermediate_size", default=0) or 0)
        or (int(cfg.get("intermediate_size", 0)) if num_experts else 0),
        num_shared_experts=int(cfg.get("n_shared_experts") or 0),
        shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0),
        num_dense_layers=dense_layers,
        weight_dtype=wdtype,
        kv_dtype=kvdtype,
        quant_block_size=block,
        source=source,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "BF16": 2,
    "F16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "I32": 4,
    "I64": 8,
    "I16": 2,
    "BOOL": 1,
}


def checkpoint_bytes(directory: Path) -> int | None:
    """Bytes of the weights as stored: the index's total_size, else the safetensors headers
    (an 8-byte length and a JSON table of tensor shapes and dtypes; tensors are not read)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        total = (_read_json(index).get("metadata") or {}).get("total_size")
        if total:
            return int(total)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                total += math.prod(meta["shape"]) * _DTYPE_BYTES.get(meta["dtype"], 2)
    return total


def load_model_info_from_dir(directory: Path, name: str | None = None) -> ModelInfo:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"model directory {directory} has no config.json; point --model at a Hugging Face model folder")
    quant_path = directory / "hf_quant_config.json"
    quant = _read_json(quant_path) if quant_path.is_file() else None
    info = model_info_from_config(_read_json(cfg_path), name or directory.name, quant, source=str(directory))
    stored = checkpoint_bytes(directory)
    return info.model_copy(update={"checkpoint_bytes": stored}) if stored else info


def _from_cache(model_id: str) -> ModelInfo | None:
    from slaprof.steps.specs.hub import cached_snapshot

    snap = cached_snapshot(model_id)
    if snap is None:
        return None
    return load_model_info_from_dir(snap, model_id).model_copy(update={"source": f"hf-cache:{snap}"})


def _from_hub(model_id: str) -> ModelInfo:
    """config.json (plus hf_quant_config.json and the safetensors index when present) from the Hub:
    one request per file; raises HubUnavailable when the first one gets no config."""
    from slaprof.steps.specs.hub import HubUnavailable, fetch_json

    cfg = fetch_json(model_id, "config.json")
    if cfg is None:
        raise HubUnavailable(f"the Hub's {model_id!r} has no config.json")

    def optional(filename: str) -> dict[str, Any] | None:
        try:
            return fetch_json(model_id, filename)
        except HubUnavailable:
            return None

    info = model_info_from_config(cfg, model_id, optional("hf_quant_config.json"), source=f"hf://{model_id}")
    index = optional("model.safetensors.index.json") or {}
    stored = (index.get("metadata") or {}).get("total_size")
    return info.model_copy(update={"checkpoint_bytes": int(stored)}) if stored else info


def _announce(model_id: str, where: str) -> None:
    """Which source answered for a model id: the user did not name it, so say it (stderr)."""
    print(f"slaprof: model {model_id}: config.json from {where}", file=sys.stderr)


def _from_id(model_id: str) -> ModelInfo:
    """A Hugging Face id: the HF cache, else the Hub (asked once), else the built-in catalog."""
    from slaprof.steps.specs.catalog import catalog_info
    from slaprof.steps.specs.hub import HubUnavailable, HubUnreachable

    cached = _from_cache(model_id)
    if cached is not None:
        _announce(model_id, f"the Hugging Face cache ({cached.source.removeprefix('hf-cache:')})")
        return cached
    try:
        info = _from_hub(model_id)
    except HubUnavailable as exc:
        hub_problem, hub_silent = str(exc), isinstance(exc, HubUnreachable)
    else:
        _announce(model_id, "the Hugging Face Hub")
        return info
    info_from_catalog = catalog_info(model_id)
    if info_from_catalog is not None:
        _announce(model_id, f"the built-in catalog ({hub_problem})")
        return info_from_catalog
    # a Hub that did not answer may answer on a retry; a refusal or offline mode will not
    error = Unreachable if hub_silent else UserError
    raise error(
        f"cannot read the config of model {model_id!r}: not in the Hugging Face cache, {hub_problem}, and not in "
        f"the built-in catalog{_closest(model_id)}; give --model a local folder holding its config.json "
        "(`slaprof models` lists the catalog)"
    )


def _closest(model: str) -> str:
    from slaprof.steps.specs.catalog import suggestions

    close = suggestions(model)
    return f" (closest: {', '.join(close)})" if close else ""


def load_model_info(model: str) -> ModelInfo:
    """ModelInfo for a local directory, or a Hugging Face id (HF cache, Hub, built-in catalog)."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return load_model_info_from_dir(path)
    if path.exists() or model.startswith(("/", "./", "../")):
        raise UserError(f"model path {model!r} is not a directory with config.json")
    if model.count("/") != 1:
        raise UserError(
            f"model {model!r} is neither a local directory nor a Hugging Face id like 'Qwen/Qwen3-32B'{_closest(model)}"
        )
    return _from_id(model)


class EnginePrecision(BaseModel):
    """What an engine must be told to run the model as the plan assumed: the request's quantization
    and KV-cache dtype where they differ from what the checkpoint declares (None: as declared)."""

    model_config = ConfigDict(frozen=True)

    weights: WeightDtype | None = None
    kv_cache: Literal["bf16", "fp8"] | None = None

    def describe(self) -> str:
        parts = [f"{self.weights} weights"] if self.weights else []
        return ", ".join(parts + ([f"{self.kv_cache} KV cache"] if self.kv_cache else [])) or "as declared"


def engine_precision(declared: ModelInfo, quantization: str = "auto", kv_cache_dtype: str = "auto") -> EnginePrecision:
    """The overrides of `declared` (the checkpoint's model) an engine has to apply."""
    weights = quantization if quantization not in ("auto", declared.weight_dtype) else None
    kv = kv_cache_dtype if kv_cache_dtype not in ("auto", declared.kv_dtype) else None
    return EnginePrecision(weights=weights, kv_cache=kv)


def apply_overrides(info: ModelInfo, quantization: str = "auto", kv_cache_dtype: str = "auto") -> ModelInfo:
    """The model as the engine will run it: request's quantization and KV dtype over the declared ones."""
    update: dict[str, Any] = {}
    if quantization != "auto":
        update["weight_dtype"] = quantization
    if kv_cache_dtype != "auto":
        update["kv_dtype"] = kv_cache_dtype
    return info.model_copy(update=update) if update else info
