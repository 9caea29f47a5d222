"""The one interface every backend implements (vllm, sglang, trtllm, simulated).

Backend differences live only in `steps/engines/<backend>.py`: how to start a server for a
mapping, how to tell it is ready, how much KV cache it has, and which worker arguments a
DynamoGraphDeployment needs. Nothing else in slaprof says `if backend == ...`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from steps.candidates import Candidate

Role = Literal["prefill", "decode"]


class EngineBackend(ABC):
    name: str  # vllm | sglang | trtllm | simulated
    dynamo_module: str  # python -m <module> in a Dynamo worker, e.g. dynamo.vllm
    default_image: str  # Dynamo runtime image for this backend

    # ---- parallel mapping ---------------------------------------------------
    @abstractmethod
    def parallel_args(self, cand: Candidate) -> list[str]:
        """Engine CLI flags for the mapping (TP; TEP/DEP with EP and attention-DP flags)."""

    # ---- DynamoGraphDeployment worker -------------------------------------
    @abstractmethod
    def dgd_worker_args(self, model: str, cand: Candidate, role: Role) -> list[str]:
        """Arguments of a disaggregated Dynamo worker (`python3 -m <dynamo_module> ...`)."""

    # ---- standalone server (online / simulate bench) -----------------------
    @abstractmethod
    def server_command(self, model: str, cand: Candidate, port: int, *, prefix_caching: bool,
                       max_batched_tokens: int | None = None) -> list[str]:
        """Command line of an OpenAI-compatible server for this mapping on `port`."""

    @abstractmethod
    def kv_tokens_from_log(self, log_text: str) -> int | None:
        """Total KV-cache tokens from the start-up log (the final value, not an intermediate one)."""

    def kv_tokens_from_metrics(self, metrics_text: str) -> int | None:
        """Total KV-cache tokens from Prometheus /metrics text, when the backend exposes it."""
        return None
