"""Runner script templates: every task that runs slaprof code in the slaprof image.

Argo concept: script templates (https://argo-workflows.readthedocs.io/en/latest/fields/#scripttemplate),
built by Hera's runner constructor from the functions in `workflows.tasks`. Shared here: the
image, the S3 environment, the pod labels, and the retry policy (transient errors only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hera.workflows import (
    ConfigMapEnvFrom,
    Env,
    Resources,
    RetryStrategy,
    Script,
    SecretEnvFrom,
)
from hera.workflows.models import Backoff
from hera.workflows.script import RunnerScriptConstructor

from workflows import tasks
from workflows.params import RUN_LABEL, S3_CONFIGMAP, S3_SECRET, WorkflowSettings

# Retry pod-level errors (node lost, pod deleted, image pull) and exit code 75 (S3 or API unreachable);
# a failed step (exit 1) or a bad request (exit 2) would fail the same way again.
TRANSIENT_ONLY = RetryStrategy(
    limit=3,
    retry_policy="Always",
    expression=f"lastRetry.status == 'Error' || lastRetry.exitCode == '{tasks.TRANSIENT_EXIT}'",
    backoff=Backoff(duration="20s", factor=2, max_duration="10m"),
)


def runner_env() -> list[Env]:
    return [Env(name="SLAPROF_RUN_ID", value="{{workflow.name}}"), Env(name="PYTHONUNBUFFERED", value="1")]


def runner_env_from() -> list[Any]:
    """S3 endpoint and bucket (ConfigMap) and keys (Secret) for `steps.store.open_store`."""
    return [ConfigMapEnvFrom(name=S3_CONFIGMAP), SecretEnvFrom(name=S3_SECRET)]


def runner_script(
    name: str,
    function: Callable[..., Any],
    settings: WorkflowSettings,
    *,
    image: str | None = None,
    cpu: str = "250m",
    memory: str = "512Mi",
    timeout: str = "30m",
    retry: bool = True,
    **kwargs: Any,
) -> Script:
    """A Hera runner script template calling `workflows.tasks.<function>`."""
    env = runner_env() + kwargs.pop("env", [])
    return Script(
        name=name,
        source=function,
        constructor=RunnerScriptConstructor(),
        image=image or settings.image,
        image_pull_policy="IfNotPresent",
        env=env,
        env_from=runner_env_from(),
        resources=Resources(cpu_request=cpu, memory_request=memory, memory_limit=kwargs.pop("memory_limit", None)),
        retry_strategy=TRANSIENT_ONLY if retry else None,
        timeout=timeout,
        labels={RUN_LABEL: "{{workflow.name}}", "slaprof.io/task": name},
        **kwargs,
    )
