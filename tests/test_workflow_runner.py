"""Each DAG task run exactly as its pod runs it, with Argo's part played by this test.

For every task the test reads the generated WorkflowTemplate: it resolves the task's arguments
(`{{workflow.*}}`, `{{tasks.*.outputs.parameters.*}}`, `{{item.*}}`) and `when`/`depends`, writes
`{{inputs.parameters}}` as the script source, runs `python -m hera.workflows.runner -e ...` with
`hera__outputs_directory`, then reads the output parameters from their `valueFrom.path` and uploads
the output artifacts to their S3 keys, as Argo's executor does. The steps keep their artifacts
in a real S3 server (`weed mini`): plan -> bench x2 (offline) -> fit -> render -> record, then a
manual pick.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from slaprof.steps.dynamo import dynamo_releases
from slaprof.workflows.render import workflow_template_dict
from tests.conftest import MODELS, ROOT

BUCKET = "slaprof-runs"
WORKFLOW = "slaprof-qwen3-32b-t3st"
HERA_OUT = "/tmp/hera-outputs"


class ArgoStandIn:
    """The parts of Argo's controller and executor a task needs, for one workflow run."""

    def __init__(self, s3, tmp: Path, parameters: dict[str, str], workflow: str = WORKFLOW) -> None:
        from minio import Minio

        self.s3 = s3
        self.workflow = workflow
        self.tmp = tmp
        self.wt = workflow_template_dict()
        self.templates = {t["name"]: t for t in self.wt["spec"]["templates"]}
        self.tasks = {t["name"]: t for t in self.templates["profile"]["dag"]["tasks"]}
        declared = {p["name"]: p.get("value", "") for p in self.wt["spec"]["arguments"]["parameters"]}
        unknown = set(parameters) - set(declared)
        assert not unknown, f"not workflow parameters: {unknown}"
        self.parameters = {**declared, **parameters}
        self.outputs: dict[str, dict[str, str]] = {}
        self.client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        self.uploaded: dict[str, bytes] = {}

    # -- substitution ---------------------------------------------------------------------
    def resolve(self, text: str, item: dict[str, Any] | None = None, inputs: dict[str, str] | None = None) -> str:
        def one(m: re.Match) -> str:
            tag = m.group(1).strip()
            if tag == "workflow.name":
                return self.workflow
            if tag.startswith("workflow.parameters."):
                return self.parameters[tag.removeprefix("workflow.parameters.")]
            if tag.startswith("tasks."):
                task, _, _, name = tag.removeprefix("tasks.").split(".", 3)
                return self.outputs[task][name]
            if tag.startswith("item.") and item is not None:
                return str(item[tag.removeprefix("item.")])
            if tag.startswith("inputs.parameters.") and inputs is not None:
                return inputs[tag.removeprefix("inputs.parameters.")]
            raise AssertionError(f"unresolvable {{{{{tag}}}}}")

        return re.sub(r"\{\{([^{}]+)\}\}", one, text)

    def when(self, task: str) -> bool:
        """A DAG task's `when`, evaluated like Argo (quoted strings, ==, !=, &&, ||, !)."""
        expr = self.tasks[task].get("when")
        if not expr:
            return True
        text = self.resolve(expr).replace("&&", " and ").replace("||", " or ")
        text = re.sub(r"!(?!=)", " not ", text)
        return bool(eval(text, {"__builtins__": {}}))

    def depends(self, task: str, status: dict[str, str]) -> bool:
        """A task's `depends` given each task's phase (Succeeded, Failed, Skipped, Omitted ...)."""
        expr = self.tasks[task].get("depends", "")
        if not expr:
            return True
        text = re.sub(r"^([\w-]+)$", r"\1.Succeeded", expr)  # a bare name: that task succeeded
        text = re.sub(r"([\w-]+)\.(\w+)", lambda m: str(status.get(m.group(1)) == m.group(2)), text)
        return bool(eval(text.replace("&&", " and ").replace("||", " or "), {"__builtins__": {}}))

    def run_dag(self, supplied: dict[str, Any] | None = None) -> dict[str, str]:
        """Every DAG task in order, as the controller runs them: `depends` false -> Omitted, `when`
        false -> Skipped, `withParam` fans out; a suspend node resumes with the output parameters
        `supplied[node](self)` returns (what a person supplies)."""
        status: dict[str, str] = {}
        for name, task in self.tasks.items():
            if not self.depends(name, status):
                status[name] = "Omitted"
            elif not self.when(name):
                status[name] = "Skipped"
            elif "suspend" in self.templates[task["template"]]:
                self.outputs[name] = (supplied or {})[name](self)
                status[name] = "Succeeded"
            else:
                items = json.loads(self.resolve(task["withParam"])) if "withParam" in task else [None]
                procs = self.run_parallel([(name, item) for item in items])
                failed = [p for p in procs if p.returncode != 0]
                assert not failed or "continueOn" in task, f"{name} failed: {failed[0].stderr[-2000:]}"
                status[name] = "Failed" if failed else "Succeeded"
        return status

    # -- running pods -------------------------------------------------------------------
    def run(
        self,
        task: str,
        item: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        template_name: str | None = None,
        arguments: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        return self.run_parallel([(task, item)], extra_env, template_name, arguments)[0]

    def run_parallel(
        self,
        pods: list[tuple[str, dict[str, Any] | None]],
        extra_env: dict[str, str] | None = None,
        template_name: str | None = None,
        arguments: dict[str, str] | None = None,
    ) -> list[subprocess.CompletedProcess]:
        """Run pods at the same time, as Argo runs a fan-out or independent tasks."""
        started = [self._start(task, item, extra_env, template_name, arguments) for task, item in pods]
        done = []
        for key, template, inputs, pod, proc in started:
            out, err = proc.communicate(timeout=300)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            if proc.returncode == 0:
                self._collect(key, template, inputs, pod / "out")
            done.append(result)
        return done

    def _start(
        self,
        task: str,
        item: dict[str, Any] | None,
        extra_env: dict[str, str] | None,
        template_name: str | None,
        arguments: dict[str, str] | None,
    ):
        template = self.templates[template_name or self.tasks[task]["template"]]
        given = (
            {
                p["name"]: self.resolve(p["value"], item)
                for p in (self.tasks[task].get("arguments") or {}).get("parameters", [])
            }
            if task in self.tasks
            else {}
        )
        given.update(arguments or {})
        inputs: dict[str, str] = {}
        for p in template["inputs"]["parameters"]:
            value = given.get(p["name"], p.get("default"))
            assert value is not None, f"{task}: inputs.parameters.{p['name']} was not supplied"
            inputs[p["name"]] = self.resolve(value)
        key = f"{task}-{item['id']}" if item else task
        pod = self.tmp / key
        pod.mkdir(parents=True, exist_ok=True)
        source = pod / "script"
        source.write_text(json.dumps([{"name": k, "value": v} for k, v in inputs.items()]))
        script = template["script"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.update({e["name"]: self.resolve(e["value"]) for e in script.get("env", []) if "value" in e})
        env.update(self.s3.env())  # what envFrom (slaprof-s3 ConfigMap and Secret) provides
        env.update({"SLAPROF_S3_BUCKET": BUCKET, "hera__outputs_directory": str(pod / "out"), "MPLBACKEND": "Agg"})
        env.update(extra_env or {})
        proc = subprocess.Popen(
            [sys.executable, *script["args"], str(source)],
            cwd=pod,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return key, template, inputs, pod, proc

    def _local(self, path: str, out: Path) -> Path:
        assert path.startswith(HERA_OUT), path
        return out / path.removeprefix(HERA_OUT + "/")

    def _collect(self, key: str, template: dict, inputs: dict[str, str], out: Path) -> None:
        params = {}
        for p in template.get("outputs", {}).get("parameters", []):
            path = self._local(p["valueFrom"]["path"], out)
            assert path.is_file(), f"{key}: output parameter {p['name']} was not written"
            params[p["name"]] = path.read_text()
        self.outputs[key] = params
        for art in template.get("outputs", {}).get("artifacts", []):
            path = self._local(art["path"], out)
            s3_key = self.resolve(art["s3"]["key"], inputs=inputs)
            files = (
                [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
            )
            assert files or art.get("optional"), f"{key}: artifact {art['name']} missing"
            for f in files:
                object_key = s3_key if f == path else f"{s3_key}/{f.relative_to(path)}"
                data = f.read_bytes()
                # the step already wrote this key through the store: the executor's upload must not change it
                assert self.get(object_key) == data, f"artifact {art['name']} differs from the store's {object_key}"
                self.client.put_object(BUCKET, object_key, __import__("io").BytesIO(data), len(data))
                self.uploaded[object_key] = data

    def get(self, key: str) -> bytes:
        resp = self.client.get_object(BUCKET, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def keys(self, prefix: str) -> list[str]:
        return sorted(o.object_name for o in self.client.list_objects(BUCKET, prefix=prefix, recursive=True))


def _images(doc: Any) -> set[str]:
    """Every `image` value anywhere in a manifest."""
    if isinstance(doc, dict):
        found = {doc["image"]} if isinstance(doc.get("image"), str) else set()
        return found.union(*(_images(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(_images(v) for v in doc))
    return set()


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


REQUEST_DOC = yaml.safe_dump(
    {
        "model": "placeholder",
        "sla": {"isl": 2000, "osl": 200, "ttft_ms": 400, "itl_ms": 25},
        "sweep": {"prefill_granularity": 6, "decode_granularity": 4},
    }
)


@pytest.fixture(scope="module")
def argo(s3_server, tmp_path_factory):
    # the drift history of every run in the bucket is shared (history/<model>/<backend>/<gpu>): this
    # module's first run must find none, whatever other tests profiled into the bucket before
    from minio import Minio

    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False)
    if client.bucket_exists(BUCKET):
        for obj in client.list_objects(BUCKET, prefix="history/", recursive=True):
            client.remove_object(BUCKET, obj.object_name)
    return ArgoStandIn(
        s3_server,
        tmp_path_factory.mktemp("pods"),
        {"request": REQUEST_DOC, "model": str(MODELS / "Qwen3-32B"), "isl": "1500", "max-gpus-per-engine": "2"},
    )


def test_profile_dag_task_by_task(argo):
    _ok(argo.run("plan"))
    plan = argo.outputs["plan"]
    fan_out = json.loads(plan["candidates"])
    # aggregated candidates are more items of the same fan-out; offline, no GPUs are asked for
    assert fan_out == [{"id": c, "gpus": 0} for c in ("tp1", "tp2", "agg-tp1", "agg-tp2")]
    assert plan["method"] == "offline" and plan["auto-apply"] == "false"
    assert plan["history-key"].endswith("/vllm/h200_sxm")
    request = json.loads(argo.get(f"{WORKFLOW}/request.json"))
    assert request["sla"] == {
        "isl": 1500,
        "osl": 200,
        "ttft_ms": 400.0,
        "itl_ms": 25.0,
        "request_rate": None,
        "confidence": 0.5,
    }
    assert argo.uploaded[f"{WORKFLOW}/plan.json"] == argo.get(f"{WORKFLOW}/plan.json")

    assert argo.when("bench") and not argo.when("bench-online") and not argo.when("bench-online-main")
    for proc in argo.run_parallel([("bench", item) for item in fan_out]):
        _ok(proc)
    for item in fan_out:
        assert argo.outputs[f"bench-{item['id']}"]["status"] == "ok"
    assert argo.keys(f"{WORKFLOW}/profiles/") == [
        f"{WORKFLOW}/profiles/{c}.json" for c in ("agg-tp1", "agg-tp2", "tp1", "tp2")
    ]
    agg = json.loads(argo.get(f"{WORKFLOW}/profiles/agg-tp2.json"))
    assert agg["candidate"]["serving"] == "agg" and agg["agg"] and agg["agg"][0]["isl"] == 1500

    status = {"plan": "Succeeded", "bench": "Succeeded", "bench-online": "Skipped", "bench-online-main": "Skipped"}
    assert argo.depends("fit", status) and argo.when("fit")
    _ok(argo.run("fit"))
    fit = argo.outputs["fit"]
    selection = json.loads(argo.get(f"{WORKFLOW}/selection.json"))
    assert fit["serving"] == selection["deployment"]["mode"] and fit["deployment"].endswith(" tokens/s/GPU")
    if fit["serving"] == "disagg":
        assert fit["prefill"].startswith("TP:") and fit["decode"].startswith("TP:")
        assert float(fit["decode-thpt-per-gpu"]) > 0
    else:
        assert fit["prefill"] == fit["decode"] == "none"
    assert float(fit["ttft-ms"]) > 0 and float(fit["itl-ms"]) > 0
    assert fit["other-mode"].startswith("Other mode: ") and fit["recommendation"].endswith(fit["other-mode"])
    choices = json.loads(fit["choices"])
    assert fit["choice-1"] == choices[0] and "(recommended)" in choices[0]
    assert any(k.endswith(".png") for k in argo.keys(f"{WORKFLOW}/plots/"))
    assert argo.get(f"{WORKFLOW}/report.html").lstrip().lower().startswith(b"<!doctype html")

    status.update(fit="Succeeded", choose="Skipped")  # pick=auto
    assert not argo.when("choose") and not argo.depends("pick", status)
    status["pick"] = "Omitted"
    assert argo.depends("render", status) and argo.depends("record", status)
    for proc in argo.run_parallel([("render", None), ("record", None)]):
        _ok(proc)
    dgd = [d for d in yaml.safe_load_all(argo.get(f"{WORKFLOW}/dgd.yaml")) if d]
    assert all(d["metadata"]["labels"]["slaprof.io/run"] == WORKFLOW for d in dgd)
    assert any(d["kind"] == "DynamoGraphDeployment" for d in dgd)
    # online bench pods run the engine image the DGD's workers run: one Dynamo release for both
    release = dynamo_releases.get(dynamo_releases.NEWEST)
    assert plan["engine-image"] == f"nvcr.io/nvidia/ai-dynamo/vllm-runtime:{release.version}"
    assert plan["engine-image"] in _images(next(d for d in dgd if d["kind"] == "DynamoGraphDeployment"))
    assert "first result" in argo.outputs["record"]["drift"]
    assert argo.keys(f"history/{plan['history-key']}/") == [
        f"history/{plan['history-key']}/{name}" for name in ("request.json", "run.json", "selection.json")
    ]
    status["render"] = "Succeeded"
    assert not argo.when("apply")  # auto-apply is false


def test_manual_pick_rewrites_the_selection(argo):
    """Resuming `choose` with the second choice: pick rewrites selection.json and the planner data."""
    assert "fit" in argo.outputs, "runs after test_profile_dag_task_by_task, on the run it left"
    argo.parameters["pick"] = "manual"
    assert argo.when("choose")
    choices = json.loads(argo.outputs["fit"]["choices"])
    assert len(choices) >= 2, choices
    argo.outputs["choose"] = {"choice": choices[1]}  # what the person supplied on resume
    before = json.loads(argo.get(f"{WORKFLOW}/selection.json"))
    _ok(argo.run("pick"))
    after = json.loads(argo.get(f"{WORKFLOW}/selection.json"))
    picked_p, picked_d = choices[1].split(":")[0].split("+")
    assert (after["prefill"]["candidate"]["size"], after["decode"]["candidate"]["size"]) == (
        int(picked_p.removeprefix("tp")),
        int(picked_d.removeprefix("tp")),
    )
    assert after["deployment"]["mode"] == "disagg" and after["deployment"]["gpus"] <= 8
    assert json.loads(argo.get(f"{WORKFLOW}/selection.auto.json")) == before
    assert after["recommendation"][0].startswith("Picked by hand")
    _ok(argo.run("render"))


def test_bench_of_unknown_candidate_is_one_line_exit_2(argo):
    assert "plan" in argo.outputs, "runs after test_profile_dag_task_by_task, on the run it left"
    proc = argo.run("bench", item={"id": "tp16", "gpus": 0})
    assert proc.returncode == 2
    assert "tp16" in proc.stderr and "Traceback" not in proc.stderr


def _make_ready_when_created(cluster, namespace: str, name: str) -> None:
    """The Dynamo operator's part: mark the DGD ready once it exists."""
    from tests.plugins.kube import DGD_RESOURCE, ready_status

    for _ in range(2000):
        if cluster.get(DGD_RESOURCE, namespace, name) is not None:
            cluster.set_status(namespace, name, ready_status())
            return
        time.sleep(0.01)


def test_an_existing_dgd_survives_a_failed_reprofile(argo, cluster, tmp_path):
    """A scheduled re-profile with auto-apply renders the DGD name a previous run deployed. Its
    `apply` pod updates that DGD, which does not become ready in time, so the run fails; the exit
    handler (`cleanup`, onExit) gives the serving DGD and its planner data back instead of deleting
    them, and the update never relabelled them."""
    from slaprof.steps.core.request import ProfileRequest
    from slaprof.steps.core.store import S3Store, write_model
    from slaprof.steps.dag.apply import RUN_LABEL, run_step
    from tests.plugins.kube import CONFIGMAP_RESOURCE, DGD_RESOURCE

    def deployment(run: str, replicas: int, data: str) -> bytes:
        return yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "planner-profile-data", "labels": {RUN_LABEL: run}},
                    "data": {"prefill_raw_data.json": data},
                },
                {
                    "apiVersion": "nvidia.com/v1alpha1",
                    "kind": "DynamoGraphDeployment",
                    "metadata": {"name": "qwen3-32b-vllm", "labels": {RUN_LABEL: run}},
                    "spec": {"services": {"decode": {"componentType": "worker", "replicas": replicas}}},
                },
            ]
        ).encode()

    request = ProfileRequest(model="Qwen/Qwen3-32B", deployment={"namespace": "dynamo", "auto_apply": True})
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
    runs = {}
    for run, replicas, data in (("slaprof-monday", 2, '{"prefill_isl": [100]}'), ("slaprof-tuesday", 4, "{}")):
        store = S3Store(argo.s3.endpoint, BUCKET, run, argo.s3.access_key, argo.s3.secret_key)
        store.ensure_bucket()
        write_model(store, "request.json", request)
        store.put_bytes("dgd.yaml", deployment(run, replicas, data))
        runs[run] = store
    # Monday's run deployed (its apply step, here in-process) and the operator made it ready
    operator = threading.Thread(target=_make_ready_when_created, args=(cluster, "dynamo", "qwen3-32b-vllm"))
    operator.start()
    run_step(runs["slaprof-monday"], api_client=cluster.api_client(), timeout=60, poll_interval=0.05)
    operator.join()
    serving = cluster.get(DGD_RESOURCE, "dynamo", "qwen3-32b-vllm")
    planner = cluster.get(CONFIGMAP_RESOURCE, "dynamo", "planner-profile-data")

    # Tuesday's re-profile: the update does not become ready within the apply timeout
    failed = argo.run(
        "apply", extra_env=env, arguments={"run": "slaprof-tuesday", "timeout": "1"}, template_name="apply"
    )
    assert failed.returncode == 2 and "not ready after 1 s" in failed.stderr
    assert cluster.get(DGD_RESOURCE, "dynamo", "qwen3-32b-vllm")["metadata"]["labels"][RUN_LABEL] == "slaprof-monday"

    _ok(
        argo.run(
            "cleanup", template_name="cleanup", extra_env=env, arguments={"run": "slaprof-tuesday", "status": "Failed"}
        )
    )
    assert "restored" in argo.outputs["cleanup"]["undone"]
    after = cluster.get(DGD_RESOURCE, "dynamo", "qwen3-32b-vllm")
    assert after is not None and after["metadata"]["uid"] == serving["metadata"]["uid"]
    assert after["spec"] == serving["spec"] and after["metadata"]["labels"] == serving["metadata"]["labels"]
    assert cluster.get(CONFIGMAP_RESOURCE, "dynamo", "planner-profile-data")["data"] == planner["data"]
    assert not cluster.requests("DELETE")

    # Monday's exit handler, had that run failed after its DGD became ready, undoes nothing
    _ok(
        argo.run(
            "cleanup", template_name="cleanup", extra_env=env, arguments={"run": "slaprof-monday", "status": "Failed"}
        )
    )
    assert argo.outputs["cleanup"]["undone"].startswith("nothing")
