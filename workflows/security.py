"""Pod Security "restricted" for every pod of the `slaprof-profile` WorkflowTemplate, and who each pod is.

Kubernetes concepts: Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
and Argo's executor service account (https://argo-workflows.readthedocs.io/en/latest/workflow-rbac/).

- Every pod runs as the image's numeric non-root user with the RuntimeDefault seccomp profile
  (`pod_security_context`, set once on the workflow); every container slaprof declares drops all
  capabilities, cannot escalate privileges and has a read-only root filesystem
  (`container_security_context`). Argo's own init and wait containers get Argo's equivalent.
- A read-only root needs writable places: `/tmp` (which holds Hera's outputs folder) and `HOME`
  are emptyDir volumes (`writable_volumes`); engines also write the model cache (`MODEL_CACHE`).
- Identities: pods run as the workflow's service account without its token
  (automountServiceAccountToken false); Argo mounts that account's token into its executor
  containers only, to record outputs. `apply` and `cleanup`, the only steps that talk to the
  Kubernetes API, run as the deployer account with its token (`deployer_identity`).
"""

from __future__ import annotations

from typing import Any

from hera.workflows import EmptyDirVolume, Env
from hera.workflows.models import Capabilities, ExecutorConfig, PodSecurityContext, SeccompProfile, SecurityContext

from slaprof.workflows.params import WorkflowSettings

USER_ID = 10001  # the slaprof image's user (images/slaprof/Dockerfile)
HOME_DIR = "/home/slaprof"
TMP_DIR = "/tmp"  # also holds Hera's outputs folder (slaprof.workflows.tasks.DEFAULT_OUTPUTS)
MODEL_CACHE = "/opt/model-cache"  # HF_HOME of engines: weights go to a volume, not the container layer
MODEL_CACHE_VOLUME = "model-cache"  # emptyDir here; the chart's bench.modelCache.existingClaim makes it a PVC


def pod_security_context() -> PodSecurityContext:
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=USER_ID,
        run_as_group=USER_ID,
        fs_group=USER_ID,  # emptyDir and PVC files are group-writable for the pod's user
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> SecurityContext:
    return SecurityContext(
        allow_privilege_escalation=False,
        capabilities=Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
        run_as_non_root=True,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def writable_volumes() -> list[EmptyDirVolume]:
    """emptyDir volumes for what a container with a read-only root still writes."""
    return [EmptyDirVolume(name="tmp", mount_path=TMP_DIR), EmptyDirVolume(name="home", mount_path=HOME_DIR)]


def writable_env() -> list[Env]:
    """HOME on its volume, whatever the image says (an engine image's HOME may be /root)."""
    return [Env(name="HOME", value=HOME_DIR)]


def executor(settings: WorkflowSettings) -> ExecutorConfig:
    """Argo's init and wait containers record outputs (workflowtaskresults) with this account's token."""
    return ExecutorConfig(service_account_name=settings.service_account)


def deployer_identity(settings: WorkflowSettings) -> dict[str, Any]:
    """Template fields of the steps that create, update or delete objects in the cluster."""
    return {"service_account_name": settings.deployer_service_account, "automount_service_account_token": True}
