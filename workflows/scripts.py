"""Runner script templates: every task that runs slaprof code in the slaprof image.

Argo concept: script templates (https://argo-workflows.readthedocs.io/en/latest/fields/#scripttemplate),
built by Hera's runner constructor from the functions in `slaprof.workflows.tasks`. Shared here: the
image, the S3 environment, the pod labels, the restricted security context and its writable
volumes (`slaprof.workflows.security`), and the retry policy (transient errors only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hera.workflows import ConfigMapEnvFrom, Env, Resources, RetryStrategy, Script, SecretEnvFrom
from hera.workflows.models import Backoff, EnvVar, EnvVarSource, SecretKeySelector
from hera.workflows.script import RunnerScriptConstructor

from slaprof.workflows import security, tasks
from slaprof.workflows.params import RUN_LABEL, S3_CONFIGMAP, S3_SECRET, WorkflowSettings

HF_TOKEN_SECRET = "hf-token-secret"
RETRY_LIMIT = 3
# Waits between attempts: 20 s, 40 s, 80 s. No backoff.maxDuration: Argo counts it from the first
# attempt's start and gives later attempts that deadline too, so any value shorter than the
# attempts' own deadlines cuts a long step (bench, fit, apply) short. Each attempt is bounded by
# its template's timeout, the attempts by RETRY_LIMIT, the whole run by its activeDeadlineSeconds.
BACKOFF = Backoff(duration="20s", factor=2, cap="5m")


def transient_retry() -> RetryStrategy:
    """Retry pod-level errors (node lost, pod deleted, image pull) and exit code 75 (S3 or the
    Kubernetes API unreachable); a failed step (exit 1) or a bad request (exit 2) would fail the same way again."""
    return RetryStrategy(
        limit=RETRY_LIMIT,
        retry_policy="Always",
        expression=f"lastRetry.status == 'Error' || lastRetry.exitCode == '{tasks.TRANSIENT_EXIT}'",
        backoff=BACKOFF,
    )


def hf_token() -> EnvVar:
    """HF_TOKEN from the optional Secret hf-token-secret, for every container that reads the Hub
    (gated models' metadata in plan, tokenizers in bench, weights in the engine)."""
    return EnvVar(
        name="HF_TOKEN",
        value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=HF_TOKEN_SECRET, key="HF_TOKEN", optional=True)),
    )


def runner_env() -> list[Env]:
    return [
        Env(name="SLAPROF_RUN_ID", value="{{workflow.name}}"),
        Env(name="PYTHONUNBUFFERED", value="1"),
        *security.writable_env(),
    ]


def runner_env_from() -> list[Any]:
    """S3 endpoint and bucket (ConfigMap) and keys (Secret) for `slaprof.steps.core.store.open_store`."""
    return [ConfigMapEnvFrom(name=S3_CONFIGMAP), SecretEnvFrom(name=S3_SECRET)]


def runner_script(
    name: str,
    function: Callable[..., Any],
    settings: WorkflowSettings,
    *,
    image: str | None = None,
    cpu: str = "250m",
    memory: str = "512Mi",
    timeout: str | None = "30m",
    reads_hub: bool = False,
    deployer: bool = False,
    **kwargs: Any,
) -> Script:
    """A Hera runner script template calling `slaprof.workflows.tasks.<function>`.

    `reads_hub`: the step reads the Hugging Face Hub (gets HF_TOKEN). `deployer`: the step talks to
    the Kubernetes API (runs as the deployer service account, with its token)."""
    env = runner_env() + ([hf_token()] if reads_hub else []) + kwargs.pop("env", [])
    requests = {"cpu_request": cpu, "memory_request": memory, **kwargs.pop("requests", {})}
    volumes = security.writable_volumes() + kwargs.pop("volumes", [])
    identity = security.deployer_identity(settings) if deployer else {}
    return Script(
        name=name,
        source=function,
        constructor=RunnerScriptConstructor(),
        image=image or settings.image,
        image_pull_policy="IfNotPresent",
        env=env,
        env_from=runner_env_from(),
        resources=Resources(memory_limit=kwargs.pop("memory_limit", None), **requests),
        security_context=security.container_security_context(),
        volumes=volumes,
        retry_strategy=transient_retry(),
        timeout=timeout,
        labels={RUN_LABEL: "{{workflow.name}}", "slaprof.io/task": name},
        **identity,
        **kwargs,
    )
