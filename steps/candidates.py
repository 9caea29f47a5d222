"""Candidate parallel mappings: TP for dense models; TEP and DEP for MoE models.

A Candidate has a short stable id (`tp4`, `tep8`, `dep8`) used in pod names and S3 keys.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from steps.errors import UserError

MappingKind = Literal["tp", "tep", "dep"]
_ID = re.compile(r"^(tp|tep|dep)([1-9][0-9]*)$")


class Candidate(BaseModel):
    """One engine's parallel mapping on `size` GPUs.

    tp:  attention and MLP (experts too) split by tensor parallelism.
    tep: attention split by TP, experts split by expert parallelism across the same GPUs.
    dep: attention data-parallel (one replica of attention per GPU), experts split by EP.
    """

    model_config = ConfigDict(frozen=True)

    kind: MappingKind
    size: int = Field(..., gt=0)

    @classmethod
    def parse(cls, text: str) -> Candidate:
        m = _ID.match(text.strip().lower())
        if not m:
            raise UserError(f"invalid mapping {text!r}: expected tpN, tepN or depN (e.g. tp4, dep8)")
        return cls(kind=m.group(1), size=int(m.group(2)))

    @property
    def id(self) -> str:
        return f"{self.kind}{self.size}"

    @property
    def label(self) -> str:
        """As printed in recommendation lines: TP:4, TEP:8, DEP:8."""
        return f"{self.kind.upper()}:{self.size}"

    @property
    def num_gpus(self) -> int:
        return self.size

    @property
    def attn_tp(self) -> int:
        return 1 if self.kind == "dep" else self.size

    @property
    def attn_dp(self) -> int:
        return self.size if self.kind == "dep" else 1

    @property
    def moe_ep(self) -> int:
        return 1 if self.kind == "tp" else self.size

    @property
    def moe_tp(self) -> int:
        return self.size if self.kind == "tp" else 1
