"""Engine backends: `get_backend(name)` returns the EngineBackend for vllm, sglang, trtllm or simulated.

Each backend module holds everything that differs between engines (server command, readiness,
KV-capacity parsing, Dynamo worker arguments); see `steps/engines/base.py` for the interface.
"""

from __future__ import annotations

from typing import Any

from steps.engines.base import DYNAMO_VERSION, EngineBackend, Role, ServerLaunch, ServerOptions
from steps.errors import UserError

BACKEND_NAMES: tuple[str, ...] = ("vllm", "sglang", "trtllm", "simulated")

__all__ = ["BACKEND_NAMES", "DYNAMO_VERSION", "EngineBackend", "Role", "ServerLaunch", "ServerOptions", "get_backend"]


def get_backend(name: str, **options: Any) -> EngineBackend:
    """The backend called `name`; `options` configure the simulated one (see SimulationSettings)."""
    if name == "vllm":
        from steps.engines.vllm import VllmBackend

        return VllmBackend()
    if name == "sglang":
        from steps.engines.sglang import SglangBackend

        return SglangBackend()
    if name == "trtllm":
        from steps.engines.trtllm import TrtllmBackend

        return TrtllmBackend()
    if name == "simulated":
        from steps.engines.simulated import SimulatedBackend

        return SimulatedBackend(**options)
    raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
