"""DAG step `render`: turn the fit step's choice into a deployable disaggregated DynamoGraphDeployment.

Inputs: `request.json`, `selection.json` (the chosen prefill and decode mappings, replicas when a
request rate was given), `prefill_raw_data.json` and `decode_raw_data.json` (the planner's data),
optionally a base DGD to start from. Output: `dgd.yaml`, a multi-document YAML: the ConfigMap
`<DGD name>-planner-profile-data` (named after its DGD, so several deployments share a namespace),
an engine-args ConfigMap for backends that take their settings from a file (TensorRT-LLM), then
the DGD.

Only what the profile decides is changed in the base (or the backend's built-in DGD,
`EngineBackend.dgd_template`): the workers' images, model, parallel flags, GPU limits,
`multinode.nodeCount`, replicas, Hugging Face token secret and model cache, the engine context the
plan sized the engines for, and the Planner service with its mounted data and its targets (the
nearest achievable SLA when the requested one cannot be met). Every worker flag comes from the backend's module in
`steps/engines/`; nothing here depends on which backend it is.
"""

from __future__ import annotations

import copy
import hashlib
import math
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from slaprof.steps.core.candidates import MAPPING_KINDS, Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import Selection
from slaprof.steps.core.store import ArtifactStore, Layout, read_model
from slaprof.steps.dynamo import dynamo_releases
from slaprof.steps.dynamo.argv import groups as _groups
from slaprof.steps.dynamo.dgd_v1beta1 import to_v1beta1
from slaprof.steps.dynamo.dynamo_releases import PLANNER_DATA_DIR, PLANNER_WORKDIR, DynamoRelease
from slaprof.steps.engines import EngineBackend, get_backend
from slaprof.steps.engines.base import ROLES as WORKER_ROLES
from slaprof.steps.engines.base import Role
from slaprof.steps.fitting.planner_data import DecodePlannerData, PrefillPlannerData
from slaprof.steps.specs.models import EnginePrecision

DGD_API_VERSION = "nvidia.com/v1alpha1"
DGD_KIND = "DynamoGraphDeployment"
PLANNER_DATA = "planner-profile-data"  # the planner's data volume; its ConfigMap is `<DGD name>-` + this
CONFIGMAP_NAME_LIMIT = 63  # a ConfigMap name is a DNS subdomain; 63 keeps it a label too
ENGINE_CONFIG_VOLUME = "engine-config"
# The Dynamo admission webhook rejects a service when len(DGD name) + len(service) + len(service +
# "-ldr") exceeds 45 (the leader pod of a multinode service); we hold every service to that rule.
POD_NAME_LIMIT = 45
ROLES: tuple[Role, ...] = ("prefill", "decode")

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------
def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug if slug[:1].isalpha() else f"m-{slug}".rstrip("-")


def model_short_name(model: str) -> str:
    """`Qwen/Qwen3-32B` -> `qwen3-32b`; `/models/Llama-3.1-8B/` -> `llama-3-1-8b`."""
    return _slug(posixpath.basename(model.rstrip("/")) or model)


def service_name_cost(service: str) -> int:
    """Characters a service adds to the operator's longest derived name (`<dgd><svc><svc>-ldr`)."""
    return 2 * len(service) + len("-ldr")


def name_budget(service_names: list[str]) -> int:
    return POD_NAME_LIMIT - max((service_name_cost(s) for s in service_names), default=0)


def derive_name(model: str, backend: str, budget: int) -> str:
    """`<model short name>-<backend>`, DNS-1035, cut to `budget` with a hash of the full name."""
    full = f"{model_short_name(model)}-{backend}"
    if len(full) <= budget:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:5]
    keep = budget - len(backend) - len(digest) - 2
    if keep < 1:  # not even the backend fits: the hash alone names it
        return f"d{digest}"
    return f"{model_short_name(model)[:keep].rstrip('-')}-{digest}-{backend}"


def planner_configmap_name(dgd_name: str) -> str:
    """`<dgd>-planner-profile-data`: one per deployment, so two models in a namespace keep their own data."""
    name = f"{dgd_name}-{PLANNER_DATA}"
    if len(name) <= CONFIGMAP_NAME_LIMIT:
        return name
    digest = hashlib.sha256(dgd_name.encode()).hexdigest()[:5]
    keep = CONFIGMAP_NAME_LIMIT - len(PLANNER_DATA) - len(digest) - 2
    return f"{dgd_name[:keep].rstrip('-')}-{digest}-{PLANNER_DATA}"


def _check_name(name: str, services: list[str], given: bool) -> None:
    budget = name_budget(services)
    longest = max(services, key=service_name_cost)
    if budget < 6:
        raise UserError(
            f"service name {longest!r} is too long: Dynamo needs len(DGD name) + 2 x len(service) + 4 "
            f"<= {POD_NAME_LIMIT} for its pod names, leaving {budget} characters for the DGD name; "
            "rename the service in the base DGD (e.g. to 'prefill' or 'decode')"
        )
    if not _DNS_LABEL.match(name):
        raise UserError(
            f"invalid DGD name {name!r}: use lowercase letters, digits and '-', starting with a letter "
            "and ending with a letter or digit"
        )
    if len(name) > budget:
        raise UserError(
            f"DGD name {name!r} has {len(name)} characters; with service {longest!r} Dynamo's pod names "
            f"allow at most {budget} (len(name) + 2 x len(service) + 4 <= {POD_NAME_LIMIT}); "
            + ("choose a shorter deployment name" if given else "rename the service")
        )


# ---------------------------------------------------------------------------
# command-line argument lists
# ---------------------------------------------------------------------------
def flag_names(args: list[str]) -> set[str]:
    return {flag for flag, _ in _groups(args) if flag}


def merge_args(base: list[str], ours: list[str], managed: set[str]) -> list[str]:
    """`ours` first, then the base's arguments except the flags we manage or set."""
    drop = managed | flag_names(ours)
    kept = [tok for flag, toks in _groups(base) if flag not in drop for tok in toks]
    return [*ours, *kept]


def _replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    out: list[str] = []
    for name, toks in _groups(args):
        out += [flag, value] if name == flag else toks
    return out


def managed_worker_flags(backend: EngineBackend) -> set[str]:
    """Every flag the backend's worker arguments can carry, for any mapping, role and Dynamo release:
    these are replaced in a base DGD, so a stale one (e.g. an EP flag after switching to TP) cannot survive."""
    flags: set[str] = backend.release_role_flags()
    for kind in MAPPING_KINDS:
        for role in WORKER_ROLES:
            flags |= flag_names(backend.dgd_worker_args("model", Candidate(kind=kind, size=2), role))  # type: ignore[arg-type]
    return flags


def _split_invocation(container: dict[str, Any], service: str) -> list[str]:
    """The worker's flags, whether the module sits in `command` or at the start of `args`."""
    command = [str(t) for t in container.get("command") or []]
    args = [str(t) for t in container.get("args") or []]
    if command and posixpath.basename(command[0]) in ("sh", "bash") and "-c" in command:
        raise UserError(
            f"service {service!r} of the base DGD runs a shell command line; slaprof edits worker flags "
            "only in list form: give command [python3, -m, dynamo.<backend>] and args as a list"
        )
    tokens = command + args
    if "-m" in tokens:
        i = tokens.index("-m")
        return tokens[i + 2 :]
    return args


# ---------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------
def _check_base(base: dict[str, Any], origin: str = "base DGD") -> None:
    if not isinstance(base, dict) or base.get("kind") != DGD_KIND:
        kind = base.get("kind") if isinstance(base, dict) else None
        raise UserError(f"{origin} must be a {DGD_KIND} (kind {kind!r})")
    if base.get("apiVersion") != DGD_API_VERSION:
        raise UserError(
            f"{origin} has apiVersion {base.get('apiVersion')!r}; give it as {DGD_API_VERSION} (spec.services), "
            "which slaprof edits for every Dynamo release and converts to v1beta1 where the release uses that"
        )
    services = (base.get("spec") or {}).get("services")
    if not isinstance(services, dict) or not services:
        raise UserError(f"{origin} has no spec.services")


def _find_service(services: dict[str, Any], component: str, role: str | None = None) -> str | None:
    """By componentType (and subComponentType); workers without one are matched by name."""
    typed = [n for n, s in services.items() if (s or {}).get("componentType") == component]
    if role is None:
        return typed[0] if typed else None
    exact = [n for n in typed if services[n].get("subComponentType") == role]
    if exact:
        return exact[0]
    by_name = [n for n in typed if not services[n].get("subComponentType") and role in n.lower()]
    return by_name[0] if by_name else None


def _container(service: dict[str, Any]) -> dict[str, Any]:
    return service.setdefault("extraPodSpec", {}).setdefault("mainContainer", {})


def _ensure_named(items: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Update the list item with the same name as `entry` (keeping its other keys), or append it."""
    for item in items:
        if item.get("name") == entry["name"]:
            item.update(entry)
            return items
    return [*items, entry]


def _worker_model(request: ProfileRequest) -> str:
    """What a worker loads: the model id, or its folder on the model-cache PVC when a path is given."""
    dep = request.deployment
    if dep.model_cache_pvc and dep.model_cache_pvc_path:
        path = dep.model_cache_pvc_path
        mount = dep.model_cache_mount_path.rstrip("/")
        # a path already under the mount point must not be joined twice (/opt/model-cache/opt/model-cache/..)
        return path if path == mount or path.startswith(mount + "/") else posixpath.join(mount, path.lstrip("/"))
    return request.model


@dataclass(frozen=True)
class WorkerSizing:
    """What the plan assumed of every engine, which the DGD's workers must be told."""

    max_context: int  # without it an engine takes the model's full context and may not fit the GPUs admitted
    precision: EnginePrecision  # quantization / KV dtype overrides the estimates and measurements ran with


def worker_sizing(request: ProfileRequest, selection: Selection) -> WorkerSizing:
    return WorkerSizing(
        max_context=selection.max_context or request.engine.max_context_length,
        precision=selection.precision,
    )


def worker_args(
    request: ProfileRequest,
    backend: EngineBackend,
    cand: Candidate,
    role: str,
    sizing: WorkerSizing,
    release: DynamoRelease,
) -> list[str]:
    """The flags slaprof sets on a DGD worker: the backend's for the mapping, context and role, the
    precision overrides, in the release's form."""
    ours = backend.release_worker_args(
        release.line,
        role,
        [
            *backend.dgd_worker_args(_worker_model(request), cand, role, sizing.max_context),  # type: ignore[arg-type]
            *backend.precision_args(sizing.precision),
        ],
    )
    if _worker_model(request) != request.model:
        # clients ask for the model by its id, not by its folder on the PVC
        ours = (
            _replace_flag(ours, "--served-model-name", request.model)
            if "--served-model-name" in flag_names(ours)
            else [*ours, "--served-model-name", request.model]
        )
    return ours


def _set_worker(
    service: dict[str, Any],
    name: str,
    request: ProfileRequest,
    backend: EngineBackend,
    cand: Candidate,
    role: str,
    replicas: int | None,
    managed: set[str],
    sizing: WorkerSizing,
    release: DynamoRelease,
    default_image: str,
) -> None:
    dep, per_node = request.deployment, request.hardware.gpus_per_node
    service["componentType"] = "worker"
    service["subComponentType"] = role
    service["replicas"] = replicas if replicas is not None else service.get("replicas", 1)
    service["envFromSecret"] = dep.hf_token_secret
    gpus_per_pod = str(min(cand.num_gpus, per_node))
    res = service.setdefault("resources", {})
    res.setdefault("limits", {})["gpu"] = gpus_per_pod
    if "gpu" in (res.get("requests") or {}):
        res["requests"]["gpu"] = gpus_per_pod
    if cand.num_gpus > per_node:
        service.setdefault("multinode", {})["nodeCount"] = math.ceil(cand.num_gpus / per_node)
    else:
        service.pop("multinode", None)
    container = _container(service)
    if dep.engine_image:
        container["image"] = dep.engine_image
    container.setdefault("image", default_image)
    ours = worker_args(request, backend, cand, role, sizing, release)
    base_flags = _split_invocation(container, name)
    container["command"] = ["python3", "-m", backend.dynamo_module]
    container["args"] = merge_args(base_flags, ours, managed)


def _mount_model_cache(dgd: dict[str, Any], names: list[str], request: ProfileRequest) -> None:
    dep = request.deployment
    if not dep.model_cache_pvc:
        return
    spec = dgd["spec"]
    spec["pvcs"] = _ensure_named(spec.get("pvcs") or [], {"name": dep.model_cache_pvc, "create": False})
    for name in names:
        svc = spec["services"][name]
        svc["volumeMounts"] = _ensure_named(
            svc.get("volumeMounts") or [], {"name": dep.model_cache_pvc, "mountPoint": dep.model_cache_mount_path}
        )
        svc["envs"] = _ensure_named(svc.get("envs") or [], {"name": "HF_HOME", "value": dep.model_cache_mount_path})


def _mount_configmap(service: dict[str, Any], volume: str, configmap: str, path: str) -> None:
    pod = service.setdefault("extraPodSpec", {})
    pod["volumes"] = _ensure_named(pod.get("volumes") or [], {"name": volume, "configMap": {"name": configmap}})
    container = _container(service)
    container["volumeMounts"] = _ensure_named(
        container.get("volumeMounts") or [], {"name": volume, "mountPath": path, "readOnly": True}
    )


def _set_planner(
    service: dict[str, Any],
    selection: Selection,
    backend: EngineBackend,
    image: str | None,
    fallback_image: str | None,
    prefill: Candidate,
    decode: Candidate,
    configmap: str,
    release: DynamoRelease,
) -> None:
    """`image`: the request's frontend image (wins); `fallback_image`: the Frontend's, for a new Planner.
    Releases with their own Planner image get that image's sibling (same registry path and tag)."""
    service["componentType"] = "planner"
    service.setdefault("replicas", 1)
    container = _container(service)
    chosen = image or fallback_image
    if chosen and release.planner.image_name:
        chosen = dynamo_releases.rename_image(chosen, release.planner.image_name)
    command = release.planner_command()
    args = [str(a) for a in container.get("args") or []]
    foreign = [str(t) for t in container.get("command") or []] != command  # new, or another release's Planner
    if chosen and (image or foreign or "image" not in container):
        container["image"] = chosen
    if foreign:
        args = []
    container.update(workingDir=PLANNER_WORKDIR, command=command)
    ttft, itl = selection.planner_targets()  # the nearest achievable SLA when the asked one cannot be met
    container["args"] = release.planner_args(
        {
            "backend": backend.name,
            "ttft": ttft,
            "itl": itl,
            "profile_results_dir": PLANNER_DATA_DIR,
            "prefill_engine_num_gpu": prefill.num_gpus,
            "decode_engine_num_gpu": decode.num_gpus,
        },
        args,
    )
    _mount_configmap(service, PLANNER_DATA, configmap, PLANNER_DATA_DIR)


def _configmap(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "slaprof"}},
        "data": data,
    }


@dataclass
class DgdStart:
    """The DGD to fill in, and what filling it needs: the backend and the Dynamo release it targets."""

    dgd: dict[str, Any]
    backend: EngineBackend
    release: DynamoRelease
    default_image: str  # the workers' image when neither the request nor the base DGD names one


def request_release(request: ProfileRequest) -> DynamoRelease:
    """The Dynamo release the request deploys to (named, read off its images, or the newest)."""
    dep = request.deployment
    return dynamo_releases.resolve(dep.dynamo_version, dep.engine_image, dep.frontend_image, dep.dynamo_image)


def default_worker_image(request: ProfileRequest) -> str:
    """The backend's runtime image of the request's Dynamo release: what the DGD's workers run unless
    the request or a base DGD names one, and what online bench pods measure."""
    release = request_release(request)
    return release.worker_image(get_backend(request.backend).runtime_image, request.deployment.dynamo_image)


def start_dgd(request: ProfileRequest, base: dict[str, Any] | None) -> DgdStart:
    """A copy of `base`, else the backend's built-in template, with the Frontend's image set;
    raises when it has no Frontend."""
    backend = get_backend(request.backend)
    dep = request.deployment
    release = request_release(request)
    default_image = default_worker_image(request)
    frontend_image = dep.frontend_image or dep.engine_image
    if base is None:
        dgd = backend.dgd_template(dep.engine_image or default_image, frontend_image or default_image)
    else:
        _check_base(base)
        dgd = copy.deepcopy(base)
        dgd.pop("status", None)
    services: dict[str, Any] = dgd["spec"]["services"]
    frontend = _find_service(services, "frontend")
    if frontend is None:
        raise UserError(f"the base DGD has no service with componentType frontend (services: {', '.join(services)})")
    if frontend_image:
        _container(services[frontend])["image"] = frontend_image
    return DgdStart(dgd, backend, release, default_image)


def dgd_name(request: ProfileRequest, services: list[str], base: dict[str, Any] | None) -> str:
    """The request's name, else a base DGD's own, else one derived from model and backend; checked
    against Dynamo's pod-name limit."""
    given = request.deployment.name or ((base.get("metadata") or {}).get("name") if base is not None else None)
    name = given or derive_name(request.model, request.backend, name_budget(services))
    _check_name(name, services, given=bool(given))
    return name


def finish_dgd(
    dgd: dict[str, Any],
    request: ProfileRequest,
    selection: Selection,
    name: str,
    release: DynamoRelease,
    annotations: dict[str, str],
) -> None:
    """Set the DGD's name, namespace and slaprof's annotations (the SLA is the planner's: the
    nearest achievable one when the request's cannot be met)."""
    ttft, itl = selection.planner_targets()
    meta = dgd.setdefault("metadata", {})
    meta.update(name=name, namespace=request.deployment.namespace)
    meta.setdefault("annotations", {}).update(
        {
            "slaprof/model": request.model,
            "slaprof/dynamo": release.version,
            **annotations,
            "slaprof/sla": f"isl={selection.isl} osl={selection.osl} ttft={ttft:g}ms itl={itl:g}ms",
        }
    )
    if selection.nearest_sla:
        meta["annotations"]["slaprof/requested-sla"] = f"ttft={selection.ttft_ms:g}ms itl={selection.itl_ms:g}ms"


def release_form(dgd: dict[str, Any], release: DynamoRelease) -> dict[str, Any]:
    """The DGD in the shape its release's operator reads (v1beta1 `spec.components` since 1.4)."""
    return to_v1beta1(dgd) if release.dgd_shape == "components" else dgd


def engine_config_docs(
    backend: EngineBackend,
    name: str,
    namespace: str,
    services: dict[str, Any],
    workers: Mapping[str, tuple[str, Candidate]],
    sizing: WorkerSizing,
) -> list[dict[str, Any]]:
    """For backends configured by a file (TensorRT-LLM): the ConfigMap `<name>-engine-config` with
    each worker's engine-args file (carrying the context the plan sized it for), mounted where the
    worker's arguments expect it."""
    files: dict[str, str] = {}
    for role, (service, cand) in workers.items():
        path = backend.engine_config_path(role)  # type: ignore[arg-type]
        if path:
            config = backend.engine_config(cand, role, sizing.max_context, sizing.precision)  # type: ignore[arg-type]
            files[posixpath.basename(path)] = yaml.safe_dump(config, sort_keys=False)
            _mount_configmap(services[service], ENGINE_CONFIG_VOLUME, f"{name}-engine-config", posixpath.dirname(path))
    return [_configmap(f"{name}-engine-config", namespace, files)] if files else []


def render_manifests(
    request: ProfileRequest,
    selection: Selection,
    prefill_json: str,
    decode_json: str,
    base: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """[ConfigMap <name>-planner-profile-data, (engine-args ConfigMap), DGD] for the selected mappings.
    The DGD's name: the request's, else a base DGD's own, else derived from model and backend."""
    if selection.prefill is None or selection.decode is None:
        missing = " and ".join(r for r in ROLES if getattr(selection, r) is None)
        raise UserError(
            f"the selection has no {missing} engine (no candidate produced results), so there is "
            "nothing to deploy; see selection.json's verdicts for why each candidate lost"
        )
    PrefillPlannerData.from_json(prefill_json)  # refuse malformed planner data before it reaches a cluster
    DecodePlannerData.from_json(decode_json)
    dep = request.deployment
    start = start_dgd(request, base)
    dgd, backend, release = start.dgd, start.backend, start.release
    services: dict[str, Any] = dgd["spec"]["services"]

    names: dict[str, str] = {}
    for role in ROLES:
        found = _find_service(services, "worker", role)
        if found is None:
            raise UserError(
                f"the base DGD has no {role} worker: give a service with componentType worker and "
                f"subComponentType {role} (services: {', '.join(services)})"
            )
        names[role] = found
    frontend = _find_service(services, "frontend")
    assert frontend is not None
    planner = _find_service(services, "planner") or "Planner"
    services.setdefault(planner, {})
    name = dgd_name(request, list(services), base)
    configmap = planner_configmap_name(name)

    managed = managed_worker_flags(backend)
    sizing = worker_sizing(request, selection)
    choices = {"prefill": selection.prefill.candidate, "decode": selection.decode.candidate}
    replicas = {r: getattr(selection.replicas, r) if selection.replicas else None for r in ROLES}
    for role in ROLES:
        _set_worker(
            services[names[role]],
            names[role],
            request,
            backend,
            choices[role],
            role,
            replicas[role],
            managed,
            sizing,
            release,
            start.default_image,
        )
    _set_planner(
        services[planner],
        selection,
        backend,
        dep.frontend_image or dep.engine_image,
        _container(services[frontend]).get("image"),
        choices["prefill"],
        choices["decode"],
        configmap,
        release,
    )
    _mount_model_cache(dgd, [frontend, names["prefill"], names["decode"]], request)
    finish_dgd(
        dgd,
        request,
        selection,
        name,
        release,
        {
            "slaprof/prefill": f"{choices['prefill'].label} x{services[names['prefill']]['replicas']}",
            "slaprof/decode": f"{choices['decode'].label} x{services[names['decode']]['replicas']}",
        },
    )
    docs = [
        _configmap(
            configmap,
            dep.namespace,
            {"prefill_raw_data.json": prefill_json, "decode_raw_data.json": decode_json},
        )
    ]
    workers: dict[str, tuple[str, Candidate]] = {role: (names[role], choices[role]) for role in ROLES}
    docs += engine_config_docs(backend, name, dep.namespace, services, workers, sizing)
    docs.append(release_form(dgd, release))
    return docs


def render_selection(
    request: ProfileRequest,
    selection: Selection,
    planner_json: Callable[[], tuple[str, str]],
    base: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The manifests of the selection's deployment: aggregated (`slaprof.steps.dag.render_agg`), or
    disaggregated with the planner data `planner_json()` returns (prefill, decode JSON)."""
    if selection.deployment is not None and selection.deployment.mode == "agg":
        from slaprof.steps.dag.render_agg import render_agg_manifests

        return render_agg_manifests(request, selection, base=base)
    prefill_json, decode_json = planner_json()
    return render_manifests(request, selection, prefill_json, decode_json, base=base)


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------
class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the planner JSON, engine-args files) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]], header: str = "") -> str:
    body = yaml.dump_all(docs, Dumper=_BlockDumper, sort_keys=False, width=120)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + body


def local_model_warning(request: ProfileRequest) -> str | None:
    """A model given as a folder on this machine does not exist in the cluster's pods."""
    import os

    dep = request.deployment
    model = request.model
    local = model.startswith(("/", "./", "../", "~")) or os.path.isdir(model)
    if not local or (dep.model_cache_pvc and dep.model_cache_pvc_path):
        return None
    return (
        f"warning: the model is the local folder {model!r}, which the workers cannot see; render with its "
        "Hugging Face id, or with --model-cache-pvc and --model-cache-pvc-path pointing at a copy on a PVC"
    )


def base_precision_warnings(request: ProfileRequest, selection: Selection, base: dict[str, Any] | None) -> list[str]:
    """A base DGD's worker flag setting the weights' or the KV cache's dtype, which the profile's
    engines did not run with (slaprof keeps a base's own flags, so its numbers may not hold)."""
    if base is None:
        return []
    backend = get_backend(request.backend)
    theirs = {flags[0] for flags in backend.precision_flags.values() if flags}
    ours = flag_names(backend.precision_args(selection.precision))
    out = []
    for name, service in ((base.get("spec") or {}).get("services") or {}).items():
        if (service or {}).get("componentType") != "worker":
            continue
        container = (service.get("extraPodSpec") or {}).get("mainContainer") or {}
        clash = sorted((flag_names(_split_invocation(container, name)) & theirs) - ours)
        if clash:
            out.append(
                f"warning: the base DGD's worker {name!r} sets {', '.join(clash)}, which the profile's engines ran "
                f"without (they ran {selection.precision.describe()}); its numbers may not hold: profile with the "
                "matching --quantization / --kv-cache-dtype, or drop the flag from the base"
            )
    return out


def render_warnings(request: ProfileRequest, selection: Selection, base: dict[str, Any] | None = None) -> list[str]:
    """What a user should know before applying the rendered DGD."""
    local = local_model_warning(request)
    return ([local] if local else []) + base_precision_warnings(request, selection, base)


def describe(request: ProfileRequest, selection: Selection, base: dict[str, Any] | None = None) -> str:
    rep = selection.replicas
    chosen = selection.deployment
    ttft, itl = selection.planner_targets()
    sla = f"SLA TTFT {ttft:g} ms, ITL {itl:g} ms"
    lines = [f"Rendered by slaprof: {request.model} on {request.backend}, {selection.gpu}"]
    if chosen is not None and chosen.mode == "agg":
        from slaprof.steps.dag.render_agg import PLANNER_OMITTED

        lines += [f"aggregated: {chosen.shape} on {chosen.gpus} GPUs; {sla}", PLANNER_OMITTED]
    else:
        prefill = selection.prefill.candidate.label if selection.prefill else "-"
        decode = selection.decode.candidate.label if selection.decode else "-"
        lines.append(
            f"prefill {prefill}{f' x{rep.prefill}' if rep else ''}, "
            f"decode {decode}{f' x{rep.decode}' if rep else ''}; {sla}"
        )
        if rep and request.sla.request_rate:
            lines.append(f"replicas sized for {rep.request_rate:g} requests/s ({rep.total_gpus} GPUs)")
        elif rep:
            lines.append(
                f"replicas rate-matched within {selection.gpu_budget or rep.total_gpus} GPUs ({rep.total_gpus} used)"
            )
    note = selection.sla_note()
    if note:
        lines.append(f"note: {note}")
    lines += render_warnings(request, selection, base)
    return "\n".join(lines)


def load_base(path: str) -> dict[str, Any]:
    """The DGD document of a base file (other documents in it, e.g. ConfigMaps, are ignored)."""
    try:
        with open(path) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
    except OSError as exc:
        raise UserError(f"cannot read base DGD {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"base DGD {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    dgds = [d for d in docs if isinstance(d, dict) and d.get("kind") == DGD_KIND]
    if len(dgds) != 1:
        raise UserError(f"base file {path} must hold exactly one {DGD_KIND}, found {len(dgds)}")
    _check_base(dgds[0], origin=f"base DGD {path}")
    return dgds[0]


# ---------------------------------------------------------------------------
# DAG step
# ---------------------------------------------------------------------------
def run_step(store: ArtifactStore, base: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> str:
    """request.json + selection.json (+ planner JSON for a disaggregated graph) -> dgd.yaml; returns the YAML.

    `labels` go on every manifest (the run label the cluster's clean-up looks for)."""
    request = read_model(store, Layout.REQUEST, ProfileRequest)
    selection = read_model(store, Layout.SELECTION, Selection)

    def planner_json() -> tuple[str, str]:
        return store.get_bytes(Layout.PREFILL_JSON).decode(), store.get_bytes(Layout.DECODE_JSON).decode()

    docs = render_selection(request, selection, planner_json, base=base)
    for doc in docs if labels else []:
        doc.setdefault("metadata", {}).setdefault("labels", {}).update(labels or {})
    text = to_yaml(docs, header=describe(request, selection, base))
    store.put_bytes(Layout.DGD, text.encode(), "application/yaml")
    return text
