"""The Pod Security Standards' "restricted" profile as a check of pod specs, and the pods an Argo
WorkflowTemplate creates, for tests of generated and rendered manifests.

`restricted_violations(pod)` applies the rules of the profile (baseline and restricted, as in
https://kubernetes.io/docs/concepts/security/pod-security-standards/, policy version 1.30+) to a
pod spec, plus slaprof's own rule that every container's root filesystem is read-only.
`workflow_pods(wt)` builds the pod spec of every container or script template the way Argo's
controller does (the workflow's pod-level fields, the template's, its podSpecPatch with the
parameters' defaults); Argo adds its own init and wait containers, with a restricted security
context of its own (Argo's MinimalCtrSC), which are not part of the manifest.
"""

from __future__ import annotations

import json
import re
from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(field) or []:
            out.append((f"{field}[{c.get('name', '?')}]", c))
    return out


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile (and read-only roots) that `pod` (a pod spec) breaks."""
    bad: list[str] = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            bad.append(f"{field} is true")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad.append(f"volume {volume.get('name')} is of a type restricted does not allow: {sorted(kinds)}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl.get('name')} is not a safe sysctl")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad.append(f"pod seccompProfile {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser is 0")
    if (psc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
        bad.append("pod seLinuxOptions.type is not allowed")
    if (psc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        bad.append("pod appArmorProfile is not allowed")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("pod windowsOptions.hostProcess is true")
    for where, c in _containers(pod):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{where}: adds capabilities {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            bad.append(f"{where}: runAsNonRoot is not true (neither on the container nor the pod)")
        if sc.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and pod_seccomp is None:
            bad.append(f"{where}: no seccompProfile (neither on the container nor the pod)")
        elif seccomp not in (None, "RuntimeDefault", "Localhost"):
            bad.append(f"{where}: seccompProfile {seccomp}")
        if (sc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
            bad.append(f"{where}: seLinuxOptions.type is not allowed")
        if sc.get("procMount") not in (None, "Default"):
            bad.append(f"{where}: procMount {sc.get('procMount')}")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad.append(f"{where}: appArmorProfile is not allowed")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{where}: windowsOptions.hostProcess is true")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("readOnlyRootFilesystem") is not True:  # slaprof's rule, stricter than the profile
            bad.append(f"{where}: readOnlyRootFilesystem is not true")
    return bad


# ---------------------------------------------------------------------------
# the pods of a WorkflowTemplate
# ---------------------------------------------------------------------------
def _defaults(wt: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p.get("value", "") for p in wt["spec"].get("arguments", {}).get("parameters", [])}


def _patched(pod: dict[str, Any], patch_text: str, params: dict[str, str]) -> dict[str, Any]:
    """The pod after a podSpecPatch (strategic merge: containers by name, maps merged), with the
    workflow parameters' defaults and a GPU count substituted."""
    text = re.sub(r"\{\{workflow\.parameters\.([\w-]+)\}\}", lambda m: params[m.group(1)], patch_text)
    patch = json.loads(text.replace("{{inputs.parameters.gpus}}", "1"))

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over

    out = dict(pod)
    for key, value in patch.items():
        if key in ("containers", "initContainers"):
            by_name = {c["name"]: c for c in out.get(key, [])}
            for c in value:
                by_name[c["name"]] = merge(by_name.get(c["name"], {}), c)
            out[key] = list(by_name.values())
        else:
            out[key] = merge(out.get(key), value)
    return out


def workflow_pods(wt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """template name -> the pod spec Argo creates for it (without Argo's own containers)."""
    spec = wt["spec"]
    pods: dict[str, dict[str, Any]] = {}
    for t in spec["templates"]:
        main = t.get("script") or t.get("container")
        if main is None:
            continue
        main = {k: v for k, v in main.items() if k != "source"} | {"name": "main"}
        pod: dict[str, Any] = {
            "serviceAccountName": t.get("serviceAccountName", spec.get("serviceAccountName")),
            "automountServiceAccountToken": t.get(
                "automountServiceAccountToken", spec.get("automountServiceAccountToken")
            ),
            "securityContext": t.get("securityContext", spec.get("securityContext")),
            "hostNetwork": spec.get("hostNetwork"),
            "volumes": list(spec.get("volumes") or []) + list(t.get("volumes") or []),
            "initContainers": list(t.get("initContainers") or []),
            "containers": [main, *(t.get("sidecars") or [])],
        }
        if t.get("podSpecPatch"):
            pod = _patched(pod, t["podSpecPatch"], _defaults(wt))
        pods[t["name"]] = pod
    return pods


def manifest_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`<kind>/<name>` -> pod spec of every workload a chart renders (Deployments, Jobs, Pods ...),
    and `WorkflowTemplate/<name>/<template>` for the pods of each WorkflowTemplate."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "WorkflowTemplate":
            for template, pod in workflow_pods(doc).items():
                out[f"{kind}/{name}/{template}"] = pod
        elif kind == "Pod":
            out[f"{kind}/{name}"] = doc["spec"]
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            out[f"{kind}/{name}"] = doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            out[f"{kind}/{name}"] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out
