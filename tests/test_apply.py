"""Apply over real HTTP with the official kubernetes client, against the KMock-based API emulator."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import yaml

import slaprof.steps.dag.apply as apply_module
from slaprof.steps.cli.main import main
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import Layout, LocalStore
from slaprof.steps.dag.apply import (
    APPLIED_FIELDS_ANNOTATION,
    OwnerReference,
    apply_manifests,
    load_manifests,
    merge_patch,
    readiness,
    run_step,
)
from tests.plugins.clock import FakeClock
from tests.plugins.kube import CONFIGMAP_RESOURCE, DGD_RESOURCE, ready_status

NS = "serving"


def _docs() -> list[dict]:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "planner-profile-data"},
        "data": {"prefill_raw_data.json": '{"prefill_isl": [100]}', "decode_raw_data.json": "{}"},
    }
    dgd = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "qwen3-32b-vllm"},
        "spec": {
            "services": {
                "Frontend": {"componentType": "frontend", "replicas": 1},
                "decode": {
                    "componentType": "worker",
                    "subComponentType": "decode",
                    "replicas": 2,
                    "resources": {"limits": {"gpu": "4"}},
                    "extraPodSpec": {"mainContainer": {"args": ["--tensor-parallel-size", "4"]}},
                },
                "Planner": {"componentType": "planner", "replicas": 1},
            }
        },
    }
    return [configmap, dgd]


def _apply(cluster, docs=None, **kw):
    kw.setdefault("poll_interval", 0.02)
    return apply_manifests(docs or _docs(), NS, api_client=cluster.api_client(), **kw)


def test_create_then_reapply_changes_nothing(cluster):
    first = _apply(cluster)
    assert [(o.kind, o.action) for o in first.objects] == [
        ("ConfigMap", "created"),
        ("DynamoGraphDeployment", "created"),
    ]
    dgd = cluster.get(DGD_RESOURCE, NS, "qwen3-32b-vllm")
    assert dgd["spec"]["services"]["decode"]["replicas"] == 2
    assert dgd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "slaprof"
    assert "Planner" in json.loads(dgd["metadata"]["annotations"][APPLIED_FIELDS_ANNOTATION])["spec"]["services"]
    cm = cluster.get(CONFIGMAP_RESOURCE, NS, "planner-profile-data")
    assert cm["data"]["prefill_raw_data.json"] == '{"prefill_isl": [100]}'

    assert len(cluster.requests()) == 5  # discovery, then GET + POST for each object
    second = _apply(cluster)
    assert {o.action for o in second.objects} == {"unchanged"}
    assert len(cluster.requests()) == 8  # discovery and one GET per object: no write at all
    assert not cluster.requests("PATCH")
    assert cluster.versions(DGD_RESOURCE, NS, "qwen3-32b-vllm") == 1
    assert cluster.versions(CONFIGMAP_RESOURCE, NS, "planner-profile-data") == 1


def test_update_changes_only_what_the_file_changed(cluster):
    _apply(cluster)
    # the operator adds a field of its own; it must survive our update
    cluster.call(
        lambda: cluster.emulator.objects[DGD_RESOURCE, NS, "qwen3-32b-vllm"].patch(
            {"metadata": {"finalizers": ["nvidia.com/finalizer"]}, "spec": {"backendFramework": "vllm"}}
        )
    )
    docs = _docs()
    docs[1]["spec"]["services"]["decode"]["replicas"] = 3
    del docs[1]["spec"]["services"]["Planner"]
    result = _apply(cluster, docs)
    assert [o.action for o in result.objects] == ["unchanged", "updated"]
    dgd = cluster.get(DGD_RESOURCE, NS, "qwen3-32b-vllm")
    assert dgd["spec"]["services"]["decode"]["replicas"] == 3
    assert "Planner" not in dgd["spec"]["services"]  # removed from the file: removed from the cluster
    assert dgd["spec"]["backendFramework"] == "vllm"  # never ours: kept
    assert dgd["metadata"]["finalizers"] == ["nvidia.com/finalizer"]
    assert dgd["metadata"]["generation"] == 2  # our patch touched spec
    patches = cluster.requests("PATCH")
    assert patches[-1].data["metadata"]["resourceVersion"]  # optimistic concurrency


def test_owner_reference_on_every_object(cluster):
    owner = OwnerReference.parse(
        "apiVersion=nvidia.com/v1alpha1,kind=DynamoGraphDeploymentRequest,name=req,uid=1234-abcd,controller=true"
    )
    _apply(cluster, owner=owner)
    for resource, name in ((CONFIGMAP_RESOURCE, "planner-profile-data"), (DGD_RESOURCE, "qwen3-32b-vllm")):
        refs = cluster.get(resource, NS, name)["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoGraphDeploymentRequest",
                "name": "req",
                "uid": "1234-abcd",
                "controller": True,
            }
        ]
    with pytest.raises(UserError, match="missing uid"):
        OwnerReference.parse("apiVersion=v1,kind=Pod,name=x")


def test_wait_until_status_flips_to_ready(cluster):
    lines: list[str] = []

    def operator() -> None:
        time.sleep(0.15)
        cluster.set_status(
            NS, "qwen3-32b-vllm", ready_status(ready=False, state="pending", message="decode: 0/2 ready")
        )
        time.sleep(0.15)
        cluster.set_status(NS, "qwen3-32b-vllm", ready_status())

    thread = threading.Thread(target=operator)
    thread.start()
    result = _apply(cluster, wait=True, timeout=10, progress=lines.append)
    thread.join()
    assert result.ready is True and result.state == "successful"
    progress = "\n".join(lines)
    assert "state pending, Ready=False (decode: 0/2 ready)" in progress
    assert progress.rstrip().endswith("state successful, Ready=True (All resources are ready)")


def test_wait_ignores_a_status_written_for_the_previous_spec(cluster):
    _apply(cluster)
    cluster.set_status(NS, "qwen3-32b-vllm", ready_status(generation=1))
    docs = _docs()
    docs[1]["spec"]["services"]["decode"]["replicas"] = 4
    with pytest.raises(UserError, match="not ready after 0.2 s .*generation 1, waiting for 2"):
        _apply(cluster, docs, wait=True, timeout=0.2)
    cluster.set_status(NS, "qwen3-32b-vllm", ready_status(generation=2))
    assert _apply(cluster, docs, wait=True, timeout=5).ready is True


def test_wait_times_out_with_the_last_state(cluster, monkeypatch):
    _apply(cluster)
    cluster.set_status(NS, "qwen3-32b-vllm", ready_status(ready=False, state="pending", message="pulling images"))
    clock = FakeClock()
    monkeypatch.setattr(apply_module, "time", clock)
    start = clock.now
    with pytest.raises(UserError) as err:
        _apply(cluster, wait=True, timeout=30, poll_interval=10)
    assert clock.now - start == pytest.approx(30)  # polled up to the timeout, not past it
    assert clock.sleeps == [10, 10, 10]
    assert "not ready after 30 s (state pending, Ready=False (pulling images))" in str(err.value)
    assert "kubectl describe dgd qwen3-32b-vllm -n serving" in str(err.value)


def test_forbidden(cluster):
    cluster.fail(
        403,
        "Forbidden",
        'configmaps is forbidden: User "system:serviceaccount:x:y" cannot create '
        'resource "configmaps" in API group "" in the namespace "serving"',
        method="POST",
        plural="configmaps",
    )
    with pytest.raises(
        UserError,
        match=r"forbidden to create ConfigMap serving/planner-profile-data: .*cannot create"
        r".*ask a cluster admin for a Role granting get, create and patch on configmaps",
    ):
        _apply(cluster)


def test_missing_crd_applies_nothing(cluster):
    cluster.call(lambda: cluster.emulator.resources.__delitem__(DGD_RESOURCE))
    with pytest.raises(UserError, match="DynamoGraphDeployment CRD is not installed.*nothing was applied"):
        _apply(cluster)
    assert cluster.get(CONFIGMAP_RESOURCE, NS, "planner-profile-data") is None
    assert not cluster.requests("POST")


def test_not_found_on_create_when_discovery_is_refused(cluster):
    cluster.fail(403, "Forbidden", "discovery forbidden", method="GET", plural=None, name=None, times=1)
    cluster.call(lambda: cluster.emulator.resources.__delitem__(DGD_RESOURCE))
    with pytest.raises(UserError, match=r"dynamographdeployments.nvidia.com/v1alpha1 is not served by this cluster"):
        _apply(cluster)


def test_conflict_is_retried_then_reported(cluster):
    _apply(cluster)
    docs = _docs()
    docs[1]["spec"]["services"]["decode"]["replicas"] = 5
    cluster.fail(
        409, "Conflict", "the object has been modified", method="PATCH", plural="dynamographdeployments", times=1
    )
    assert _apply(cluster, docs).objects[1].action == "updated"  # one conflict: retried
    assert cluster.get(DGD_RESOURCE, NS, "qwen3-32b-vllm")["spec"]["services"]["decode"]["replicas"] == 5
    docs[1]["spec"]["services"]["decode"]["replicas"] = 6
    cluster.fail(409, "Conflict", "the object has been modified", method="PATCH", plural="dynamographdeployments")
    with pytest.raises(
        UserError,
        match="conflict while trying to update DynamoGraphDeployment "
        "serving/qwen3-32b-vllm: the object has been modified",
    ):
        _apply(cluster, docs)


def test_stale_resource_version_is_a_real_conflict(cluster):
    """The emulator refuses a patch computed from an old resourceVersion; apply re-reads and retries."""
    _apply(cluster)
    api = cluster.api_client()
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "nvidia.com",
            "v1alpha1",
            NS,
            "dynamographdeployments",
            "qwen3-32b-vllm",
            {"metadata": {"resourceVersion": "1"}, "spec": {"x": 1}},
        )
    assert err.value.status == 409


def test_invalid_object(cluster):
    cluster.fail(
        422,
        "Invalid",
        'DynamoGraphDeployment.nvidia.com "qwen3-32b-vllm" is invalid',
        method="POST",
        plural="dynamographdeployments",
        details={
            "causes": [
                {
                    "field": "spec.services[decode]",
                    "message": "combined resource name length 53 exceeds 45-character limit",
                }
            ]
        },
    )
    with pytest.raises(
        UserError,
        match=r"rejected DynamoGraphDeployment serving/qwen3-32b-vllm as invalid: .*"
        r"spec.services\[decode\]: combined resource name length 53",
    ):
        _apply(cluster)


def test_unreachable_api_server():
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host, cfg.retries = "http://127.0.0.1:9", 0  # discard port: nothing listens
    with pytest.raises(UserError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:9"):
        apply_manifests(_docs(), NS, api_client=client.ApiClient(cfg))


def test_manifest_checks():
    with pytest.raises(UserError, match="not valid YAML"):
        load_manifests("a: [", "x.yaml")
    with pytest.raises(UserError, match="document 2 .* has no metadata.name"):
        load_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(UserError, match="slaprof applies v1 ConfigMap, nvidia.com/v1alpha1 DynamoGraphDeployment"):
        apply_manifests([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}], NS, api_client=object())
    docs = _docs()
    docs[0]["metadata"]["namespace"] = "other"
    with pytest.raises(UserError, match="for namespace 'other' but --namespace is 'serving'"):
        apply_manifests(docs, NS, api_client=object())


def test_merge_patch_three_way():
    previous = {"spec": {"a": 0, "b": {"c": 0}, "gone": 0}}
    desired = {"spec": {"a": 1, "b": {"c": 2, "d": [1]}}}
    live = {"spec": {"a": 1, "b": {"c": 1}, "gone": 5, "theirs": 7}, "status": {"x": 1}}
    assert merge_patch(previous, desired, live) == {"spec": {"b": {"c": 2, "d": [1]}, "gone": None}}
    assert merge_patch(previous, desired, copy.deepcopy({**live, "spec": {**desired["spec"], "theirs": 7}})) == {}


def test_readiness_needs_condition_and_state():
    obj = {"metadata": {"generation": 1}, "status": ready_status()}
    assert readiness(obj)[0] is True
    obj["status"]["state"] = "pending"
    assert readiness(obj)[0] is False
    assert readiness({"metadata": {}, "status": {}}) == (False, "state no status yet")


def test_cli_apply_with_kubeconfig(cluster, tmp_path, capsys):
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "dgd.yaml"
    manifest.write_text(yaml.safe_dump_all(_docs()))
    argv = ["apply", str(manifest), "--namespace", NS, "--kubeconfig", str(kubeconfig)]
    assert main(argv) == 0
    assert "DynamoGraphDeployment/qwen3-32b-vllm created in namespace serving" in capsys.readouterr().out
    cluster.set_status(NS, "qwen3-32b-vllm", ready_status())
    assert main(argv + ["--wait", "--timeout", "5", "--poll-interval", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and "ready: ConfigMap/planner-profile-data unchanged" in out
    cluster.fail(403, "Forbidden", "nope", method="GET")
    assert main(argv) == 2
    assert "forbidden to read ConfigMap serving/planner-profile-data: nope" in capsys.readouterr().err


def test_run_step_uses_the_request_namespace(cluster, tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes(Layout.REQUEST, json.dumps({"model": "Qwen/Qwen3-32B", "deployment": {"namespace": NS}}).encode())
    store.put_bytes(Layout.DGD, yaml.safe_dump_all(_docs()).encode())
    result = run_step(store, wait=False, api_client=cluster.api_client())
    assert [o.namespace for o in result.objects] == [NS, NS]
    assert cluster.get(DGD_RESOURCE, NS, "qwen3-32b-vllm") is not None
