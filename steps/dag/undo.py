"""DAG exit handler `cleanup`: undo what a run that did not succeed applied to the cluster.

Input: the run's record of its apply (`slaprof.steps.dag.apply.RECORD_KEY`, written object by object while
`apply` runs). Output: one line per object saying what was done. The rules:

- a run whose apply completed (the DGD became ready) is left alone: a later failure, such as a
  drift verdict in `record`, says nothing against a deployment that works;
- an object the run created is deleted, and only while it is still that object (same uid);
- an object the run updated gets back the values the update replaced, and only while nobody has
  changed it since (same generation, or resourceVersion for objects without a spec), so the
  deployment (and its planner data) that served before the run serves again;
- nothing else is touched: objects are found by the names in the record, never by listing or by
  label, so an object the run did not create is never deleted.
"""

from __future__ import annotations

from typing import Any

from slaprof.steps.dag.apply import KINDS, RECORD_KEY, AppliedObject, ApplyResult, _explain, _Objects, kube_api_client


def _undo_one(api_client: Any, obj: AppliedObject) -> str:
    from kubernetes.client.exceptions import ApiException

    kind = KINDS[obj.kind]
    what = f"{obj.kind} {obj.namespace}/{obj.name}"
    objects = _Objects(api_client, kind, obj.namespace)
    verb = "read"
    try:
        live = objects.get(obj.name)
        if live is None:
            return f"{what}: already gone"
        meta = live.get("metadata") or {}
        if obj.uid and meta.get("uid") != obj.uid:
            return f"{what}: replaced by another object since this run applied it; left alone"
        if obj.action == "created":
            verb = "delete"
            objects.delete(obj.name, meta["uid"])
            return f"{what}: deleted (this run created it)"
        if kind.has_generation:
            changed = obj.generation is not None and meta.get("generation") != obj.generation
        else:
            changed = obj.resource_version is not None and meta.get("resourceVersion") != obj.resource_version
        if changed:
            return f"{what}: changed by someone else since this run updated it; left alone"
        patch = dict(obj.restore or {})
        patch["metadata"] = {**(patch.get("metadata") or {}), "resourceVersion": meta.get("resourceVersion")}
        verb = "update"
        objects.patch(obj.name, patch)
        return f"{what}: restored what this run's update replaced"
    except ApiException as exc:
        if exc.status == 404:
            return f"{what}: already gone"
        if exc.status == 409:
            return f"{what}: changed by someone else while being undone; left alone"
        raise _explain(exc, kind, obj.name, obj.namespace, verb) from None


def run_step(store: Any, api_client: Any = None) -> list[str]:
    """The exit handler's work for a run that did not succeed: lines saying what was done.

    Objects are undone newest first (the DGD before the ConfigMaps it mounts). Kubernetes API
    errors a user can act on (403 ...) are UserErrors; a connection error propagates, so the
    exit handler's retry tries again."""
    from slaprof.steps.core.store import read_model

    if not store.exists(RECORD_KEY):
        return ["nothing: the run applied nothing to the cluster"]
    record = read_model(store, RECORD_KEY, ApplyResult)
    if record.ready:
        return ["nothing: the deployment this run applied became ready, so it stays"]
    changed = [o for o in record.objects if o.action != "unchanged"]
    if not changed:
        return ["nothing: the run's apply changed nothing in the cluster"]
    client = api_client or kube_api_client()
    return [_undo_one(client, obj) for obj in reversed(changed)]
