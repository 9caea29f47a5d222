"""Candidate engines: a parallel mapping and how the engine serves (one phase of a disaggregated
graph, or both phases as an aggregated engine).

Mappings: TP for dense models; TEP, DEP and DTP for MoE models. A Candidate has a short stable
id (`tp4`, `tep8`, `dep8`, `dtp4`; aggregated engines `agg-tp8`) used in pod names and S3 keys.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slaprof.steps.core.errors import UserError

MappingKind = Literal["tp", "tep", "dep", "dtp"]
MAPPING_KINDS: tuple[str, ...] = ("tp", "tep", "dep", "dtp")
Serving = Literal["disagg", "agg"]
AGG_PREFIX = "agg-"
_ID = re.compile(r"^(agg-)?(tp|tep|dep|dtp)([1-9][0-9]*)$")


class Candidate(BaseModel):
    """One engine's parallel mapping on `size` GPUs, and whether it serves one phase or both.

    tp:  attention and MLP (experts too) split by tensor parallelism.
    tep: attention split by TP, experts split by expert parallelism across the same GPUs.
    dep: attention data-parallel (one replica of attention per GPU), experts split by EP.
    dtp: attention data-parallel, every expert split by tensor parallelism across the GPUs.

    serving: `disagg` engines are measured as prefill and decode engines of a disaggregated
    graph; `agg` engines serve both phases (chunked prefill mixed into the decode batches).
    """

    model_config = ConfigDict(frozen=True)

    kind: MappingKind
    size: int = Field(..., gt=0)
    serving: Serving = "disagg"

    @classmethod
    def parse(cls, text: str) -> Candidate:
        m = _ID.match(text.strip().lower())
        if not m:
            raise UserError(
                f"invalid mapping {text!r}: expected tpN, tepN, depN or dtpN (e.g. tp4, dep8), "
                f"with {AGG_PREFIX!r} in front for an aggregated engine (agg-tp8)"
            )
        serving = "agg" if m.group(1) else "disagg"
        return cls(kind=m.group(2), size=int(m.group(3)), serving=serving)

    @property
    def mapping_id(self) -> str:
        """The parallel mapping alone: `tp8` for both `tp8` and `agg-tp8`."""
        return f"{self.kind}{self.size}"

    @property
    def id(self) -> str:
        return f"{AGG_PREFIX}{self.mapping_id}" if self.serving == "agg" else self.mapping_id

    @property
    def label(self) -> str:
        """As printed in recommendation lines: TP:4, TEP:8, DEP:8."""
        return f"{self.kind.upper()}:{self.size}"

    @property
    def is_agg(self) -> bool:
        return self.serving == "agg"

    def as_serving(self, serving: Serving) -> Candidate:
        return Candidate(kind=self.kind, size=self.size, serving=serving)

    @property
    def num_gpus(self) -> int:
        return self.size

    @property
    def attn_tp(self) -> int:
        return 1 if self.kind in ("dep", "dtp") else self.size

    @property
    def attn_dp(self) -> int:
        return self.size if self.kind in ("dep", "dtp") else 1

    @property
    def moe_ep(self) -> int:
        return self.size if self.kind in ("tep", "dep") else 1

    @property
    def moe_tp(self) -> int:
        return self.size if self.kind in ("tp", "dtp") else 1
