"""DAG step `render`, aggregated shape: a DynamoGraphDeployment of a Frontend and one worker
service whose replicas each serve both phases.

Input: `request.json` and `selection.json` whose deployment is aggregated (mapping, replicas).
Output: the manifests for `dgd.yaml`: for TensorRT-LLM the engine-args ConfigMap, then the DGD.

The DGD starts from the same place as the disaggregated one (a base DGD, else the backend's
built-in template): an aggregated base keeps its one worker; a disaggregated one (the built-in
template included) becomes aggregated by keeping its decode worker (renamed `worker` in the
built-in template) and dropping the prefill worker and the Planner. The worker's flags are the
backend's aggregated arguments (`dgd_worker_args(..., "agg")`: no disaggregation mode, no KV
transfer settings).

No Planner: the SLA planner of the Dynamo releases slaprof renders for is configured here for the
prefill and decode workers of a disaggregated graph, from profile data of separate prefill and
decode engines; an aggregated graph's worker replicas are set from the selection instead.
"""

from __future__ import annotations

from typing import Any

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import Selection
from slaprof.steps.dag.render import (
    _find_service,
    _mount_model_cache,
    _set_worker,
    dgd_name,
    engine_config_docs,
    finish_dgd,
    managed_worker_flags,
    release_form,
    start_dgd,
    worker_sizing,
)

AGG_WORKER = "worker"  # the aggregated worker's service name when slaprof makes it from its template
PLANNER_OMITTED = (
    "no Planner: slaprof sets up Dynamo's SLA planner for disaggregated graphs (its profile data "
    "describes separate prefill and decode engines); the aggregated worker's replicas are fixed"
)


def _agg_worker(services: dict[str, Any], from_template: bool) -> str:
    """The service that becomes the aggregated worker; prefill workers and the Planner are removed."""
    workers = [n for n, s in services.items() if (s or {}).get("componentType") == "worker"]
    prefill = _find_service(services, "worker", "prefill")
    decode = _find_service(services, "worker", "decode")
    if decode is not None and prefill is not None:
        keep = decode
    elif len(workers) == 1:
        keep = workers[0]
    else:
        raise UserError(
            "the base DGD must have one worker service (aggregated) or a prefill and a decode worker "
            f"(disaggregated, the decode worker is kept); found workers: {', '.join(workers) or 'none'}"
        )
    for name in list(services):
        kind = (services[name] or {}).get("componentType")
        if (kind == "worker" and name != keep) or kind == "planner":
            del services[name]
    if from_template and keep != AGG_WORKER:
        services[AGG_WORKER] = services.pop(keep)
        keep = AGG_WORKER
    services[keep].pop("subComponentType", None)
    return keep


def render_agg_manifests(
    request: ProfileRequest, selection: Selection, base: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """[(engine-args ConfigMap), DGD] for the selection's aggregated deployment."""
    chosen = selection.deployment
    group = chosen.group("agg") if chosen is not None else None
    if group is None:
        raise UserError("the selection has no aggregated deployment to render; see selection.json")
    start = start_dgd(request, base)
    dgd, backend, release = start.dgd, start.backend, start.release
    services: dict[str, Any] = dgd["spec"]["services"]
    worker = _agg_worker(services, from_template=base is None)
    frontend = _find_service(services, "frontend")
    assert frontend is not None
    cand = group.candidate
    sizing = worker_sizing(request, selection)
    _set_worker(
        services[worker],
        worker,
        request,
        backend,
        cand,
        "agg",
        group.replicas,
        managed_worker_flags(backend),
        sizing,
        release,
        start.default_image,
    )
    services[worker].pop("subComponentType", None)  # one worker type serves both phases
    _mount_model_cache(dgd, [frontend, worker], request)
    name = dgd_name(request, list(services), base)
    finish_dgd(dgd, request, selection, name, release, {"slaprof/aggregated": f"{cand.label} x{group.replicas}"})
    docs = engine_config_docs(backend, name, request.deployment.namespace, services, {"agg": (worker, cand)}, sizing)
    docs.append(release_form(dgd, release))
    return docs
