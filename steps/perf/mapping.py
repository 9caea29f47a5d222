"""A general parallel mapping for the performance model: attention TP x DP, experts TP x EP.

slaprof's candidates (`tp`, `tep`, `dep`) are three points of this space; measured rows and
AI Configurator use the general form (attention_dp_size, moe_tp_size, moe_ep_size).
"""

from __future__ import annotations

from dataclasses import dataclass

from slaprof.steps.core.candidates import Candidate


@dataclass(frozen=True)
class Mapping:
    attn_tp: int = 1
    attn_dp: int = 1
    moe_tp: int = 1
    moe_ep: int = 1

    @property
    def num_gpus(self) -> int:
        return self.attn_tp * self.attn_dp

    @property
    def size(self) -> int:
        return self.num_gpus

    @classmethod
    def of(cls, cand: Candidate | Mapping) -> Mapping:
        if isinstance(cand, Mapping):
            return cand
        return cls(attn_tp=cand.attn_tp, attn_dp=cand.attn_dp, moe_tp=cand.moe_tp, moe_ep=cand.moe_ep)

    def nearest_candidate(self) -> Candidate:
        """The slaprof candidate closest to this mapping (for memory accounting)."""
        if self.attn_dp > 1:
            return Candidate(kind="dtp" if self.moe_ep == 1 and self.moe_tp > 1 else "dep", size=self.num_gpus)
        if self.moe_ep > 1:
            return Candidate(kind="tep", size=self.num_gpus)
        return Candidate(kind="tp", size=self.num_gpus)
