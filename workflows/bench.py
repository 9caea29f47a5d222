"""Bench pod templates: one pod per candidate, fanned out by the DAG with `withParam`.

Argo concepts: podSpecPatch (https://argo-workflows.readthedocs.io/en/latest/fields/#template)
for the GPU count, which Argo refuses as a templated resource quantity; sidecars
(https://argo-workflows.readthedocs.io/en/latest/walk-through/sidecars/) for the engine;
semaphores (https://argo-workflows.readthedocs.io/en/latest/synchronization/) for GPU admission.

- `bench`: offline (estimates) and simulate (the step starts simengine and AIPerf itself): CPUs
  only, no GPU semaphore.
- `bench-online`: the slaprof step in `main`, the engine in the `engine` sidecar (engine image,
  the candidate's GPUs, GPU node selector and tolerations). The step writes the engine's launch
  script to the shared volume (SLAPROF_ENGINE_SIDECAR) and measures it over localhost.
- `bench-online-main`: when the engine image contains slaprof, one container runs both.

GPU queueing: an online pod is created only once it holds the semaphore `gpus-<N>` of its engine
size (`slaprof-semaphores`, sized by the chart from the GPUs it is told about), so GPUs are held
by measurements only, never by a run waiting at the pick or applying. Its deadline is
`activeDeadlineSeconds` (the `bench-timeout` parameter, in seconds from plan), which counts from
the pod's start on a node: waiting for the semaphore, the scheduler or Kueue fails nothing; the
run's own deadline bounds the wait.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import EmptyDirVolume, Env, Parameter, Resources, Script, UserContainer
from hera.workflows.models import (
    ConfigMapKeySelector,
    EmptyDirVolumeSource,
    SemaphoreRef,
    Synchronization,
    Volume,
    VolumeMount,
)

from slaprof.steps.engines import sidecar
from slaprof.workflows import security, tasks
from slaprof.workflows.params import GPU_SEMAPHORE_KEY, SEMAPHORE_CONFIGMAP, WorkflowSettings
from slaprof.workflows.scripts import hf_token, runner_script

ENGINE_DIR = "/slaprof-engine"
ENGINE_CONTAINER = "engine"
DEADLINE_INPUT = "deadline-seconds"


def engine_boot(engine_dir: str = ENGINE_DIR) -> str:
    """The sidecar's command: wait for the launch script the bench step writes, then become the engine;
    exit at once when the bench is done without launching one. The files are `slaprof.steps.engines.sidecar`'s."""
    return (
        f"until [ -f {engine_dir}/{sidecar.SCRIPT} ]; do "
        f"if [ -f {engine_dir}/{sidecar.DONE} ]; then exit 0; fi; sleep 1; done; "
        f"exec sh {engine_dir}/{sidecar.SCRIPT}"
    )


ENGINE_BOOT = engine_boot()


def gpu_pod_spec_patch(container: str) -> str:
    """Strategic-merge patch giving `container` the candidate's GPUs and pinning the pod to GPU nodes.

    Written as text: the node selector and tolerations parameters are JSON spliced in by Argo."""
    return (
        '{"containers": [{"name": "' + container + '", "resources": {"limits": '
        '{"{{workflow.parameters.gpu-resource}}": "{{inputs.parameters.gpus}}"}}}], '
        '"nodeSelector": {{workflow.parameters.gpu-node-selector}}, '
        '"tolerations": {{workflow.parameters.gpu-tolerations}}}'
    )


def gpu_semaphore() -> Synchronization:
    """One slot of the semaphore for engines of the candidate's size, held while the pod exists."""
    ref = ConfigMapKeySelector(name=SEMAPHORE_CONFIGMAP, key=GPU_SEMAPHORE_KEY)
    return Synchronization(semaphores=[SemaphoreRef(config_map_key_ref=ref)])


def engine_resources(settings: WorkflowSettings) -> dict[str, str]:
    return {
        "cpu_request": settings.engine_cpu,
        "memory_request": settings.engine_memory,
        "ephemeral_request": settings.engine_ephemeral_storage,
    }


def _bench(name: str, settings: WorkflowSettings, **kwargs: Any) -> Script:
    kwargs.setdefault("cpu", settings.bench_cpu)
    kwargs.setdefault("memory", settings.bench_memory)
    inputs = [
        Parameter(name=DEADLINE_INPUT, description="seconds the pod may run once started (plan's bench deadline)")
    ]
    return runner_script(
        name,
        tasks.bench,
        settings,
        timeout=None,  # `timeout` would count time spent waiting for GPUs
        active_deadline_seconds=f"{{{{inputs.parameters.{DEADLINE_INPUT}}}}}",
        reads_hub=True,
        inputs=inputs + kwargs.pop("inputs", []),
        **kwargs,
    )


def offline_bench(settings: WorkflowSettings) -> Script:
    return _bench("bench", settings)


def online_bench_sidecar(settings: WorkflowSettings) -> Script:
    mounts = [
        VolumeMount(name="engine", mount_path=ENGINE_DIR),
        VolumeMount(name="dshm", mount_path="/dev/shm"),
        VolumeMount(name="tmp", mount_path=security.TMP_DIR),
        VolumeMount(name="home", mount_path=security.HOME_DIR),
        VolumeMount(name=security.MODEL_CACHE_VOLUME, mount_path=security.MODEL_CACHE),
    ]
    engine = UserContainer(
        name=ENGINE_CONTAINER,
        image="{{inputs.parameters.engine-image}}",
        command=["sh", "-c"],
        args=[ENGINE_BOOT],
        env=[*security.writable_env(), hf_token(), Env(name="HF_HOME", value=security.MODEL_CACHE)],
        resources=Resources(**engine_resources(settings)).build(),  # type: ignore[arg-type]
        security_context=security.container_security_context(),
        volume_mounts=mounts,
    )
    return _bench(
        "bench-online",
        settings,
        inputs=[Parameter(name="engine-image", description="image of the engine sidecar")],
        env=[Env(name=sidecar.SIDECAR_ENV, value=ENGINE_DIR)],
        sidecars=[engine],
        volumes=[
            EmptyDirVolume(name="engine", mount_path=ENGINE_DIR),
            Volume(name="dshm", empty_dir=EmptyDirVolumeSource(medium="Memory")),  # the engine's /dev/shm
            Volume(name=security.MODEL_CACHE_VOLUME, empty_dir=EmptyDirVolumeSource()),
        ],
        synchronization=gpu_semaphore(),
        pod_spec_patch=gpu_pod_spec_patch(ENGINE_CONTAINER),
    )


def online_bench_main(settings: WorkflowSettings) -> Script:
    engine = engine_resources(settings)  # the engine runs in main: main gets the engine's requests
    return _bench(
        "bench-online-main",
        settings,
        cpu=engine["cpu_request"],
        memory=engine["memory_request"],
        requests={"ephemeral_request": engine["ephemeral_request"]},
        image="{{inputs.parameters.engine-image}}",
        inputs=[Parameter(name="engine-image", description="engine image that also contains slaprof")],
        env=[Env(name="HF_HOME", value=security.MODEL_CACHE)],  # HF_TOKEN comes with every bench
        volumes=[
            EmptyDirVolume(name="dshm", medium="Memory", mount_path="/dev/shm"),
            EmptyDirVolume(name=security.MODEL_CACHE_VOLUME, mount_path=security.MODEL_CACHE),
        ],
        synchronization=gpu_semaphore(),
        pod_spec_patch=gpu_pod_spec_patch("main"),
    )
