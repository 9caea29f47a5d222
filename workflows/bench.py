"""Bench pod templates: one pod per candidate, fanned out by the DAG with `withParam`.

Argo concepts: podSpecPatch (https://argo-workflows.readthedocs.io/en/latest/fields/#template)
for the GPU count, which Argo refuses as a templated resource quantity; sidecars
(https://argo-workflows.readthedocs.io/en/latest/walk-through/sidecars/) for the engine.

- `bench`: offline (estimates) and simulate (the step starts simengine and AIPerf itself): CPUs only.
- `bench-online`: the slaprof step in `main`, the engine in the `engine` sidecar (engine image,
  the candidate's GPUs, GPU node selector and tolerations). The step writes the engine's launch
  script to the shared volume (SLAPROF_ENGINE_SIDECAR) and measures it over localhost.
- `bench-online-main`: when the engine image contains slaprof, one container runs both.
Every bench pod has a deadline that also counts time spent Pending (`timeout`, plus Argo 4.1's
`pendingTimeout`, added in workflows.render), so a candidate waiting for GPUs cannot stall the run.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import EmptyDirVolume, Env, Parameter, Script, UserContainer
from hera.workflows.models import EmptyDirVolumeSource, EnvVar, EnvVarSource, SecretKeySelector, Volume, VolumeMount

from steps.engines import sidecar
from workflows import tasks
from workflows.params import WorkflowSettings
from workflows.scripts import runner_script

ENGINE_DIR = "/slaprof-engine"
ENGINE_CONTAINER = "engine"


def engine_boot(engine_dir: str = ENGINE_DIR) -> str:
    """The sidecar's command: wait for the launch script the bench step writes, then become the engine;
    exit at once when the bench is done without launching one. The files are `steps.engines.sidecar`'s."""
    return (
        f"until [ -f {engine_dir}/{sidecar.SCRIPT} ]; do "
        f"if [ -f {engine_dir}/{sidecar.DONE} ]; then exit 0; fi; sleep 1; done; "
        f"exec sh {engine_dir}/{sidecar.SCRIPT}"
    )


ENGINE_BOOT = engine_boot()
HF_TOKEN_SECRET = "hf-token-secret"


def gpu_pod_spec_patch(container: str) -> str:
    """Strategic-merge patch giving `container` the candidate's GPUs and pinning the pod to GPU nodes.

    Written as text: the node selector and tolerations parameters are JSON spliced in by Argo."""
    return (
        '{"containers": [{"name": "' + container + '", "resources": {"limits": '
        '{"{{workflow.parameters.gpu-resource}}": "{{inputs.parameters.gpus}}"}}}], '
        '"nodeSelector": {{workflow.parameters.gpu-node-selector}}, '
        '"tolerations": {{workflow.parameters.gpu-tolerations}}}'
    )


def _hf_token() -> EnvVar:
    return EnvVar(
        name="HF_TOKEN",
        value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=HF_TOKEN_SECRET, key="HF_TOKEN", optional=True)),
    )


def _bench(name: str, settings: WorkflowSettings, **kwargs: Any) -> Script:
    return runner_script(
        name,
        tasks.bench,
        settings,
        cpu=settings.bench_cpu,
        memory=settings.bench_memory,
        timeout="{{workflow.parameters.bench-timeout}}",
        **kwargs,
    )


def offline_bench(settings: WorkflowSettings) -> Script:
    return _bench("bench", settings)


def online_bench_sidecar(settings: WorkflowSettings) -> Script:
    engine = UserContainer(
        name=ENGINE_CONTAINER,
        image="{{inputs.parameters.engine-image}}",
        command=["sh", "-c"],
        args=[ENGINE_BOOT],
        env=[_hf_token()],
        volume_mounts=[
            VolumeMount(name="engine", mount_path=ENGINE_DIR),
            VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
    )
    return _bench(
        "bench-online",
        settings,
        inputs=[Parameter(name="engine-image", description="image of the engine sidecar")],
        env=[Env(name=sidecar.SIDECAR_ENV, value=ENGINE_DIR)],
        sidecars=[engine],
        volumes=[
            EmptyDirVolume(name="engine", mount_path=ENGINE_DIR),
            Volume(name="dshm", empty_dir=EmptyDirVolumeSource(medium="Memory")),
        ],  # the engine's /dev/shm
        pod_spec_patch=gpu_pod_spec_patch(ENGINE_CONTAINER),
    )


def online_bench_main(settings: WorkflowSettings) -> Script:
    return _bench(
        "bench-online-main",
        settings,
        image="{{inputs.parameters.engine-image}}",
        inputs=[Parameter(name="engine-image", description="engine image that also contains slaprof")],
        env=[_hf_token()],
        volumes=[EmptyDirVolume(name="dshm", medium="Memory", mount_path="/dev/shm")],
        pod_spec_patch=gpu_pod_spec_patch("main"),
    )
