"""Engine backends: `get_backend(name)` returns the registered EngineBackend called `name`.

Each backend module holds everything that differs between engines (server command, readiness,
KV-capacity parsing, the DGD's worker shape and arguments, memory and batching defaults, its
calibration key and AI Configurator name); see `steps/engines/base.py` for the interface and
`steps/engines/registry.py` for registration. Importing this package registers the built-in ones;
installed plugins (entry-point group `slaprof.backends`) register when a backend is first asked for.
"""

from __future__ import annotations

# Each import registers its backend; their order is the order users see them in (CLI help, the Argo
# drop-down), the default first.
# isort: off
from slaprof.steps.engines import vllm, sglang, trtllm, simulated  # noqa: F401

# isort: on
from slaprof.steps.engines.base import EngineBackend, Role, ServerLaunch, ServerOptions
from slaprof.steps.engines.registry import backend_names, get_backend, plugin_error, register_backend

__all__ = [
    "EngineBackend",
    "Role",
    "ServerLaunch",
    "ServerOptions",
    "backend_names",
    "get_backend",
    "plugin_error",
    "register_backend",
]
