"""A Kubernetes API for tests: KMock's KubernetesEmulator served over real HTTP in a background thread,
so the official (synchronous) `kubernetes` client talks to it exactly as to a cluster.

Use: `from tests.plugins.kube import cluster  # noqa: F401` and take the `cluster` fixture (a fresh
emulator per test: KMock's per-request cost grows with its history).

KMock as shipped stores objects and applies merge/JSON patches. This module adds, in test code, the
parts of a real API server that `slaprof.steps.dag.apply` depends on:
- only declared resources exist (an undeclared one answers 404, as a missing CRD does);
- create answers 201 and stamps uid, resourceVersion, generation and creationTimestamp;
- a patch bumps resourceVersion (and generation when it touches `spec`) and is refused with 409
  when it carries a stale `metadata.resourceVersion` (optimistic concurrency);
- chosen requests can be answered with an error status (`cluster.fail(...)`) to exercise 403/404/409/422.
It does not emulate server-side apply, watches, admission webhooks or the Dynamo operator: tests
flip a DGD's status themselves (`cluster.set_status(...)`).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
import yaml
from kmock import KubernetesError, action

DGD_RESOURCE = "nvidia.com/v1alpha1/dynamographdeployments"
CONFIGMAP_RESOURCE = "v1/configmaps"


@dataclass
class Fault:
    """Answer matching requests with `status` (at most `times` times; None = always)."""

    status: int
    reason: str
    message: str
    method: str | None = None  # GET, POST, PATCH, DELETE; None = any
    plural: str | None = None  # e.g. dynamographdeployments; None = any
    name: str | None = None
    times: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, plural: str | None, name: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (
            (self.method is None or self.method == method)
            and (self.plural is None or self.plural == plural)
            and (self.name is None or self.name == name)
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator with the server-side bookkeeping a controller-less API server does."""

    faults: list[Fault] = attrs.field(factory=list)
    _revision: int = attrs.field(default=100, init=False)

    def _declared(self, resource: Any) -> bool:
        return any(declared == resource for declared in self.resources)

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _stored(self, resource: Any, namespace: str | None, name: str | None) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if name is None or key not in self.objects or self.objects[key].deleted:  # type: ignore[operator]  # kmock types the store loosely
            return None
        return self.objects[key].raw

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is None:
            return await super()._handle(request)
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        for fault in self.faults:
            if fault.matches(method, res.plural, request.name):
                fault.hits += 1
                raise KubernetesError(
                    status=fault.status,
                    reason=fault.reason,
                    message=fault.message,
                    details=fault.details or {"kind": res.plural},
                )
        if res.plural is not None and request.action is not None and not self._declared(res):
            raise KubernetesError(
                status=404,
                reason="NotFound",
                message="the server could not find the requested resource",
                details={"group": res.group, "kind": res.plural},
            )
        data = request.data if isinstance(request.data, dict) else None
        if request.action == action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta.update(
                uid=str(uuid.uuid4()), resourceVersion=self._next_revision(), generation=1, creationTimestamp=_now()
            )
            response = await super()._handle(request)
            response.set_status(201)
            return response
        if request.action == action.UPDATE and data is not None:
            current = self._stored(res, request.namespace, request.name)
            if current is not None:
                sent = (data.get("metadata") or {}).get("resourceVersion")
                live = current.get("metadata", {}).get("resourceVersion")
                if sent is not None and sent != live:
                    raise KubernetesError(
                        status=409,
                        reason="Conflict",
                        message=(
                            f'Operation cannot be fulfilled on {res.plural} "{request.name}": the object has '
                            "been modified; please apply your changes to the latest version and try again"
                        ),
                        details={"name": request.name, "kind": res.plural},
                    )
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = self._next_revision()
                if "spec" in data and request.subresource is None:
                    meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        return await super()._handle(request)


@dataclass
class Cluster:
    """The running emulator, its URL, and thread-safe helpers for tests."""

    emulator: ApiServerEmulator
    url: str
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the emulator's event loop (where its state lives) and return its result."""

        async def _run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(timeout=10)

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def install_dgd_crd(self, version: str = "v1alpha1") -> None:
        """Serve DynamoGraphDeployments at `version` too (the fixture serves v1alpha1)."""
        self.call(
            lambda: self.emulator.resources.__setitem__(
                DGD_RESOURCE.replace("v1alpha1", version),
                {  # type: ignore[assignment]  # a plain dict is what kmock reads
                    "kind": "DynamoGraphDeployment",
                    "singular": "dynamographdeployment",
                    "namespaced": True,
                    "shortnames": ["dgd"],
                    "verbs": ["get", "list", "create", "patch", "delete"],
                    "subresources": ["status"],
                },
            )
        )

    def fail(self, status: int, reason: str, message: str, **match: Any) -> Fault:
        fault = Fault(status=status, reason=reason, message=message, **match)
        self.call(lambda: self.emulator.faults.append(fault))
        return fault

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        def _get() -> dict[str, Any] | None:
            try:
                obj = self.emulator.objects[resource, namespace, name]
            except KeyError:
                return None
            return None if obj.deleted else copy.deepcopy(obj.raw)

        return self.call(_get)

    def versions(self, resource: str, namespace: str, name: str) -> int:
        """How many versions the object has had (each create or patch adds one)."""
        return self.call(
            lambda: len([v for v in self.emulator.objects[resource, namespace, name].history if v is not None])
        )

    def requests(self, method: str | None = None) -> list[Any]:
        def _list() -> list[Any]:
            reqs = list(self.emulator)  # a KMock handler iterates over the requests it served
            if method:
                reqs = [r for r in reqs if str(getattr(r.method, "value", r.method)).upper() == method]
            return reqs

        return self.call(_list)

    def set_status(self, namespace: str, name: str, status: dict[str, Any], resource: str = DGD_RESOURCE) -> None:
        """What the Dynamo operator would do: replace the object's status."""

        def _set() -> None:
            obj = self.emulator.objects[resource, namespace, name]
            obj.patch({"status": None})
            obj.patch({"status": status})

        self.call(_set)


def ready_status(
    generation: int = 1, ready: bool = True, state: str = "successful", message: str = "All resources are ready"
) -> dict[str, Any]:
    """A DynamoGraphDeployment status as the operator writes it."""
    return {
        "state": state,
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "all_resources_are_ready" if ready else "some_resources_are_not_ready",
                "message": message,
                "lastTransitionTime": _now(),
                "observedGeneration": generation,
            }
        ],
    }


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh emulated API server with ConfigMaps and the DynamoGraphDeployment CRD installed.

    Tests that need the CRD missing remove it: `cluster.call(lambda: cluster.emulator.resources.clear())`.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: dict[str, asyncio.Event] = {}
    holder: dict[str, Any] = {}

    async def _serve() -> None:
        emulator = ApiServerEmulator()
        emulator.resources[CONFIGMAP_RESOURCE] = {  # type: ignore[assignment]  # a plain dict is what kmock reads
            "kind": "ConfigMap",
            "singular": "configmap",
            "namespaced": True,
            "verbs": ["get", "list", "create", "patch", "delete"],
        }
        stop["event"] = asyncio.Event()
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            holder["emulator"], holder["url"] = emulator, f"http://127.0.0.1:{server.port}"
            started.set()
            await stop["event"].wait()

    def _thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_serve())
        except BaseException as exc:  # surface start-up failures to the waiting test
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=_thread, name="kube-emulator", daemon=True)
    thread.start()
    if not started.wait(timeout=20) or "error" in holder:
        raise RuntimeError(f"Kubernetes emulator did not start: {holder.get('error')!r}")
    cl = Cluster(emulator=holder["emulator"], url=holder["url"], loop=loop)
    cl.install_dgd_crd()
    try:
        yield cl
    finally:
        loop.call_soon_threadsafe(stop["event"].set)
        thread.join(timeout=10)
        loop.close()
