"""DAG step `apply`: create or update the rendered manifests in a cluster and wait until the
DynamoGraphDeployment is ready.

Inputs: the run's `dgd.yaml` (the planner ConfigMap(s), then the DGD), a namespace, optionally an
owner reference. Outputs: the objects in the cluster; `run_step` returns what happened to each.

Applying is idempotent and needs no server-side apply: each object is read, and only the fields
that differ from the file are sent as a JSON merge patch (none: nothing is written). Fields a
previous apply set and the file no longer has are removed, using the set of field paths recorded
in the annotation `slaprof/applied-fields` (the 3-way merge `kubectl apply` does, without storing
a copy of the object). Patches carry the resourceVersion they were computed from, so a concurrent
writer causes a 409 and a retry instead of a lost update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from slaprof.steps.core.errors import UserError

DGD_GROUP, DGD_VERSION, DGD_PLURAL, DGD_KIND = (
    "nvidia.com",
    "v1alpha1",
    "dynamographdeployments",
    "DynamoGraphDeployment",
)
APPLIED_FIELDS_ANNOTATION = "slaprof/applied-fields"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RUN_LABEL = "slaprof.io/run"  # the run that created the object; kept as it is by later updates
RECORD_KEY = "applied.json"  # what `run_step` did to each object, for the exit handler
READY_STATE = "successful"
MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 3

Action = Literal["created", "updated", "unchanged"]
Progress = Callable[[str], None]


class OwnerReference(BaseModel):
    """The object the applied manifests belong to (deleted with it), e.g. a DGDR or a Workflow."""

    apiVersion: str = Field(..., min_length=1)
    kind: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    uid: str = Field(..., min_length=1)
    controller: bool | None = None
    blockOwnerDeletion: bool | None = None

    @classmethod
    def parse(cls, text: str) -> OwnerReference:
        """`apiVersion=nvidia.com/v1alpha1,kind=DynamoGraphDeploymentRequest,name=x,uid=...`"""
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise UserError(
                    f"invalid owner reference {text!r}: expected key=value pairs separated by commas "
                    "(apiVersion=...,kind=...,name=...,uid=...)"
                )
            fields[key.strip()] = value.strip()
        missing = [k for k in ("apiVersion", "kind", "name", "uid") if not fields.get(k)]
        if missing:
            raise UserError(
                f"invalid owner reference {text!r}: missing {', '.join(missing)} "
                "(give apiVersion=...,kind=...,name=...,uid=...)"
            )
        for flag in ("controller", "blockOwnerDeletion"):
            if flag in fields:
                fields[flag] = str(fields[flag]).lower() in ("1", "true", "yes")
        unknown = set(fields) - set(cls.model_fields)
        if unknown:
            raise UserError(f"invalid owner reference {text!r}: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**fields)


class AppliedObject(BaseModel):
    kind: str
    name: str
    namespace: str
    action: Action
    # The object as this apply left it: uid, and generation (objects with a spec) or resourceVersion,
    # so that undoing can tell whether someone changed it since.
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    # "updated" only: a merge patch that puts back every value this apply replaced (None = absent before)
    restore: dict[str, Any] | None = None

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


class ApplyResult(BaseModel):
    objects: list[AppliedObject]
    ready: bool | None = None  # None: not waited for
    state: str | None = None  # the DGD's status.state when the wait ended

    def summary(self) -> str:
        return ", ".join(f"{o.kind}/{o.name} {o.action}" for o in self.objects)

    def merged_into(self, earlier: ApplyResult | None) -> ApplyResult:
        """This result as the record of a run that may have applied before (a retried step): what the
        run's first change to an object was (created, or the values it replaced) is kept."""
        if earlier is None:
            return self
        before = {o.key(): o for o in earlier.objects if o.action != "unchanged"}
        objects = []
        for obj in self.objects:
            first = before.pop(obj.key(), None)
            if first is not None and first.uid == obj.uid:
                obj = obj.model_copy(update={"action": first.action, "restore": first.restore})
            objects.append(obj)
        # objects an earlier attempt changed and this one did not reach yet stay on record
        return ApplyResult(objects=list(before.values()) + objects, ready=self.ready, state=self.state)


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------
def load_manifests(text: str, origin: str = "manifest") -> list[dict[str, Any]]:
    """The documents of a multi-document YAML, empty ones skipped, each checked for kind and name."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UserError(f"{origin} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not docs:
        raise UserError(f"{origin} holds no documents; render one with `slaprof render`")
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise UserError(f"{origin}: document {i} is not a Kubernetes object (needs apiVersion and kind)")
        if not (doc.get("metadata") or {}).get("name"):
            raise UserError(f"{origin}: document {i} ({doc['kind']}) has no metadata.name")
    return docs


@dataclass(frozen=True)
class _Kind:
    """How to reach one kind through the official client."""

    kind: str
    group: str  # "" for the core API
    version: str
    plural: str
    # whether changes to the object show in metadata.generation (it has a spec; its status, written
    # by an operator, changes only the resourceVersion)
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: dict[str, _Kind] = {
    "ConfigMap": _Kind("ConfigMap", "", "v1", "configmaps"),
    DGD_KIND: _Kind(DGD_KIND, DGD_GROUP, DGD_VERSION, DGD_PLURAL, has_generation=True),
}
# Dynamo 1.4+ DGDs (steps/dynamo/dynamo_releases.py); readiness is still read through v1alpha1, which those
# releases serve too.
_APPLIED_ALSO = (_Kind(DGD_KIND, DGD_GROUP, "v1beta1", DGD_PLURAL),)


def _kind_of(doc: dict[str, Any]) -> _Kind:
    known = [*KINDS.values(), *_APPLIED_ALSO]
    kind = next((k for k in known if (k.kind, k.api_version) == (doc["kind"], doc["apiVersion"])), None)
    if kind is None:
        allowed = ", ".join(f"{k.api_version} {k.kind}" for k in known)
        raise UserError(
            f"cannot apply {doc['apiVersion']} {doc['kind']} {doc['metadata']['name']!r}: slaprof applies {allowed}"
        )
    return kind


# ---------------------------------------------------------------------------
# 3-way merge patch
# ---------------------------------------------------------------------------
_MISSING = object()


def field_skeleton(obj: Any) -> Any:
    """The field paths of an object: nested dicts with every non-dict leaf replaced by 0."""
    if isinstance(obj, dict):
        return {k: field_skeleton(v) for k, v in obj.items()}
    return 0


def merge_patch(previous: dict[str, Any], desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch that turns `live` into `desired` for the fields we manage.

    `previous` is the field skeleton of what was applied last time: keys it has and `desired`
    lacks are deleted (set to None); keys nobody applied (e.g. written by an operator) are kept.
    Lists and scalars are replaced whole, as merge patch does.
    """
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = live.get(key, _MISSING)
        if isinstance(want, dict) and isinstance(have, dict):
            earlier = previous.get(key)
            sub = merge_patch(earlier if isinstance(earlier, dict) else {}, want, have)
            if sub:
                patch[key] = sub
        elif have is _MISSING or have != want:
            patch[key] = want
    for key in previous:
        if key not in desired and key in live:
            patch[key] = None
    return patch


def reverse_patch(patch: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that undoes `patch` on `live`: every key it sets back to its old value, or
    removed (None) where `live` did not have it."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        before = live.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(before, dict):
            out[key] = reverse_patch(value, before)
        else:
            out[key] = None if before is _MISSING else before
    return out


def _prepare(doc: dict[str, Any], namespace: str, owner: OwnerReference | None) -> dict[str, Any]:
    """The object as we want it in the cluster: namespace, owner, managed-by label, applied fields."""
    desired = json.loads(json.dumps(doc))  # deep copy, plain JSON types only
    desired.pop("status", None)  # status belongs to the operator
    meta = desired.setdefault("metadata", {})
    for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        meta.pop(server_field, None)
    doc_ns = meta.get("namespace")
    if doc_ns and doc_ns != namespace:
        raise UserError(
            f"{doc['kind']} {meta['name']!r} is for namespace {doc_ns!r} but --namespace is "
            f"{namespace!r}: pass --namespace {doc_ns} or remove metadata.namespace from the file"
        )
    meta["namespace"] = namespace
    meta.setdefault("labels", {})[MANAGED_BY_LABEL] = "slaprof"
    if owner is not None:
        refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != owner.uid]
        meta["ownerReferences"] = refs + [owner.model_dump(exclude_none=True)]
    annotations = meta.setdefault("annotations", {})
    annotations.pop(APPLIED_FIELDS_ANNOTATION, None)
    annotations[APPLIED_FIELDS_ANNOTATION] = json.dumps(field_skeleton(desired), separators=(",", ":"), sort_keys=True)
    return desired


def _previous_fields(live: dict[str, Any]) -> dict[str, Any]:
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_FIELDS_ANNOTATION)
    try:
        previous = json.loads(text) if text else {}
    except ValueError:
        previous = {}
    return previous if isinstance(previous, dict) else {}


# ---------------------------------------------------------------------------
# API access
# ---------------------------------------------------------------------------
def _api_error_message(exc: Any) -> str:
    """The server's own message (and field causes) from an ApiException body."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(getattr(exc, "reason", "") or exc).strip()
    message = body.get("message") or getattr(exc, "reason", "") or ""
    causes = (body.get("details") or {}).get("causes") or []
    extra = "; ".join(
        f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
        for c in causes
        if c.get("message") and c.get("message") not in message
    )
    return f"{message} ({extra})" if extra else message


class _Objects:
    """get / create / patch of one kind in one namespace, as plain dicts."""

    def __init__(self, api_client: Any, kind: _Kind, namespace: str) -> None:
        from kubernetes import client

        self.kind, self.namespace, self.api_client = kind, namespace, api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _plain(self, obj: Any) -> dict[str, Any] | None:
        if obj is None or isinstance(obj, dict):
            return obj
        return self.api_client.sanitize_for_serialization(obj)

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        k = self.kind
        try:
            if not k.group:
                return self._plain(self.core.read_namespaced_config_map(name, self.namespace))
            return self._plain(
                self.custom.get_namespaced_custom_object(k.group, k.version, self.namespace, k.plural, name)
            )
        except ApiException as exc:
            # a missing object; a missing resource type (no CRD) is caught by discovery beforehand
            if exc.status == 404:
                return None
            raise

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        k = self.kind
        if not k.group:
            return self._plain(self.core.create_namespaced_config_map(self.namespace, body))  # type: ignore[arg-type]
        return self._plain(
            self.custom.create_namespaced_custom_object(k.group, k.version, self.namespace, k.plural, body)
        )

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        k = self.kind
        if not k.group:
            return self._plain(
                self.core.patch_namespaced_config_map(name, self.namespace, body, _content_type=MERGE_PATCH)
            )
        return self._plain(
            self.custom.patch_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, name, body, _content_type=MERGE_PATCH
            )
        )

    def delete(self, name: str, uid: str) -> None:
        """Delete `name` only while it is still the object with `uid` (a precondition the server checks)."""
        from kubernetes import client

        k = self.kind
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        if not k.group:
            self.core.delete_namespaced_config_map(name, self.namespace, body=options)
        else:
            self.custom.delete_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, name, body=options
            )


def kube_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient: the given kubeconfig, else in-cluster credentials, else ~/.kube/config."""
    import os

    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        config.load_incluster_config()
        return client.ApiClient()
    except (ConfigException, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise UserError(
            f"cannot load Kubernetes credentials from {where}: {exc}; pass --kubeconfig FILE or run inside a cluster"
        ) from None


def _crd_installed(api_client: Any) -> bool | None:
    """Whether the DGD resource is served (None: discovery itself was refused)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        found = client.CustomObjectsApi(api_client).get_api_resources(DGD_GROUP, DGD_VERSION)
    except ApiException as exc:
        return False if exc.status == 404 else None
    return any(r.name == DGD_PLURAL for r in (found.resources or []))


def _explain(exc: Any, kind: _Kind, name: str, namespace: str, verb: str) -> UserError:
    """An ApiException as an error a user can act on."""
    what = f"{kind.kind} {namespace}/{name}"
    message = _api_error_message(exc)
    status = getattr(exc, "status", None)
    if status == 401:
        return UserError(
            f"not authenticated to the Kubernetes API while trying to {verb} {what}: {message}; "
            "refresh your kubeconfig credentials"
        )
    if status == 403:
        return UserError(
            f"forbidden to {verb} {what}: {message}; ask a cluster admin for a Role granting "
            f"get, create and patch on {kind.plural}"
            + (f".{kind.group}" if kind.group else "")
            + f" in namespace {namespace}"
        )
    if status == 404:
        if kind.group:
            return UserError(
                f"{kind.plural}.{kind.group}/{kind.version} is not served by this cluster "
                f"({message}): install the Dynamo operator and its CRDs, or check the namespace "
                f"{namespace!r} exists"
            )
        return UserError(
            f"cannot {verb} {what}: {message}; check that namespace {namespace!r} exists "
            f"(kubectl create namespace {namespace})"
        )
    if status == 409:
        return UserError(
            f"conflict while trying to {verb} {what}: {message}; another client kept changing it "
            f"during {CONFLICT_RETRIES} attempts; try again"
        )
    if status == 422:
        return UserError(
            f"the cluster rejected {what} as invalid: {message}; fix the manifest "
            "(or the --base DGD it came from) and apply again"
        )
    return UserError(f"cannot {verb} {what}: HTTP {status}: {message}")


def _keep_run_label(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """`desired` for an object that already exists: its run label stays what it is (the run that
    created it), so a later run never claims, and its exit handler never removes, what it did not make."""
    labels = (desired.get("metadata") or {}).get("labels") or {}
    if RUN_LABEL not in labels:
        return desired
    out = json.loads(json.dumps(desired))
    live_run = ((live.get("metadata") or {}).get("labels") or {}).get(RUN_LABEL)
    if live_run is None:
        del out["metadata"]["labels"][RUN_LABEL]
    else:
        out["metadata"]["labels"][RUN_LABEL] = live_run
    return out


def _after(obj: dict[str, Any] | None, kind: str, name: str, namespace: str, action: Action) -> AppliedObject:
    meta = (obj or {}).get("metadata") or {}
    generation = meta.get("generation")
    return AppliedObject(
        kind=kind,
        name=name,
        namespace=namespace,
        action=action,
        uid=meta.get("uid"),
        generation=int(generation) if generation is not None else None,
        resource_version=meta.get("resourceVersion"),
    )


def _apply_one(api_client: Any, desired: dict[str, Any], namespace: str) -> AppliedObject:
    from kubernetes.client.exceptions import ApiException

    kind = _kind_of(desired)
    name = desired["metadata"]["name"]
    objects = _Objects(api_client, kind, namespace)
    verb = "read"
    for attempt in range(CONFLICT_RETRIES):
        try:
            verb = "read"
            live = objects.get(name)
            if live is None:
                verb = "create"
                try:
                    created = objects.create(desired)
                except ApiException as exc:
                    if exc.status == 409:  # created by someone else meanwhile: patch it instead
                        continue
                    raise
                return _after(created or objects.get(name), kind.kind, name, namespace, "created")
            wanted = _keep_run_label(desired, live)
            patch = merge_patch(_previous_fields(live), wanted, live)
            if not patch:
                return _after(live, kind.kind, name, namespace, "unchanged")
            restore = reverse_patch(patch, live)
            rv = (live.get("metadata") or {}).get("resourceVersion")
            if rv:
                patch.setdefault("metadata", {})["resourceVersion"] = rv
            verb = "update"
            updated = objects.patch(name, patch)
            done = _after(updated or objects.get(name), kind.kind, name, namespace, "updated")
            done.restore = restore
            return done
        except ApiException as exc:
            if exc.status == 409 and attempt + 1 < CONFLICT_RETRIES:
                continue
            raise _explain(exc, kind, name, namespace, verb) from None
    raise UserError(
        f"conflict while trying to {verb} {kind.kind} {namespace}/{name}: it kept changing during "
        f"{CONFLICT_RETRIES} attempts; try again"
    )


def apply_manifests(
    docs: list[dict[str, Any]],
    namespace: str,
    wait: bool = False,
    timeout: float = 1800.0,
    owner: OwnerReference | dict[str, Any] | None = None,
    api_client: Any = None,
    progress: Progress | None = None,
    poll_interval: float = 10.0,
    record: Callable[[ApplyResult], None] | None = None,
) -> ApplyResult:
    """Create or update each document in order (ConfigMaps before the DGD that mounts them);
    optionally wait until the DGD is ready. `record` gets the result so far after every object
    and once more when the wait ends, so what was done is known even if this process dies."""
    from urllib3.exceptions import HTTPError

    say = progress or (lambda _line: None)
    if isinstance(owner, dict):
        owner = OwnerReference.model_validate(owner)
    for doc in docs:
        _kind_of(doc)  # refuse kinds we do not know before touching the cluster
    prepared = [_prepare(doc, namespace, owner) for doc in docs]
    client = api_client or kube_api_client()
    host = getattr(getattr(client, "configuration", None), "host", "the cluster")
    try:
        if any(d["kind"] == DGD_KIND for d in prepared) and _crd_installed(client) is False:
            raise UserError(
                f"the cluster at {host} does not serve {DGD_PLURAL}.{DGD_GROUP}/{DGD_VERSION} "
                "(the DynamoGraphDeployment CRD is not installed): install the Dynamo platform "
                "(operator and CRDs) first; nothing was applied"
            )
        keep = record or (lambda _result: None)
        result = ApplyResult(objects=[])
        for desired in prepared:
            done = _apply_one(client, desired, namespace)
            say(f"{done.kind}/{done.name} {done.action} in namespace {namespace}")
            result.objects.append(done)
            keep(result)
        dgds = [d for d in prepared if d["kind"] == DGD_KIND]
        if wait and dgds:
            status = wait_until_ready(
                client,
                dgds[-1]["metadata"]["name"],
                namespace,
                timeout=timeout,
                poll_interval=poll_interval,
                progress=say,
            )
            result.ready, result.state = True, status.get("state")
            keep(result)
        return result
    except HTTPError as exc:
        raise UserError(
            f"cannot reach the Kubernetes API at {host} ({type(exc).__name__}): check the "
            "kubeconfig's server address and your network"
        ) from None


# ---------------------------------------------------------------------------
# readiness
# ---------------------------------------------------------------------------
def _ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return {}


def readiness(obj: dict[str, Any]) -> tuple[bool, str]:
    """(ready, one-line description) of a DGD: Ready condition True, state `successful`, and the
    status written for the current generation (an older status may describe the previous spec)."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    cond = _ready_condition(status)
    state = status.get("state") or "no status yet"
    observed = status.get("observedGeneration", cond.get("observedGeneration"))
    current = generation is None or observed is None or int(observed) >= int(generation)
    ready = cond.get("status") == "True" and status.get("state") == READY_STATE and current
    line = f"state {state}"
    if cond:
        line += f", Ready={cond.get('status')}"
        detail = cond.get("message") or cond.get("reason")
        if detail:
            line += f" ({detail})"
    if not current:
        line += f", status is for generation {observed}, waiting for {generation}"
    return ready, line


def wait_until_ready(
    api_client: Any,
    name: str,
    namespace: str,
    timeout: float = 1800.0,
    poll_interval: float = 10.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Poll the DGD until it is ready; report each change of its state. Returns its status."""
    from kubernetes.client.exceptions import ApiException

    say = progress or (lambda _line: None)
    kind = KINDS[DGD_KIND]
    objects = _Objects(api_client, kind, namespace)
    start = time.monotonic()
    last_line = ""
    while True:
        try:
            obj = objects.get(name)
        except ApiException as exc:
            raise _explain(exc, kind, name, namespace, "read") from None
        if obj is None:
            raise UserError(
                f"{DGD_KIND} {namespace}/{name} disappeared while waiting for it to become ready "
                "(deleted by someone else?)"
            )
        ready, line = readiness(obj)
        elapsed = time.monotonic() - start
        if line != last_line or ready:
            say(f"[{elapsed:5.0f}s] {DGD_KIND} {name}: {line}")
            last_line = line
        if ready:
            return obj.get("status") or {}
        if elapsed >= timeout:
            raise UserError(
                f"{DGD_KIND} {namespace}/{name} not ready after {timeout:g} s ({line}); see "
                f"`kubectl describe dgd {name} -n {namespace}` and its pods "
                f"(`kubectl get pods -n {namespace} -l nvidia.com/dynamo-graph-deployment-name={name}`), "
                "or wait longer with --timeout"
            )
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)))


# ---------------------------------------------------------------------------
# DAG step
# ---------------------------------------------------------------------------
def run_step(
    store: Any,
    namespace: str | None = None,
    wait: bool = True,
    timeout: float = 1800.0,
    owner: OwnerReference | dict[str, Any] | None = None,
    api_client: Any = None,
    progress: Progress | None = None,
    poll_interval: float = 10.0,
) -> ApplyResult:
    """Apply the run's dgd.yaml; the namespace defaults to the request's deployment namespace.

    What happened to each object is written to RECORD_KEY as it happens, merged with the record of
    an earlier attempt of the same run (a retried pod): that is all the exit handler may undo."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import Layout, read_model, write_model

    if namespace is None:
        namespace = read_model(store, Layout.REQUEST, ProfileRequest).deployment.namespace
    docs = load_manifests(store.get_bytes(Layout.DGD).decode(), origin=store.uri(Layout.DGD))
    earlier = read_model(store, RECORD_KEY, ApplyResult) if store.exists(RECORD_KEY) else None
    return apply_manifests(
        docs,
        namespace,
        wait=wait,
        timeout=timeout,
        owner=owner,
        api_client=api_client,
        progress=progress,
        poll_interval=poll_interval,
        record=lambda result: write_model(store, RECORD_KEY, result.merged_into(earlier)),
    )
