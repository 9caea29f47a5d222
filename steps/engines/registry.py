"""The backend registry: every backend is one EngineBackend subclass, registered by its name.

The rest of slaprof asks the registry for a backend (`get_backend(name)`) and the backend for its
facts, so adding a backend is one module with one `@register_backend` class: imported by
`steps/engines/__init__.py`, by the code that uses it before the request is read, or declared by
an installed package under the `slaprof.backends` entry-point group (`name = "module:Class"`),
which every slaprof process finds: the CLI, the simulated engine, an Argo pod whose image has it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

from slaprof.steps.core.errors import UserError
from slaprof.steps.engines.base import EngineBackend

# Backend names appear in DGD names, S3 keys and Argo parameters: short lowercase DNS-1035 labels.
_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_BACKENDS: dict[str, type[EngineBackend]] = {}
PLUGIN_GROUP = "slaprof.backends"
_plugins_read = False
_plugin_errors: dict[str, str] = {}  # entry-point name -> why it did not load
log = logging.getLogger(__name__)

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


def load_plugins() -> None:
    """Register the backends installed packages declare under `slaprof.backends`, once per process.
    A plugin that does not load is logged and remembered, not raised: it must not take the other
    backends down with it; asking for it by name gives the reason."""
    global _plugins_read
    if _plugins_read:
        return
    _plugins_read = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, EngineBackend)):
                raise TypeError(f"{ep.value} is not an EngineBackend subclass")
            if getattr(cls, "name", None) != ep.name:
                raise ValueError(f"{ep.value} is named {getattr(cls, 'name', None)!r}, not {ep.name!r}")
            register_backend(cls)
        except Exception as exc:  # any failure of third-party code is reported the same way
            _plugin_errors[ep.name] = (
                f"backend plugin {ep.name!r} ({ep.value}) did not load: {type(exc).__name__}: {exc}"
            )
            log.warning("%s", _plugin_errors[ep.name])


def plugin_error(name: str) -> str | None:
    """Why the installed plugin called `name` did not load, if it did not."""
    load_plugins()
    return _plugin_errors.get(name)


def backend_names(*, deployable_only: bool = True) -> tuple[str, ...]:
    """Registered backends in registration order, installed plugins last; by default those a request may
    name (not `simulated`, which stands in for a deployable backend under `method: simulate`)."""
    load_plugins()
    return tuple(n for n, cls in _BACKENDS.items() if cls.deployable or not deployable_only)


def get_backend(name: str, **options: Any) -> EngineBackend:
    """The backend called `name`; `options` go to its constructor (the simulated one's SimulationSettings)."""
    if name not in _BACKENDS:
        load_plugins()
    cls = _BACKENDS.get(name)
    if cls is None:
        if name in _plugin_errors:
            raise UserError(_plugin_errors[name])
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(backend_names(deployable_only=False))}")
    return cls(**options)
