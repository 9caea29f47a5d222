"""The exit handler's undo (slaprof.steps.dag.undo) against the KMock API emulator over HTTP: a failed run deletes
only what it created, gives back what it updated, and leaves a deployment that became ready alone.

Each run keeps its artifacts in its own folder, as each Argo run has its own S3 prefix; `apply`
writes the record the exit handler reads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import Layout, LocalStore, read_model
from slaprof.steps.dag import undo
from slaprof.steps.dag.apply import RECORD_KEY, RUN_LABEL, ApplyResult, run_step
from tests.plugins.kube import CONFIGMAP_RESOURCE, DGD_RESOURCE, ready_status

NS = "serving"
DGD = "qwen3-32b-vllm"
PLANNER = "planner-profile-data"


def _docs(run: str, replicas: int, prefill_isl: list[int]) -> list[dict]:
    """What render writes for a run: the planner ConfigMap, then the DGD, both labelled with the run."""
    labels = {RUN_LABEL: run}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PLANNER, "labels": labels},
            "data": {"prefill_raw_data.json": json.dumps({"prefill_isl": prefill_isl})},
        },
        {
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeployment",
            "metadata": {"name": DGD, "labels": labels},
            "spec": {"services": {"decode": {"componentType": "worker", "replicas": replicas}}},
        },
    ]


def _run(tmp_path: Path, run: str, replicas: int, prefill_isl: list[int]) -> LocalStore:
    store = LocalStore(tmp_path / run)
    store.put_bytes(Layout.REQUEST, json.dumps({"model": "Qwen/Qwen3-32B", "deployment": {"namespace": NS}}).encode())
    store.put_bytes(Layout.DGD, yaml.safe_dump_all(_docs(run, replicas, prefill_isl)).encode())
    return store


def _apply(cluster, store: LocalStore, **kw) -> None:
    run_step(store, api_client=cluster.api_client(), poll_interval=0.01, **kw)


def test_a_failed_reprofile_gives_the_serving_deployment_back(cluster, tmp_path):
    """Run A deployed; run B (same DGD name) updated it and never became ready: B's exit handler
    restores A's spec and planner data instead of deleting the DGD, and B never relabelled it."""
    first = _run(tmp_path, "run-a", replicas=2, prefill_isl=[100, 200])
    _apply(cluster, first, wait=False)
    cluster.set_status(NS, DGD, ready_status())
    serving = cluster.get(DGD_RESOURCE, NS, DGD)
    planner = cluster.get(CONFIGMAP_RESOURCE, NS, PLANNER)

    second = _run(tmp_path, "run-b", replicas=4, prefill_isl=[300])
    with pytest.raises(UserError, match="not ready"):
        _apply(cluster, second, wait=True, timeout=0.05)  # status is for the previous generation
    record = read_model(second, RECORD_KEY, ApplyResult)
    assert [(o.kind, o.action) for o in record.objects] == [
        ("ConfigMap", "updated"),
        ("DynamoGraphDeployment", "updated"),
    ]
    assert record.ready is None
    during = cluster.get(DGD_RESOURCE, NS, DGD)
    assert during["spec"]["services"]["decode"]["replicas"] == 4
    assert during["metadata"]["labels"][RUN_LABEL] == "run-a"  # an update never relabels

    lines = undo.run_step(second, api_client=cluster.api_client())
    assert lines == [
        f"DynamoGraphDeployment {NS}/{DGD}: restored what this run's update replaced",
        f"ConfigMap {NS}/{PLANNER}: restored what this run's update replaced",
    ]
    after = cluster.get(DGD_RESOURCE, NS, DGD)
    assert after["metadata"]["uid"] == serving["metadata"]["uid"]  # the same object, never deleted
    assert after["spec"] == serving["spec"]
    assert after["metadata"]["labels"] == serving["metadata"]["labels"]
    assert after["metadata"]["annotations"] == serving["metadata"]["annotations"]
    assert cluster.get(CONFIGMAP_RESOURCE, NS, PLANNER)["data"] == planner["data"]


def test_a_failed_first_run_deletes_what_it_created_and_nothing_else(cluster, tmp_path):
    from kubernetes import client

    api = client.CustomObjectsApi(cluster.api_client())
    other = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "someone-elses", "namespace": NS, "labels": {RUN_LABEL: "run-c"}},
        "spec": {},
    }
    api.create_namespaced_custom_object("nvidia.com", "v1alpha1", NS, "dynamographdeployments", other)
    store = _run(tmp_path, "run-c", replicas=1, prefill_isl=[100])
    with pytest.raises(UserError, match="not ready"):
        _apply(cluster, store, wait=True, timeout=0.05)
    lines = undo.run_step(store, api_client=cluster.api_client())
    assert lines == [
        f"DynamoGraphDeployment {NS}/{DGD}: deleted (this run created it)",
        f"ConfigMap {NS}/{PLANNER}: deleted (this run created it)",
    ]
    assert cluster.get(DGD_RESOURCE, NS, DGD) is None and cluster.get(CONFIGMAP_RESOURCE, NS, PLANNER) is None
    # labelled with the same run, but not in its record: never touched
    assert cluster.get(DGD_RESOURCE, NS, "someone-elses") is not None
    deletes = cluster.requests("DELETE")
    assert len(deletes) == 2 and all(d.data["preconditions"]["uid"] for d in deletes)


def test_a_drift_verdict_after_a_ready_deployment_undoes_nothing(cluster, tmp_path):
    store = _run(tmp_path, "run-d", replicas=2, prefill_isl=[100])
    _apply(cluster, store, wait=False)
    cluster.set_status(NS, DGD, ready_status())
    _apply(cluster, store, wait=True, timeout=5)  # what the `apply` task does: it waits until ready
    assert read_model(store, RECORD_KEY, ApplyResult).ready is True
    before = len(cluster.requests())
    # `record` then fails the run on drift: the exit handler runs with status Failed
    assert undo.run_step(store, api_client=cluster.api_client()) == [
        "nothing: the deployment this run applied became ready, so it stays"
    ]
    assert len(cluster.requests()) == before  # not even a read
    assert cluster.get(DGD_RESOURCE, NS, DGD) is not None


def test_what_someone_changed_since_is_left_alone(cluster, tmp_path):
    first = _run(tmp_path, "run-e", replicas=2, prefill_isl=[100])
    _apply(cluster, first, wait=False)
    second = _run(tmp_path, "run-f", replicas=3, prefill_isl=[200])
    _apply(cluster, second, wait=False)
    # someone scales the DGD by hand after run-f's update; someone edits the planner data too
    cluster.call(
        lambda: cluster.emulator.objects[DGD_RESOURCE, NS, DGD].patch(
            {"metadata": {"generation": 9}, "spec": {"services": {"decode": {"replicas": 8}}}}
        )
    )
    cluster.call(
        lambda: cluster.emulator.objects[CONFIGMAP_RESOURCE, NS, PLANNER].patch(
            {"metadata": {"resourceVersion": "9999"}, "data": {"extra": "x"}}
        )
    )
    lines = undo.run_step(second, api_client=cluster.api_client())
    assert all("changed by someone else" in line for line in lines), lines
    assert cluster.get(DGD_RESOURCE, NS, DGD)["spec"]["services"]["decode"]["replicas"] == 8


def test_a_retried_apply_keeps_what_the_first_attempt_created(cluster, tmp_path):
    """The pod of `apply` is retried after it created the DGD: the second attempt finds it existing,
    yet the record still says the run created it, so the exit handler deletes it."""
    store = _run(tmp_path, "run-g", replicas=1, prefill_isl=[100])
    _apply(cluster, store, wait=False)
    docs = _docs("run-g", replicas=2, prefill_isl=[100])  # the retry renders the same run again
    store.put_bytes(Layout.DGD, yaml.safe_dump_all(copy.deepcopy(docs)).encode())
    _apply(cluster, store, wait=False)
    record = read_model(store, RECORD_KEY, ApplyResult)
    assert [o.action for o in record.objects] == ["created", "created"]
    undo.run_step(store, api_client=cluster.api_client())
    assert cluster.get(DGD_RESOURCE, NS, DGD) is None


def test_a_run_that_applied_nothing_touches_nothing(tmp_path):
    assert undo.run_step(LocalStore(tmp_path), api_client=object()) == [
        "nothing: the run applied nothing to the cluster"
    ]
