"""Rendered aggregated DynamoGraphDeployments: the checks the disaggregated ones pass (structure per
backend for dense and MoE models on one node and across nodes, replicas, images, model cache, base
DGDs, names, the step and the CLI, applying to an emulated cluster), plus what makes them aggregated."""

from __future__ import annotations

import re

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import DeploymentChoice, EngineGroup, Selection
from slaprof.steps.core.store import Layout, LocalStore
from slaprof.steps.dag.apply import apply_manifests
from slaprof.steps.dag.render import POD_NAME_LIMIT, run_step, to_yaml
from slaprof.steps.dag.render_agg import PLANNER_OMITTED, render_agg_manifests
from slaprof.steps.dynamo import dynamo_releases
from tests.plugins.dynamo_crd import assert_valid_dgd
from tests.plugins.kube import DGD_RESOURCE
from tests.test_render import BASE, DEFAULT_IMAGE, _args, _flag

AGG_BASE = """
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata: {name: my-agg}
spec:
  services:
    Frontend:
      componentType: frontend
      extraPodSpec: {mainContainer: {image: "my/frontend:7"}}
    VllmWorker:
      componentType: worker
      replicas: 1
      resources: {limits: {gpu: "1"}}
      extraPodSpec:
        mainContainer:
          image: "my/vllm:7"
          command: [python3, -m, dynamo.vllm]
          args: [--model, old/model, --data-parallel-size, "2", --max-model-len, "6000"]
"""


def _request(backend: str, model: str = "Qwen/Qwen3-32B", **deployment):
    return build_request(
        {
            "model": model,
            "backend": backend,
            "sla": {"ttft_ms": 300, "itl_ms": 25},
            "hardware": {"gpus_per_node": 8, "total_gpus": 32},
            "deployment": {"namespace": "serving", "dynamo_version": "0.9", **deployment},
        }
    )


def _selection(request, cand_id: str, replicas: int = 1) -> Selection:
    cand = Candidate.parse(cand_id)
    group = EngineGroup(
        role="agg",
        candidate=cand,
        replicas=replicas,
        concurrency=24,
        ttft_ms=250.0,
        itl_ms=20.0,
        thpt_per_gpu=300.0,
        request_rate=3.0,
    )
    deployment = DeploymentChoice(
        mode="agg",
        engines=[group],
        gpus=replicas * cand.num_gpus,
        request_rate=3.0 * replicas,
        thpt_per_gpu=300.0,
        ttft_ms=250.0,
        itl_ms=20.0,
        meets_sla=True,
    )
    return Selection(
        model=request.model,
        backend=request.backend,
        gpu="h200_sxm",
        isl=3000,
        osl=500,
        ttft_ms=request.sla.ttft_ms,
        itl_ms=request.sla.itl_ms,
        prefill=None,
        decode=None,
        serving="auto",
        gpu_budget=32,
        deployment=deployment,
    )


def _render(backend, cand_id, model="Qwen/Qwen3-32B", replicas=1, base=None, **deployment):
    req = _request(backend, model, **deployment)
    return render_agg_manifests(req, _selection(req, cand_id, replicas), base=base)


def _dgd(docs):
    return docs[-1]


def _the_worker(docs) -> dict:
    (svc,) = [s for s in _dgd(docs)["spec"]["services"].values() if s.get("componentType") == "worker"]
    return svc


# what an aggregated worker of each backend needs, as Dynamo's workers read it (independent of steps/engines)
def _check_parallel(backend: str, docs, cand: Candidate) -> None:
    svc = _the_worker(docs)
    args, n = _args(svc), str(cand.size)
    dp = cand.kind in ("dep", "dtp")
    ep = cand.kind in ("tep", "dep")
    assert not [a for a in args if a.startswith("--disaggregation") or a == "--is-prefill-worker"]
    if backend == "vllm":
        assert _flag(args, "--tensor-parallel-size") == ("1" if dp else n)
        assert _flag(args, "--data-parallel-size") == (n if dp else None)
        assert (_flag(args, "--enable-expert-parallel") == "") == ep
    elif backend == "sglang":
        assert _flag(args, "--tp") == n
        assert _flag(args, "--ep-size") == (n if ep else None)
        assert _flag(args, "--dp") == (n if dp else None)
        assert (_flag(args, "--enable-dp-attention") == "") == dp
    else:
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-engine-config")]
        assert list(cm["data"]) == ["agg.yaml"]
        cfg = yaml.safe_load(cm["data"]["agg.yaml"])
        assert cfg["tensor_parallel_size"] == cand.size
        assert cfg["moe_expert_parallel_size"] == (cand.size if ep else 1)
        assert cfg["enable_attention_dp"] is dp
        assert "cache_transceiver_config" not in cfg  # nothing is transferred
        path = _flag(args, "--extra-engine-args")
        mount = svc["extraPodSpec"]["mainContainer"]["volumeMounts"][0]["mountPath"]
        assert path == f"{mount}/agg.yaml"


CASES = [  # dense, MoE on one node (both attention-DP mappings), MoE across nodes
    ("Qwen/Qwen3-32B", "agg-tp8"),
    ("Qwen/Qwen3-30B-A3B", "agg-dtp4"),
    ("Qwen/Qwen3-30B-A3B", "agg-dep8"),
    ("deepseek-ai/DeepSeek-V3", "agg-dep16"),
]


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("model,cand_id", CASES)
def test_rendered_agg_dgd_structure(backend, model, cand_id):
    docs = _render(backend, cand_id, model=model, replicas=2)
    assert [d["kind"] for d in docs] == (["ConfigMap"] if backend == "trtllm" else []) + ["DynamoGraphDeployment"]
    assert list(yaml.safe_load_all(to_yaml(docs, header="a\nb"))) == docs  # valid YAML, nothing lost
    dgd = _dgd(docs)
    assert dgd["apiVersion"] == "nvidia.com/v1alpha1" and dgd["metadata"]["namespace"] == "serving"
    services = dgd["spec"]["services"]
    # a Frontend and one worker type: no prefill worker, no Planner (Dynamo 0.7.0 cannot plan it)
    assert sorted(s["componentType"] for s in services.values()) == ["frontend", "worker"]
    cand, svc = Candidate.parse(cand_id), _the_worker(docs)
    assert "subComponentType" not in svc
    _check_parallel(backend, docs, cand)
    container = svc["extraPodSpec"]["mainContainer"]
    assert container["command"] == ["python3", "-m", f"dynamo.{backend}"]
    assert DEFAULT_IMAGE[backend] in container["image"]
    assert model in _args(svc)
    assert svc["envFromSecret"] == "hf-token-secret" and svc["replicas"] == 2
    assert svc["resources"]["limits"]["gpu"] == str(min(cand.size, 8))
    assert svc.get("multinode") == ({"nodeCount": cand.size // 8} if cand.size > 8 else None)
    assert dgd["metadata"]["annotations"]["slaprof/aggregated"] == f"{cand.label} x2"
    name = dgd["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert all(len(name) + 2 * len(s) + 4 <= POD_NAME_LIMIT for s in services)


def test_images_and_model_cache():
    docs = _render(
        "vllm",
        "agg-tp4",
        replicas=3,
        engine_image="registry.local/dynamo-vllm:1",
        frontend_image="registry.local/dynamo-frontend:1",
        model_cache_pvc="models",
        model_cache_pvc_path="qwen3-32b",
        hf_token_secret="my-hf",
    )
    services = _dgd(docs)["spec"]["services"]
    images = {n: s["extraPodSpec"]["mainContainer"]["image"] for n, s in services.items()}
    assert images == {"Frontend": "registry.local/dynamo-frontend:1", "worker": "registry.local/dynamo-vllm:1"}
    assert _dgd(docs)["spec"]["pvcs"] == [{"name": "models", "create": False}]
    svc = services["worker"]
    assert svc["replicas"] == 3 and svc["envFromSecret"] == "my-hf"
    assert svc["volumeMounts"] == [{"name": "models", "mountPoint": "/opt/model-cache"}]
    assert {"name": "HF_HOME", "value": "/opt/model-cache"} in svc["envs"]
    assert _flag(_args(svc), "--model") == "/opt/model-cache/qwen3-32b"
    assert _flag(_args(svc), "--served-model-name") == "Qwen/Qwen3-32B"


def test_a_disaggregated_base_becomes_aggregated():
    base = yaml.safe_load(BASE)
    docs = _render("vllm", "agg-tp4", base=base)
    dgd = _dgd(docs)
    assert base["spec"]["services"]["pw"]["componentType"] == "worker"  # the caller's dict is not modified
    assert dgd["metadata"]["labels"] == {"team": "inference"}
    assert dgd["spec"]["envs"] == [{"name": "DYN_LOG", "value": "debug"}]
    services = dgd["spec"]["services"]
    assert list(services) == ["Frontend", "dw"]  # the decode worker is kept, prefill and Planner go
    dw = services["dw"]
    assert "subComponentType" not in dw and dw["resources"]["limits"]["gpu"] == "4"
    assert _args(dw) == ["--model", "Qwen/Qwen3-32B", "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.85"]


def test_an_aggregated_base_keeps_its_worker_and_flags():
    docs = _render("vllm", "agg-tp2", base=yaml.safe_load(AGG_BASE))
    services = _dgd(docs)["spec"]["services"]
    assert list(services) == ["Frontend", "VllmWorker"]
    assert services["Frontend"]["extraPodSpec"]["mainContainer"]["image"] == "my/frontend:7"
    args = _args(services["VllmWorker"])
    # the stale DP flag goes, the user's own flag stays
    assert args == ["--model", "Qwen/Qwen3-32B", "--tensor-parallel-size", "2", "--max-model-len", "6000"]
    two = yaml.safe_load(AGG_BASE)
    two["spec"]["services"]["Other"] = two["spec"]["services"]["VllmWorker"]
    with pytest.raises(UserError, match="one worker service.*VllmWorker, Other"):
        _render("vllm", "agg-tp2", base=two)


def test_selection_without_an_aggregated_deployment_is_refused():
    req = _request("vllm")
    with pytest.raises(UserError, match="no aggregated deployment"):
        render_agg_manifests(req, _selection(req, "agg-tp2").model_copy(update={"deployment": None}))


def _write_run(path, backend="sglang"):
    req = _request(backend, "Qwen/Qwen3-30B-A3B")
    store = LocalStore(path)
    store.put_bytes(Layout.REQUEST, req.model_dump_json().encode())
    store.put_bytes(Layout.SELECTION, _selection(req, "agg-dtp4", 2).model_dump_json().encode())
    return store  # no planner data: an aggregated graph needs none


def test_run_step_and_cli_render_an_aggregated_run(tmp_path, capsys):
    store = _write_run(tmp_path / "run")
    text = run_step(store)
    header = text.split("apiVersion")[0]
    assert header.startswith("# Rendered by slaprof: Qwen/Qwen3-30B-A3B on sglang, h200_sxm\n")
    assert "# aggregated: 2 x aggregated DTP:4 on 8 GPUs" in header and PLANNER_OMITTED in header
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["DynamoGraphDeployment"]
    out = tmp_path / "out.yaml"
    assert main(["render", "--selection", str(tmp_path / "run"), "--out", str(out), "--namespace", "prod"]) == 0
    assert "aggregated: 2 x aggregated DTP:4" in capsys.readouterr().out
    (dgd,) = list(yaml.safe_load_all(out.read_text()))
    assert dgd["metadata"]["namespace"] == "prod"


def test_rendered_agg_manifests_apply_cleanly(cluster):
    api = cluster.api_client()
    docs = _render("trtllm", "agg-dtp4", model="Qwen/Qwen3-30B-A3B", replicas=1)
    assert [o.action for o in apply_manifests(docs, "serving", api_client=api).objects] == ["created"] * 2
    again = _render("trtllm", "agg-dtp4", model="Qwen/Qwen3-30B-A3B", replicas=1)
    assert {o.action for o in apply_manifests(again, "serving", api_client=api).objects} == {"unchanged"}
    more = _render("trtllm", "agg-dtp4", model="Qwen/Qwen3-30B-A3B", replicas=3)
    assert [o.action for o in apply_manifests(more, "serving", api_client=api).objects] == ["unchanged", "updated"]
    stored = cluster.get(DGD_RESOURCE, "serving", _dgd(more)["metadata"]["name"])
    assert stored["spec"]["services"]["worker"]["replicas"] == 3


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("line", list(dynamo_releases.RELEASES))
def test_aggregated_dgd_validates_against_every_releases_crd(line, backend):
    """The aggregated DGD passes the same schema check as the disaggregated one, in each release's shape."""
    release = dynamo_releases.get(line)
    req = _request(backend, dynamo_version=line)
    docs = render_agg_manifests(req, _selection(req, "agg-tp4", replicas=2))
    dgd = docs[-1]
    assert_valid_dgd(dgd, line)
    assert dgd["apiVersion"] == release.dgd_api_version
    if "services" in dgd["spec"]:
        kinds = sorted(s["componentType"] for s in dgd["spec"]["services"].values())
        workers = [s for s in dgd["spec"]["services"].values() if s["componentType"] == "worker"]
    else:
        kinds = sorted(c["type"] for c in dgd["spec"]["components"])
        workers = [c for c in dgd["spec"]["components"] if c["type"] == "worker"]
    assert kinds == ["frontend", "worker"]  # no Planner, no prefill/decode split
    assert workers[0]["replicas"] == 2
