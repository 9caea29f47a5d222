"""The Helm chart, rendered by the real Helm engine (helm-python-sdk) and checked offline.

Every rendered Argo object is validated against the Argo v4.1.2 CRDs (strict); the
WorkflowTemplate must equal what Hera generated except at the fields values own; RBAC must
be exactly the least-privilege rule set; bad values must fail at render.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python.chart as helm_chart  # helm-python-sdk: the real Helm engine (a dev dependency)
import pytest
import yaml
from helm_python.errors import HelmError

from tests.conftest import ROOT
from tests.plugins.argo_schema import assert_valid_argo
from tests.plugins.pod_security import manifest_pods, restricted_violations

CHART = ROOT / "charts" / "slaprof"
GENERATED = {"WorkflowTemplate": "workflowtemplate.yaml", "CronWorkflow": "cronworkflow.yaml"}
NAMESPACE = "profiling"
RELEASE = "slaprof"
ARGO_KINDS = {"Workflow", "WorkflowTemplate", "CronWorkflow"}
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------------------
# The chart and the Hera output it installs
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chart_dir() -> Path:
    for name in GENERATED.values():
        assert (CHART / "files" / name).is_file(), (
            f"charts/slaprof/files/{name} is missing: run `slaprof workflow render --out DIR`"
        )
    return CHART


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    """What Hera generates now (workflows/), by kind: the chart must install exactly this."""
    from slaprof.workflows.render import manifests

    docs = {doc["kind"]: doc for doc in manifests().values()}
    assert set(docs) == set(GENERATED)
    return docs


@pytest.fixture(scope="module")
def chart(chart_dir: Path) -> Iterator[Any]:
    with helm_chart.Chart.load(chart_dir) as loaded:
        yield loaded


def ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / name).read_text())


def render_text(chart: Any, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every rendered object, parsed (Helm does not check that its output is YAML).
    Parsed once per distinct values; each caller gets its own copy."""
    key = json.dumps(values or {}, sort_keys=True)
    if key not in _RENDERED:
        docs: list[dict[str, Any]] = []
        for path, text in sorted(render_text(chart, values).items()):
            if path.endswith("NOTES.txt"):
                continue
            docs.extend(doc for doc in yaml.load_all(text, Loader=_Loader) if doc)
        _RENDERED[key] = docs
    return copy.deepcopy(_RENDERED[key])


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def diff_paths(a: Any, b: Any, path: str = "") -> set[str]:
    """Paths where two parsed manifests differ (lists of unequal length differ as a whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= diff_paths(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}" if path else key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(*(diff_paths(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))))
    return set() if a == b else {path}


def argo_str(value: Any) -> str:
    """A value as an Argo parameter string (booleans in lower case, as Helm prints them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def image_name(ref: str) -> str:
    return re.sub(r":[^:/]*$", "", ref.split("@")[0]).rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------
# Rendering, lint and schema
# ---------------------------------------------------------------------------
def test_default_values_render_valid_objects(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    docs = render(chart)
    kinds = sorted(d["kind"] for d in docs)
    expected = ["WorkflowTemplate", "ConfigMap", "Secret"] + ["ServiceAccount", "Role", "RoleBinding"] * 3
    assert kinds == sorted(expected), kinds
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] in ARGO_KINDS:
            assert_valid_argo(doc)
    wt = one(docs, "WorkflowTemplate")
    assert wt["metadata"]["name"] == generated["WorkflowTemplate"]["metadata"]["name"] == "slaprof-profile"
    assert one(docs, "ServiceAccount", wt["spec"]["serviceAccountName"])
    assert one(docs, "ServiceAccount", wt["spec"]["executor"]["serviceAccountName"])


def test_full_values_render_valid_objects(chart: Any) -> None:
    values = ci_values("full-values.yaml")
    docs = render(chart, values)
    ns = values["namespace"]
    argo = [d for d in docs if d["kind"] in ARGO_KINDS]
    assert sorted(d["kind"] for d in argo) == ["CronWorkflow", "WorkflowTemplate"]
    for doc in argo:
        assert_valid_argo(doc)
    for doc in docs:
        assert doc["metadata"]["namespace"] in {ns, *values["rbac"]["deploymentNamespaces"]}


@pytest.mark.parametrize("values_file", [None, "full-values.yaml", "minio-values.yaml"])
def test_lint_is_clean(chart_dir: Path, values_file: str | None) -> None:
    values = ci_values(values_file) if values_file else None
    report = helm_chart.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], report


def test_notes_tell_how_to_submit(chart: Any) -> None:
    notes = next(text for path, text in render_text(chart).items() if path.endswith("NOTES.txt"))
    assert f"argo submit -n {NAMESPACE} --from workflowtemplate/slaprof-profile" in notes
    assert "-p model=" in notes
    assert "WARNING: no artifact storage is configured" in notes
    notes = next(
        text for path, text in render_text(chart, ci_values("full-values.yaml")).items() if path.endswith("NOTES.txt")
    )
    assert "WARNING" not in notes and "argo cron list" in notes


# ---------------------------------------------------------------------------
# The WorkflowTemplate and CronWorkflow are Hera's, plus the value overrides
# ---------------------------------------------------------------------------
def test_default_workflow_template_is_the_generated_one(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    hera = generated["WorkflowTemplate"]
    wt = one(render(chart), "WorkflowTemplate")
    # The chart's defaults mean what the generated defaults mean, so only the namespace and
    # the chart's labels differ.
    changed = {p for p in diff_paths(hera, wt) if not p.startswith("metadata.labels")}
    assert changed == {"metadata.namespace"}, sorted(changed)


def test_full_values_override_exactly_their_fields(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    values = ci_values("full-values.yaml")
    hera = generated["WorkflowTemplate"]
    wt = one(render(chart, values), "WorkflowTemplate")

    templates = {t["name"]: t for t in hera["spec"]["templates"]}
    slaprof_containers = set()  # (template index, container path) holding the slaprof image
    for i, t in enumerate(hera["spec"]["templates"]):
        for field in ("script", "container"):
            if field in t and image_name(t[field]["image"]) == "slaprof":
                slaprof_containers.add(f"spec.templates[{i}].{field}")
    assert slaprof_containers, "the generated template runs no container in the slaprof image"
    param_index = {p["name"]: i for i, p in enumerate(hera["spec"]["arguments"]["parameters"])}
    set_params = {
        "gpu-resource",
        "gpu-node-selector",
        "gpu-tolerations",
        "bench-timeout",
        "apply-timeout",
        *values["profile"]["parameters"],
    }
    allowed = {
        "metadata.namespace",
        "spec.serviceAccountName",
        "spec.executor.serviceAccountName",
        "spec.imagePullSecrets",
        "spec.activeDeadlineSeconds",
    }
    allowed |= {f"spec.arguments.parameters[{param_index[n]}].value" for n in set_params}
    for c in slaprof_containers:
        allowed |= {f"{c}.image", f"{c}.imagePullPolicy"}
    s3_secret_readers = set()  # every container reading the S3 Secret follows existingSecret
    for i, t in enumerate(hera["spec"]["templates"]):
        for field in ("script", "container"):
            for j, source in enumerate(t.get(field, {}).get("envFrom", [])):
                if source.get("secretRef", {}).get("name") == "slaprof-s3":
                    allowed.add(f"spec.templates[{i}].{field}.envFrom[{j}].secretRef.name")
                    s3_secret_readers.add(t["name"])
        if "serviceAccountName" in t:  # the deployer's templates
            allowed.add(f"spec.templates[{i}].serviceAccountName")
        if (t.get("synchronization") or {}).get("semaphores"):  # GPU pods: Kueue, model cache, engine requests
            allowed.add(f"spec.templates[{i}].metadata.labels.kueue.x-k8s.io/queue-name")
            cache = [j for j, v in enumerate(t.get("volumes", [])) if v["name"] == "model-cache"]
            allowed |= {
                f"spec.templates[{i}].volumes[{j}].{k}" for j in cache for k in ("emptyDir", "persistentVolumeClaim")
            }
            engine = [f"sidecars[{j}]" for j, c in enumerate(t.get("sidecars", [])) if c["name"] == "engine"] or [
                "script"
            ]
            allowed |= {
                f"spec.templates[{i}].{engine[0]}.resources.requests.{k}" for k in values["bench"]["engineRequests"]
            }
        if t["name"] in values["profile"]["templateTimeouts"]:
            allowed.add(f"spec.templates[{i}].timeout")
    changed = {p for p in diff_paths(hera, wt) if not p.startswith("metadata.labels")}
    assert changed <= allowed, sorted(changed - allowed)

    # ... and each of them holds the value asked for.
    image = f"{values['image']['repository']}:{values['image']['tag']}@{values['image']['digest']}"
    for c in slaprof_containers:
        index, field = re.fullmatch(r"spec\.templates\[(\d+)\]\.(\w+)", c).groups()
        container = wt["spec"]["templates"][int(index)][field]
        assert container["image"] == image and container["imagePullPolicy"] == values["image"]["pullPolicy"]
    assert s3_secret_readers, "no generated template reads the S3 Secret"
    for t in wt["spec"]["templates"]:
        for field in ("script", "container"):
            secrets = [e["secretRef"]["name"] for e in t.get(field, {}).get("envFrom", []) if "secretRef" in e]
            if field in t and t["name"] in s3_secret_readers:
                assert secrets == [values["artifacts"]["s3"]["existingSecret"]], t["name"]
            if field in t and image_name(t[field]["image"]) != "slaprof":  # e.g. the engine image
                assert t[field]["image"] == templates[t["name"]][field]["image"]
        if "serviceAccountName" in templates[t["name"]]:
            assert t["serviceAccountName"] == values["serviceAccount"]["deployerName"], t["name"]
        if (t.get("synchronization") or {}).get("semaphores"):
            assert t["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == values["gpu"]["kueueQueueName"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in t["volumes"] if v["name"] == "model-cache"]
            assert claims == [values["bench"]["modelCache"]["existingClaim"]], t["name"]
            engine_container = next((c for c in t.get("sidecars", []) if c["name"] == "engine"), t["script"])
            for key, value in values["bench"]["engineRequests"].items():
                assert engine_container["resources"]["requests"][key] == value, (t["name"], key)
        expected_timeout = values["profile"]["templateTimeouts"].get(t["name"], templates[t["name"]].get("timeout"))
        assert t.get("timeout") == expected_timeout, t["name"]
    params = {p["name"]: p["value"] for p in wt["spec"]["arguments"]["parameters"]}
    assert params["gpu-resource"] == values["gpu"]["resourceName"]
    assert yaml.safe_load(params["gpu-node-selector"]) == values["gpu"]["nodeSelector"]
    assert yaml.safe_load(params["gpu-tolerations"]) == values["gpu"]["tolerations"]
    assert params["bench-timeout"] == values["profile"]["benchTimeout"]
    assert params["apply-timeout"] == str(values["profile"]["applyTimeoutSeconds"])
    for name, value in values["profile"]["parameters"].items():
        assert params[name] == argo_str(value)
    assert wt["spec"]["activeDeadlineSeconds"] == values["profile"]["activeDeadlineSeconds"]
    assert wt["spec"]["serviceAccountName"] == values["serviceAccount"]["name"]
    assert wt["spec"]["executor"] == {"serviceAccountName": values["serviceAccount"]["name"]}
    assert wt["spec"]["imagePullSecrets"] == [{"name": n} for n in values["imagePullSecrets"]]
    assert wt["metadata"]["namespace"] == values["namespace"]
    # Argo's own expressions survive Helm untouched.
    assert "{{workflow.parameters.gpu-resource}}" in yaml.safe_dump(wt)


def test_cron_workflow_from_values(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    values = ci_values("full-values.yaml")
    docs = render(chart, values)
    cron, wt = one(docs, "CronWorkflow"), one(docs, "WorkflowTemplate")
    hera = generated["CronWorkflow"]
    assert cron["metadata"]["name"] == hera["metadata"]["name"] == "slaprof-reprofile"
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == wt["metadata"]["name"]
    c = values["cron"]
    for key in (
        "schedules",
        "timezone",
        "suspend",
        "concurrencyPolicy",
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ):
        assert cron["spec"][key] == c[key], key
    run_params = {p["name"]: p["value"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]}
    hera_params = {
        p["name"]: p["value"] for p in hera["spec"]["workflowSpec"].get("arguments", {}).get("parameters", [])
    }
    assert run_params == {**hera_params, **{k: argo_str(v) for k, v in c["parameters"].items()}}
    allowed = {"metadata.namespace", *(f"spec.{k}" for k in c if k not in ("enabled", "parameters"))}
    changed = {
        p for p in diff_paths(hera, cron) if not p.startswith(("metadata.labels", "spec.workflowSpec.arguments."))
    }
    assert changed <= allowed, sorted(changed - allowed)
    assert not any(d["kind"] == "CronWorkflow" for d in render(chart))  # off by default


# ---------------------------------------------------------------------------
# RBAC, artifact repository, semaphore, MinIO
# ---------------------------------------------------------------------------
EXECUTOR_RULES = {("argoproj.io", "workflowtaskresults", None): {"create", "patch"}}
DEPLOYER_RULES = {
    ("nvidia.com", "dynamographdeployments", None): {"get", "create", "patch", "delete"},
    ("", "configmaps", None): {"create"},
    ("", "configmaps", ("<rbac.configMapNames>",)): {"get", "patch", "delete"},
}
SUBMITTER_RULES = {
    ("argoproj.io", "workflows", None): {"create", "get", "list", "watch"},
    ("argoproj.io", "workflowtemplates", None): {"get", "list"},
}


def rule_table(role: dict[str, Any]) -> dict[tuple[str, str, tuple[str, ...] | None], set[str]]:
    table: dict[tuple[str, str, tuple[str, ...] | None], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule  # no nonResourceURLs
        names = tuple(rule["resourceNames"]) if "resourceNames" in rule else None
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource, names), set()).update(rule["verbs"])
    return table


@pytest.mark.parametrize("values_file", [None, "full-values.yaml"])
def test_each_account_gets_exactly_what_it_uses(chart: Any, values_file: str | None) -> None:
    """The executor records outputs; the deployer (apply, cleanup) touches DGDs and the named
    ConfigMaps in the deployment namespaces; the submitter creates and watches runs. Nobody gets
    pods or pods/log, or anything cluster-wide."""
    values = ci_values(values_file) if values_file else {}
    docs = render(chart, values)
    ns = values.get("namespace") or NAMESPACE
    sa = {**{"name": "slaprof", "deployerName": "slaprof-deployer"}, **values.get("serviceAccount", {})}
    submitter = values.get("submitter", {}).get("name", "slaprof-submitter")
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in docs)
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"}
    bindings = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings)
    for role in roles.values():
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in item for item in rule[field]), rule
            assert not {"pods", "pods/log"} & set(rule["resources"]), rule
    deployment_namespaces = {ns, *values.get("rbac", {}).get("deploymentNamespaces", [])}
    config_maps = tuple(values.get("rbac", {}).get("configMapNames", []))
    deployer_rules: dict[tuple[str, str, tuple[str, ...] | None], set[str]] = {}
    for (g, r, named), verbs in DEPLOYER_RULES.items():  # no names listed: the named rights cover every ConfigMap
        deployer_rules.setdefault((g, r, (config_maps or None) if named else None), set()).update(verbs)
    expected: dict[tuple[str, str], tuple[Any, Any]] = {
        (ns, "slaprof-executor"): (EXECUTOR_RULES, sa["name"]),
        (ns, "slaprof-submitter"): (SUBMITTER_RULES, submitter),
    }
    expected |= {(target, "slaprof-deployer"): (deployer_rules, sa["deployerName"]) for target in deployment_namespaces}
    assert set(roles) == set(expected)
    for key, (rules, account) in expected.items():
        assert rule_table(roles[key]) == rules, key
        assert bindings[key]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": ns}], key
        assert bindings[key]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": key[1]}
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {sa["name"], sa["deployerName"], submitter}
    for name in (sa["name"], sa["deployerName"]):  # the pods' cloud identity (IRSA) on both
        assert accounts[name]["metadata"].get("annotations") == sa.get("annotations"), name
    token = one(docs, "Secret", f"{sa['name']}.service-account-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": sa["name"]}


def test_only_apply_and_cleanup_carry_a_kubernetes_api_token(chart: Any) -> None:
    wt = one(render(chart, ci_values("full-values.yaml")), "WorkflowTemplate")
    spec = wt["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["executor"] == {"serviceAccountName": "llm-profiler"}
    with_token = {
        t["name"]: t["serviceAccountName"] for t in spec["templates"] if t.get("automountServiceAccountToken")
    }
    assert with_token == {"apply": "llm-deployer", "cleanup": "llm-deployer"}


def test_rbac_without_dynamo(chart: Any) -> None:
    docs = render(chart, {"rbac": {"dynamoGraphDeployments": False}})
    for role in (d for d in docs if d["kind"] == "Role"):
        assert not any(group == "nvidia.com" for group, _, _ in rule_table(role))
    assert not any(d["kind"] in ("Role", "RoleBinding") for d in render(chart, {"rbac": {"create": False}}))
    role = one(render(chart, {"rbac": {"configMapNames": []}}), "Role", "slaprof-deployer")
    assert rule_table(role)[("", "configmaps", None)] == {"create", "get", "patch", "delete"}


def test_artifact_repository_bring_your_own_s3(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    values = ci_values("full-values.yaml")
    s3 = values["artifacts"]["s3"]
    docs = render(chart, values)
    ref = generated["WorkflowTemplate"]["spec"]["artifactRepositoryRef"]
    repo_cm = one(docs, "ConfigMap", ref["configMap"])
    assert repo_cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"] == ref["key"]
    repo = yaml.safe_load(repo_cm["data"][ref["key"]])
    assert repo == {
        "archiveLogs": True,
        "s3": {
            "endpoint": s3["endpoint"],
            "bucket": s3["bucket"],
            "insecure": s3["insecure"],
            "region": s3["region"],
            "accessKeySecret": {"name": s3["existingSecret"], "key": s3["accessKeyKey"]},
            "secretKeySecret": {"name": s3["existingSecret"], "key": s3["secretKeyKey"]},
        },
    }
    step_cm = one(docs, "ConfigMap", "slaprof-s3")
    assert step_cm["data"] == {
        "SLAPROF_S3_ENDPOINT": s3["endpoint"],
        "SLAPROF_S3_BUCKET": s3["bucket"],
        "SLAPROF_S3_SECURE": "0" if s3["insecure"] else "1",
        "AWS_REGION": s3["region"],
    }
    # credentials stay in the user's Secret: the chart's only Secret is the executor's token
    assert [d["type"] for d in docs if d["kind"] == "Secret"] == ["kubernetes.io/service-account-token"]


def test_sdk_credentials_read_no_secret(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    """useSDKCreds: the chart creates no Secret, so no pod may reference one (CreateContainerConfigError);
    the steps are told to take the pods' cloud identity."""
    ref = generated["WorkflowTemplate"]["spec"]["artifactRepositoryRef"]
    sdk = {"artifacts": {"s3": {"endpoint": "s3.amazonaws.com", "useSDKCreds": True}}}
    docs = render(chart, sdk)
    repo = yaml.safe_load(one(docs, "ConfigMap", ref["configMap"])["data"][ref["key"]])
    assert repo["s3"]["useSDKCreds"] is True and "accessKeySecret" not in repo["s3"]
    assert one(docs, "ConfigMap", "slaprof-s3")["data"]["SLAPROF_S3_USE_SDK_CREDS"] == "1"
    wt = one(docs, "WorkflowTemplate")
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for template in wt["spec"]["templates"]:
        for c in [template.get("script") or template.get("container") or {}, *template.get("sidecars", [])]:
            referenced = {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            referenced |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in (e.get("valueFrom") or {}) and not e["valueFrom"]["secretKeyRef"].get("optional")
            }
            assert referenced <= created, (template["name"], referenced)


def test_optional_minio(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    values = ci_values("minio-values.yaml")
    docs = render(chart, values)
    name = f"{RELEASE}-minio"
    deploy, svc, secret = one(docs, "Deployment", name), one(docs, "Service", name), one(docs, "Secret", name)
    one(docs, "PersistentVolumeClaim", name)
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image = pod["containers"][0]["image"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.[-0-9TZ]+@sha256:[0-9a-f]{64}", image), image
    bucket = values["artifacts"]["s3"]["bucket"]
    assert pod["initContainers"][0]["command"] == ["mkdir", "-p", f"/data/{bucket}"]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert svc["spec"]["selector"] == deploy["spec"]["template"]["metadata"]["labels"]
    ref = generated["WorkflowTemplate"]["spec"]["artifactRepositoryRef"]
    repo = yaml.safe_load(one(docs, "ConfigMap", ref["configMap"])["data"][ref["key"]])["s3"]
    assert repo["endpoint"] == f"{name}.{NAMESPACE}.svc:9000" and repo["insecure"] is True
    assert repo["accessKeySecret"] == {"name": name, "key": "AWS_ACCESS_KEY_ID"}
    assert one(docs, "ConfigMap", "slaprof-s3")["data"]["SLAPROF_S3_ENDPOINT"] == repo["endpoint"]
    # The workflow reads the MinIO Secret for the steps' own S3 access too.
    wt = one(docs, "WorkflowTemplate")
    env_secrets = {
        e["secretRef"]["name"]
        for t in wt["spec"]["templates"]
        for f in ("script", "container")
        if f in t
        for e in t[f].get("envFrom", [])
        if "secretRef" in e
    }
    assert env_secrets == {name}
    assert not any(d["kind"] == "Deployment" or d["metadata"]["name"] == name for d in render(chart))  # off by default


def test_gpu_semaphores_are_sized_from_the_gpus_the_chart_is_told_about(
    chart: Any, generated: dict[str, dict[str, Any]]
) -> None:
    refs = [
        s["configMapKeyRef"]
        for t in generated["WorkflowTemplate"]["spec"]["templates"]
        for s in (t.get("synchronization") or {}).get("semaphores", [])
    ]
    assert refs and {r["key"] for r in refs} == {"gpus-{{inputs.parameters.gpus}}"}
    assert "synchronization" not in generated["WorkflowTemplate"]["spec"]  # nothing held for a whole run
    for values, expected in (
        ({}, {"gpus-1": "8", "gpus-2": "4", "gpus-4": "2", "gpus-8": "1"}),
        ({"gpu": {"total": 12}}, {"gpus-1": "12", "gpus-2": "6", "gpus-4": "3", "gpus-8": "1"}),
        ({"gpu": {"total": 1}}, {"gpus-1": "1"}),
    ):
        docs = render(chart, values)
        assert one(docs, "ConfigMap", refs[0]["name"])["data"] == expected, values


def test_chart_names_match_the_workflow_package(chart: Any) -> None:
    """The chart provides exactly what the generated workflow references (workflows/params.py)."""
    from slaprof.workflows import params as p

    docs = render(chart, ci_values("full-values.yaml"))
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ConfigMap", p.S3_CONFIGMAP) in names
    assert ("ConfigMap", p.ARTIFACT_REPOSITORY_CONFIGMAP) in names
    assert ("ConfigMap", p.SEMAPHORE_CONFIGMAP) in names
    assert ("WorkflowTemplate", p.TEMPLATE_NAME) in names and ("CronWorkflow", p.CRON_NAME) in names
    # Without a Secret of the user's, the workflow keeps reading the generated default name.
    wt = one(render(chart), "WorkflowTemplate")
    env_secrets = {
        e["secretRef"]["name"]
        for t in wt["spec"]["templates"]
        for f in ("script", "container")
        if f in t
        for e in t[f].get("envFrom", [])
        if "secretRef" in e
    }
    assert env_secrets == {p.S3_SECRET}
    assert helm_chart.Chart.load(CHART).metadata["appVersion"] == p.VERSION


# ---------------------------------------------------------------------------
# Bad values fail at render, naming the value
# ---------------------------------------------------------------------------
BAD_VALUES = [
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"imagePullSecrets": "regcred"}, "imagePullSecrets"),
    ({"gpu": {"resourceName": "gpu"}}, "resourceName"),
    ({"gpu": {"tolerations": [{"key": "a", "operator": "Maybe"}]}}, "operator"),
    ({"profile": {"activeDeadlineSeconds": -5}}, "activeDeadlineSeconds"),
    ({"profile": {"activeDeadlineSeconds": "1h"}}, "activeDeadlineSeconds"),
    ({"profile": {"benchTimeout": "four hours"}}, "benchTimeout"),
    ({"profile": {"parameters": {"no-such-parameter": "x"}}}, "no-such-parameter"),
    ({"profile": {"templateTimeouts": {"no-such-template": "1h"}}}, "no-such-template"),
    ({"profile": {"templateTimeouts": {"fit": "soon"}}}, "templateTimeouts"),
    ({"profile": {"pendingTimeout": "30m"}}, "pendingTimeout"),
    ({"cron": {"enabled": True, "timezone": "Mars/Olympus"}}, "timezone"),
    ({"cron": {"enabled": True, "timezone": "Europe/Atlantis"}}, "timezone"),
    ({"gpu": {"total": 0}}, "total"),
    ({"bench": {"engineRequests": {"gpu": "1"}}}, "engineRequests"),
    ({"profile": {"parameters": {"backend": "tgi"}}}, "backend"),
    ({"concurrency": {"runs": 1}}, "concurrency"),
    ({"cron": {"enabled": True, "schedules": ["every monday"]}}, "schedules"),
    ({"cron": {"enabled": True, "concurrencyPolicy": "Never"}}, "concurrencyPolicy"),
    ({"cron": {"enabled": True}}, "cron.parameters.model"),
    ({"cron": {"enabled": True}, "profile": {"parameters": {"model": "Qwen/Qwen3-8B"}}}, "cron.parameters.model"),
    ({"cron": {"enabled": True, "parameters": {"model": "m", "pick": "sometimes"}}}, "pick"),
    ({"artifacts": {"s3": {"endpoint": "https://s3.example.com"}}}, "endpoint"),
    ({"artifacts": {"s3": {"endpoint": "s3.example.com"}}}, "existingSecret"),
    (
        {"artifacts": {"s3": {"endpoint": "s3.example.com", "existingSecret": "s3", "accessKeyKey": "id"}}},
        "AWS_ACCESS_KEY_ID",
    ),
    ({"artifacts": {"s3": {"bucket": "B"}}}, "bucket"),
    ({"minio": {"enabled": True}}, "rootPassword"),
    ({"minio": {"enabled": True, "rootPassword": "short"}}, "rootPassword"),
    (
        {"minio": {"enabled": True, "rootPassword": "long-enough"}, "artifacts": {"s3": {"endpoint": "s3:9000"}}},
        "only one",
    ),
    ({"serviceAcount": {"name": "x"}}, "serviceAcount"),
    ({"rbac": {"deploymentNamespaces": ["Bad_NS"]}}, "deploymentNamespaces"),
]


@pytest.mark.parametrize("values,mentions", BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_are_rejected(chart: Any, values: dict[str, Any], mentions: str) -> None:
    with pytest.raises(HelmError) as err:
        render_text(chart, values)
    assert mentions in str(err.value), str(err.value)


def test_missing_generated_files_fail_with_a_fix(tmp_path: Path) -> None:
    copy_dir = tmp_path / "slaprof"
    shutil.copytree(CHART, copy_dir, ignore=shutil.ignore_patterns("files"))
    with helm_chart.Chart.load(copy_dir) as bare, pytest.raises(HelmError) as err:
        bare.render({}, name=RELEASE, namespace=NAMESPACE)
    assert "files/workflowtemplate.yaml is missing" in str(err.value)
    assert "slaprof workflow render" in str(err.value)


def test_values_yaml_passes_its_own_schema(chart: Any) -> None:
    chart.validate_schema(copy.deepcopy(chart.values))
    for name in ("full-values.yaml", "minio-values.yaml"):
        chart.validate_schema(chart.merge_values(ci_values(name)))


# ---------------------------------------------------------------------------
# Pod Security "restricted", the Argo version, the time zone, the cron history
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("values_file", [None, "full-values.yaml", "minio-values.yaml"])
def test_every_rendered_pod_passes_the_restricted_profile(chart: Any, values_file: str | None) -> None:
    """Every pod the chart installs or the WorkflowTemplate creates: Pod Security "restricted" (and
    read-only roots), so a namespace labelled pod-security.kubernetes.io/enforce=restricted admits them."""
    pods = manifest_pods(render(chart, ci_values(values_file) if values_file else None))
    assert any(key.startswith("WorkflowTemplate/") for key in pods)
    if values_file == "minio-values.yaml":
        assert "Deployment/slaprof-minio" in pods
    problems = {key: restricted_violations(pod) for key, pod in pods.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


def test_read_only_pods_write_only_to_volumes(chart: Any) -> None:
    """What a step writes (HOME, /tmp with Hera's outputs, the engine's model cache) is a mounted volume."""
    wt = one(render(chart), "WorkflowTemplate")
    for template in wt["spec"]["templates"]:
        main = template.get("script")
        if main is None:
            continue
        for c in [main, *template.get("sidecars", [])]:
            mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            writes = [env["HOME"], "/tmp", *(v for k, v in env.items() if k in ("HF_HOME", "hera__outputs_directory"))]
            for path in writes:
                assert any(path == m or path.startswith(m + "/") for m in mounts), (
                    template["name"],
                    c.get("name"),
                    path,
                )
        for output in (template.get("outputs") or {}).get("parameters", []):
            path = (output.get("valueFrom") or {}).get("path")
            assert path is None or path.startswith("/tmp/"), path


def test_chart_declares_the_argo_version_its_manifests_need(chart: Any) -> None:
    """The chart requires Argo 4.0: nothing it renders may use a field that appeared in 4.1."""
    requires = helm_chart.Chart.load(CHART).metadata["annotations"]["slaprof.io/requires"]
    assert requires == "argo-workflows>=4.0"
    newer_fields = ("pendingTimeout",)  # added in Argo 4.1.0
    for values_file in (None, "full-values.yaml"):
        text = json.dumps(render(chart, ci_values(values_file) if values_file else None))
        for field in newer_fields:
            assert f'"{field}"' not in text, field


def test_time_zones_are_the_iana_names(chart: Any) -> None:
    import zoneinfo

    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["definitions"]["timezone"]["enum"]
    assert {"", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"} <= set(names)
    for name in names[1:]:
        zoneinfo.ZoneInfo(name)  # every allowed name is a real zone
    values = {"cron": {"enabled": True, "timezone": "Asia/Kolkata", "parameters": {"model": "Qwen/Qwen3-8B"}}}
    assert one(render(chart, values), "CronWorkflow")["spec"]["timezone"] == "Asia/Kolkata"


def test_cron_history_limits_default_to_the_documented_ones(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    """README: history limits 3/5, what the generated CronWorkflow says; the chart's defaults agree."""
    values = {"cron": {"enabled": True, "parameters": {"model": "Qwen/Qwen3-8B"}}}
    spec = one(render(chart, values), "CronWorkflow")["spec"]
    hera = generated["CronWorkflow"]["spec"]
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 5)
    assert (hera["successfulJobsHistoryLimit"], hera["failedJobsHistoryLimit"]) == (3, 5)
    assert "history limits 3/5" in (ROOT / "README.md").read_text()
