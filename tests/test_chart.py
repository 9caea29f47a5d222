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
    from workflows.render import manifests

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
    assert kinds == sorted(["WorkflowTemplate", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"]), kinds
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] in ARGO_KINDS:
            assert_valid_argo(doc)
    wt = one(docs, "WorkflowTemplate")
    assert wt["metadata"]["name"] == generated["WorkflowTemplate"]["metadata"]["name"] == "slaprof-profile"
    assert wt["spec"]["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


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
    allowed = {"metadata.namespace", "spec.serviceAccountName", "spec.imagePullSecrets", "spec.activeDeadlineSeconds"}
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
        if "pendingTimeout" in t:
            allowed.add(f"spec.templates[{i}].pendingTimeout")
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
        if "pendingTimeout" in templates[t["name"]]:
            assert t["pendingTimeout"] == values["profile"]["pendingTimeout"]
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
EXPECTED_RULES = {
    ("argoproj.io", "workflowtaskresults"): {"create", "patch"},
    ("nvidia.com", "dynamographdeployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("nvidia.com", "dynamographdeployments/status"): {"get"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get", "list", "watch"},
}


def rule_table(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


@pytest.mark.parametrize("values_file", [None, "full-values.yaml"])
def test_roles_are_least_privilege(chart: Any, values_file: str | None) -> None:
    values = ci_values(values_file) if values_file else {}
    docs = render(chart, values)
    ns = values.get("namespace") or NAMESPACE
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert all(r["kind"] == "Role" for r in roles)  # namespaced only
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in docs)
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field] and all("*" not in item for item in rule[field]), rule
        table = rule_table(role)
        expected = dict(EXPECTED_RULES)
        if role["metadata"]["namespace"] != ns:  # a deployment namespace: no executor rights
            del expected[("argoproj.io", "workflowtaskresults")]
        assert table == expected, role["metadata"]["namespace"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {r["metadata"]["namespace"] for r in roles}
    sa = one(docs, "ServiceAccount")
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ns}]
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[0]["metadata"]["name"],
        }
    namespaces = {r["metadata"]["namespace"] for r in roles}
    assert namespaces == {ns, *values.get("rbac", {}).get("deploymentNamespaces", [])}


def test_rbac_without_dynamo(chart: Any) -> None:
    role = one(render(chart, {"rbac": {"dynamoGraphDeployments": False}}), "Role")
    assert not any(group == "nvidia.com" for group, _ in rule_table(role))
    assert not any(d["kind"] in ("Role", "RoleBinding") for d in render(chart, {"rbac": {"create": False}}))


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
    assert not any(d["kind"] == "Secret" for d in docs)  # credentials stay in the user's Secret
    # Cloud identity instead of a Secret.
    sdk = {"artifacts": {"s3": {"endpoint": "s3.amazonaws.com", "useSDKCreds": True}}}
    repo = yaml.safe_load(one(render(chart, sdk), "ConfigMap", ref["configMap"])["data"][ref["key"]])
    assert repo["s3"]["useSDKCreds"] is True and "accessKeySecret" not in repo["s3"]


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
    assert not any(d["kind"] in ("Deployment", "Secret") for d in render(chart))  # off by default


def test_semaphore_configmap_matches_the_template(chart: Any, generated: dict[str, dict[str, Any]]) -> None:
    refs = [s["configMapKeyRef"] for s in generated["WorkflowTemplate"]["spec"]["synchronization"]["semaphores"]]
    assert refs, "the generated template takes no semaphore"
    for values, limit in (({}, "1"), ({"concurrency": {"runs": 3}}, "3")):
        docs = render(chart, values)
        for ref in refs:
            assert one(docs, "ConfigMap", ref["name"])["data"][ref["key"]] == limit


def test_chart_names_match_the_workflow_package(chart: Any) -> None:
    """The chart provides exactly what the generated workflow references (workflows/params.py)."""
    from workflows import params as p

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
    ({"profile": {"pendingTimeout": "10"}}, "pendingTimeout"),
    ({"profile": {"parameters": {"backend": "tgi"}}}, "backend"),
    ({"concurrency": {"runs": 0}}, "runs"),
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
