"""The backend registry: every backend is one EngineBackend subclass, registered by its name.

The rest of slaprof asks the registry for a backend (`get_backend(name)`) and the backend for its
facts, so adding a backend is one module with one `@register_backend` class (imported by
`steps/engines/__init__.py`, or by the code that uses it before the request is read).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from slaprof.steps.core.errors import UserError
from slaprof.steps.engines.base import EngineBackend

# Backend names appear in DGD names, S3 keys and Argo parameters: short lowercase DNS-1035 labels.
_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_BACKENDS: dict[str, type[EngineBackend]] = {}

B = TypeVar("B", bound=type[EngineBackend])


def register_backend(cls: B) -> B:
    """Register `cls` under `cls.name` (usable as a class decorator); a name is registered once."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{cls.__name__}.name must be 1-16 lowercase letters or digits, starting with a letter")
    known = _BACKENDS.get(name)
    if known is not None and _path(known) != _path(cls):  # the same class again is a module reload
        raise ValueError(f"backend {name!r} is already registered by {_path(known)}")
    _BACKENDS[name] = cls
    return cls


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def backend_names(*, deployable_only: bool = True) -> tuple[str, ...]:
    """Registered backends in registration order; by default those a request may name (not `simulated`,
    which stands in for a deployable backend under `method: simulate`)."""
    return tuple(n for n, cls in _BACKENDS.items() if cls.deployable or not deployable_only)


def get_backend(name: str, **options: Any) -> EngineBackend:
    """The backend called `name`; `options` go to its constructor (the simulated one's SimulationSettings)."""
    cls = _BACKENDS.get(name)
    if cls is None:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(backend_names(deployable_only=False))}")
    return cls(**options)
