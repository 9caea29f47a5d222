"""A `nvidia.com/v1alpha1` DynamoGraphDeployment (the `spec.services` map slaprof edits) in the
`nvidia.com/v1beta1` shape Dynamo 1.4+ writes (`spec.components`, each with a pod template).

The mapping follows the operator's own v1alpha1 -> v1beta1 conversion
(deploy/operator/api/v1alpha1/shared_spec_conversion.go): a worker's `subComponentType`
prefill/decode becomes its `type`; `resources`, `envs`, `envFromSecret` and service-level
`volumeMounts` move into the `main` container, with `extraPodSpec.mainContainer` on top (env and
volume mounts add up); the rest of `extraPodSpec` is the pod spec; `sharedMemory.size` becomes
`sharedMemorySize`. v1beta1 has no `spec.pvcs`: a PVC a service mounts becomes a pod volume.
A service key with no v1beta1 place is refused rather than dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from slaprof.steps.core.errors import UserError

API_VERSION = "nvidia.com/v1beta1"
MAIN = "main"
GPU_RESOURCE = "nvidia.com/gpu"
WORKER_ROLES = ("prefill", "decode")
# Service keys handled below; any other key of a base DGD's service stops the conversion.
_HANDLED = {
    "componentType",
    "subComponentType",
    "replicas",
    "multinode",
    "sharedMemory",
    "resources",
    "envs",
    "envFromSecret",
    "volumeMounts",
    "extraPodSpec",
    "livenessProbe",
    "readinessProbe",
}
_SPEC_RENAMES = {"envs": "env"}


def _resources(resources: dict[str, Any]) -> dict[str, Any]:
    """v1alpha1 `{limits: {gpu: "2", cpu, memory}}` -> Kubernetes resource lists."""
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        items = resources.get(kind) or {}
        native = {(GPU_RESOURCE if k == "gpu" else k): v for k, v in items.items() if k != "gpuType"}
        if native:
            out[kind] = native
    return out


def _merge_env(base: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {e.get("name") for e in extra}
    return [e for e in base if e.get("name") not in names] + extra


def _main_container(svc: dict[str, Any]) -> dict[str, Any]:
    main: dict[str, Any] = {"name": MAIN}
    if svc.get("resources"):
        main["resources"] = _resources(svc["resources"])
    if svc.get("envs"):
        main["env"] = copy.deepcopy(svc["envs"])
    if svc.get("envFromSecret"):
        main["envFrom"] = [{"secretRef": {"name": svc["envFromSecret"]}}]
    for probe in ("livenessProbe", "readinessProbe"):
        if svc.get(probe):
            main[probe] = copy.deepcopy(svc[probe])
    dedicated_mounts = [{"name": m["name"], "mountPath": m["mountPoint"]} for m in svc.get("volumeMounts") or []]
    given = copy.deepcopy((svc.get("extraPodSpec") or {}).get("mainContainer") or {})
    env = _merge_env(main.get("env", []), given.pop("env", []) or [])
    mounts = (given.pop("volumeMounts", []) or []) + dedicated_mounts
    main.update({k: v for k, v in given.items() if k != "name" and v not in (None, [], {})})
    if env:
        main["env"] = env
    if mounts:
        main["volumeMounts"] = mounts
    return main


def _component(name: str, svc: dict[str, Any], pvcs: set[str]) -> dict[str, Any]:
    unknown = sorted(set(svc) - _HANDLED)
    if unknown:
        raise UserError(
            f"service {name!r} of the DGD has {', '.join(unknown)}, which slaprof cannot carry into "
            f"{API_VERSION}; remove it from the base DGD or render for a Dynamo release before 1.4"
        )
    kind = svc.get("componentType", "")
    role = svc.get("subComponentType")
    out: dict[str, Any] = {"name": name, "type": role if kind == "worker" and role in WORKER_ROLES else kind}
    if "replicas" in svc:
        out["replicas"] = svc["replicas"]
    if svc.get("multinode"):
        out["multinode"] = copy.deepcopy(svc["multinode"])
    shm = svc.get("sharedMemory") or {}
    if shm.get("size") and not shm.get("disabled"):
        out["sharedMemorySize"] = shm["size"]
    pod = {k: copy.deepcopy(v) for k, v in (svc.get("extraPodSpec") or {}).items() if k != "mainContainer"}
    pod["containers"] = [_main_container(svc), *[c for c in pod.get("containers", []) if c.get("name") != MAIN]]
    volumes = pod.get("volumes") or []
    for mount in svc.get("volumeMounts") or []:
        if mount["name"] in pvcs and all(v.get("name") != mount["name"] for v in volumes):
            volumes.append({"name": mount["name"], "persistentVolumeClaim": {"claimName": mount["name"]}})
    if volumes:
        pod["volumes"] = volumes
    out["podTemplate"] = {"spec": pod}
    return out


def to_v1beta1(dgd: dict[str, Any]) -> dict[str, Any]:
    """The v1beta1 form of a v1alpha1 DGD (a new dict; the input is not changed)."""
    spec = dgd.get("spec") or {}
    created = [p.get("name") for p in spec.get("pvcs") or [] if p.get("create")]
    if created:
        raise UserError(
            f"the DGD asks the operator to create PVC {', '.join(map(str, created))}, which {API_VERSION} "
            "cannot express; create it beforehand and mark it create: false"
        )
    pvcs = {p["name"] for p in spec.get("pvcs") or [] if p.get("name")}
    out_spec: dict[str, Any] = {
        _SPEC_RENAMES.get(k, k): copy.deepcopy(v) for k, v in spec.items() if k not in ("services", "pvcs")
    }
    out_spec["components"] = [_component(n, s or {}, pvcs) for n, s in (spec.get("services") or {}).items()]
    return {
        "apiVersion": API_VERSION,
        "kind": dgd.get("kind", "DynamoGraphDeployment"),
        "metadata": copy.deepcopy(dgd.get("metadata") or {}),
        "spec": out_spec,
    }
