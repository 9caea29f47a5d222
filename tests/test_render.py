"""Rendered DynamoGraphDeployments: structure per backend (dense and MoE), base DGDs, names, the step and CLI."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import DecodeChoice, PrefillChoice, Replicas, Selection
from slaprof.steps.core.store import Layout, LocalStore
from slaprof.steps.dag.apply import apply_manifests
from slaprof.steps.dag.bench import engine_options
from slaprof.steps.dag.plan import make_plan
from slaprof.steps.dag.render import (
    POD_NAME_LIMIT,
    WorkerSizing,
    base_precision_warnings,
    derive_name,
    describe,
    flag_names,
    merge_args,
    model_short_name,
    name_budget,
    render_manifests,
    request_release,
    run_step,
    to_yaml,
    worker_args,
)
from slaprof.steps.engines import ServerOptions, get_backend
from slaprof.steps.engines.base import batched_tokens
from slaprof.steps.specs.models import EnginePrecision, load_model_info_from_dir
from tests.plugins.kube import DGD_RESOURCE

PREFILL_JSON = json.dumps(
    {
        "prefill_isl": [100, 2000, 4000],
        "prefill_ttft": [10.5, 80.0, 170.0],
        "prefill_thpt_per_gpu": [9000.0, 25000.0, 23000.0],
    },
    indent=1,
)
DECODE_JSON = json.dumps(
    {
        "x_kv_usage": [0.1, 0.5, 0.9],
        "y_context_length": [350, 350, 7093],
        "z_itl": [8.0, 12.0, 20.0],
        "z_thpt_per_gpu": [300.0, 900.0, 1200.0],
        "max_kv_tokens": 500000,
    },
    indent=1,
)
DEFAULT_IMAGE = {"vllm": "vllm-runtime", "sglang": "sglang-runtime", "trtllm": "tensorrtllm-runtime"}


def _request(backend: str, model: str = "Qwen/Qwen3-32B", rate: float | None = None, **deployment):
    sla = {"ttft_ms": 300, "itl_ms": 25, **({"request_rate": rate} if rate else {})}
    return build_request(
        {
            "model": model,
            "backend": backend,
            "sla": sla,
            "hardware": {"gpus_per_node": 8},
            # slaprof's editing rules, shown on the v1alpha1 shape; per-release output: test_dynamo_releases.py
            "deployment": {"namespace": "serving", "dynamo_version": "0.9", **deployment},
        }
    )


def _selection(request, prefill: str, decode: str, replicas: tuple[int, int] | None = None) -> Selection:
    p, d = Candidate.parse(prefill), Candidate.parse(decode)
    return Selection(
        model=request.model,
        backend=request.backend,
        gpu="h200_sxm",
        isl=3000,
        osl=500,
        ttft_ms=request.sla.ttft_ms,
        itl_ms=request.sla.itl_ms,
        prefill=PrefillChoice(candidate=p, isl=3000, ttft_ms=120.0, thpt_per_gpu=12000.0, meets_sla=True),
        decode=DecodeChoice(
            candidate=d,
            context=3250,
            concurrency=48,
            kv_usage=0.4,
            itl_ms=21.0,
            thpt_per_gpu=800.0,
            max_kv_tokens=500000,
            meets_sla=True,
        ),
        replicas=Replicas(
            request_rate=request.sla.request_rate or 1.0,
            prefill=replicas[0],
            decode=replicas[1],
            total_gpus=replicas[0] * p.num_gpus + replicas[1] * d.num_gpus,
        )
        if replicas
        else None,
    )


def _render(backend, prefill, decode, model="Qwen/Qwen3-32B", replicas=None, base=None, **deployment):
    req = _request(backend, model, rate=5.0 if replicas else None, **deployment)
    return render_manifests(req, _selection(req, prefill, decode, replicas), PREFILL_JSON, DECODE_JSON, base=base)


def _dgd(docs):
    return docs[-1]


def _worker(docs, role):
    (svc,) = [s for s in _dgd(docs)["spec"]["services"].values() if s.get("subComponentType") == role]
    return svc


def _args(svc) -> list[str]:
    return svc["extraPodSpec"]["mainContainer"]["args"]


def _flag(args: list[str], flag: str) -> str | None:
    """Value of `--flag V` or `--flag=V`; '' for a bare flag; None when absent."""
    for i, tok in enumerate(args):
        if tok == flag:
            return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _engine_config(docs, role) -> dict:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-engine-config")]
    return yaml.safe_load(cm["data"][f"{role}.yaml"])


# what each backend needs, as Dynamo's workers read it (independent of steps/engines)
def _check_parallel(backend: str, docs, role: str, cand: Candidate) -> None:
    args, n = _args(_worker(docs, role)), str(cand.size)
    if backend == "vllm":
        assert _flag(args, "--tensor-parallel-size") == ("1" if cand.kind == "dep" else n)
        assert _flag(args, "--data-parallel-size") == (n if cand.kind == "dep" else None)
        assert (_flag(args, "--enable-expert-parallel") == "") == (cand.kind != "tp")
        assert (_flag(args, "--is-prefill-worker") == "") == (role == "prefill")
    elif backend == "sglang":
        assert _flag(args, "--tp") == n
        assert _flag(args, "--ep-size") == (None if cand.kind == "tp" else n)
        assert _flag(args, "--dp") == (n if cand.kind == "dep" else None)
        assert (_flag(args, "--enable-dp-attention") == "") == (cand.kind == "dep")
        assert _flag(args, "--disaggregation-mode") == role
    else:
        cfg = _engine_config(docs, role)
        assert cfg["tensor_parallel_size"] == cand.size
        assert cfg["moe_expert_parallel_size"] == (1 if cand.kind == "tp" else cand.size)
        assert cfg["enable_attention_dp"] is (cand.kind == "dep")
        assert _flag(args, "--disaggregation-mode") == role
        path = _flag(args, "--extra-engine-args")
        mount = _worker(docs, role)["extraPodSpec"]["mainContainer"]["volumeMounts"][0]["mountPath"]
        assert path == f"{mount}/{role}.yaml"


CASES = [  # (model, prefill, decode): dense, MoE on one node, MoE across nodes
    ("Qwen/Qwen3-32B", "tp2", "tp4"),
    ("Qwen/Qwen3-30B-A3B", "tep4", "dep8"),
    ("deepseek-ai/DeepSeek-V3", "tep8", "dep16"),
]


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("model,prefill,decode", CASES)
def test_rendered_dgd_structure(backend, model, prefill, decode):
    docs = _render(backend, prefill, decode, model=model)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    planner_data = f"{_dgd(docs)['metadata']['name']}-planner-profile-data"
    assert kinds[0] == ("ConfigMap", planner_data) and kinds[-1][0] == "DynamoGraphDeployment"
    assert len(docs) == (3 if backend == "trtllm" else 2)
    assert docs[0]["data"] == {"prefill_raw_data.json": PREFILL_JSON, "decode_raw_data.json": DECODE_JSON}
    assert list(yaml.safe_load_all(to_yaml(docs, header="a\nb"))) == docs  # valid YAML, nothing lost

    dgd = _dgd(docs)
    assert dgd["apiVersion"] == "nvidia.com/v1alpha1" and dgd["metadata"]["namespace"] == "serving"
    services = dgd["spec"]["services"]
    assert sorted(s["componentType"] for s in services.values()) == ["frontend", "planner", "worker", "worker"]
    for role, cand_id in (("prefill", prefill), ("decode", decode)):
        cand, svc = Candidate.parse(cand_id), _worker(docs, role)
        _check_parallel(backend, docs, role, cand)
        container = svc["extraPodSpec"]["mainContainer"]
        assert container["command"] == ["python3", "-m", f"dynamo.{backend}"]
        assert DEFAULT_IMAGE[backend] in container["image"]
        assert model in _args(svc)
        assert svc["envFromSecret"] == "hf-token-secret" and svc["replicas"] == 1
        assert svc["resources"]["limits"]["gpu"] == str(min(cand.size, 8))
        assert svc.get("multinode") == ({"nodeCount": cand.size // 8} if cand.size > 8 else None)

    (planner,) = [s for s in services.values() if s["componentType"] == "planner"]
    pargs = _args(planner)
    assert _flag(pargs, "--prefill-engine-num-gpu") == prefill.lstrip("tepd")
    assert _flag(pargs, "--decode-engine-num-gpu") == decode.lstrip("tepd")
    assert (_flag(pargs, "--ttft"), _flag(pargs, "--itl"), _flag(pargs, "--backend")) == ("300", "25", backend)
    assert _flag(pargs, "--environment") == "kubernetes"
    mount = planner["extraPodSpec"]["mainContainer"]["volumeMounts"]
    assert mount == [
        {"name": "planner-profile-data", "mountPath": _flag(pargs, "--profile-results-dir"), "readOnly": True}
    ]
    assert planner["extraPodSpec"]["volumes"] == [{"name": "planner-profile-data", "configMap": {"name": planner_data}}]

    name = dgd["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert all(len(name) + 2 * len(s) + 4 <= POD_NAME_LIMIT for s in services)


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("context", [6000, 40000])
def test_prefill_workers_take_the_step_budget_the_bench_measured_with(backend, context):
    # the bench ran every disaggregated candidate with whole prompts per step (up to 32,768 tokens);
    # the deployed prefill workers must too, or long prompts are chunked where they were not measured
    req = _request(backend)
    sel = _selection(req, "tp2", "tp2").model_copy(update={"max_context": context})
    docs = render_manifests(req, sel, PREFILL_JSON, DECODE_JSON)
    engine = get_backend(backend)
    budget = batched_tokens(context)
    measured = engine.server_launch("m", Candidate.parse("tp2"), 8000, ServerOptions(max_batched_tokens=budget)).argv
    budget_flags = flag_names(engine.step_tokens_args(budget))
    assert budget == min(context, 32768) and budget_flags
    prefill, decode = _args(_worker(docs, "prefill")), _args(_worker(docs, "decode"))
    if backend == "trtllm":  # its workers take it in their engine config
        assert _engine_config(docs, "prefill")["max_num_tokens"] == budget
    else:
        for flag in budget_flags:
            assert _flag(prefill, flag) == _flag(measured, flag) == str(budget)
            assert _flag(decode, flag) is None  # decode workers keep the engine's own budget


@pytest.mark.parametrize("backend", ["vllm", "sglang"])
@pytest.mark.parametrize("model,prefill,agg", [("Qwen3-32B", "tp2", "agg-tp4"), ("Qwen3-30B-A3B", "dep4", "agg-tep4")])
def test_dgd_workers_are_told_what_the_bench_engines_ran_with(backend, model, prefill, agg, model_dir):
    # every setting the plan fixes of an engine (mapping, context, step budget, precision) has the same
    # value on the bench engine's command line (bench.engine_options) and on the DGD worker's
    req = build_request(
        {
            "model": "Qwen/Qwen3-32B",
            "backend": backend,
            "sla": {"isl": 3000, "osl": 150, "ttft_ms": 300, "itl_ms": 25},
            "engine": {"kv_cache_dtype": "fp8", "max_context_length": 20000},
            "deployment": {"namespace": "serving"},
        }
    )
    plan = make_plan(req, load_model_info_from_dir(model_dir(model)))
    engine = get_backend(backend)
    checked = set()
    for cid, role in ((prefill, "prefill"), (agg, "agg")):
        cand = Candidate.parse(cid)
        options = engine_options(plan, cand)
        bench = engine.server_launch(req.model, cand, 8000, options).argv
        fixed = flag_names(
            [
                *engine.parallel_args(cand),
                *engine.context_args(plan.grid.max_context),
                *engine.precision_args(plan.precision),
                *(engine.step_tokens_args(options.max_batched_tokens) if options.max_batched_tokens else []),
            ]
        )
        sizing = WorkerSizing(max_context=plan.grid.max_context, precision=plan.precision)
        args = worker_args(req, engine, cand, role, sizing, request_release(req))
        for flag in fixed:
            assert _flag(args, flag) == _flag(bench, flag) is not None, (cid, flag)
        checked |= fixed
    assert {"--kv-cache-dtype", "--max-model-len" if backend == "vllm" else "--context-length"} <= checked


def test_replicas_images_and_model_cache():
    docs = _render(
        "vllm",
        "tp2",
        "tp4",
        replicas=(3, 5),
        engine_image="registry.local/dynamo-vllm:1",
        frontend_image="registry.local/dynamo-frontend:1",
        model_cache_pvc="models",
        model_cache_pvc_path="qwen3-32b",
        hf_token_secret="my-hf",
    )
    assert (_worker(docs, "prefill")["replicas"], _worker(docs, "decode")["replicas"]) == (3, 5)
    services = _dgd(docs)["spec"]["services"]
    images = {n: s["extraPodSpec"]["mainContainer"]["image"] for n, s in services.items()}
    assert images == {
        "Frontend": "registry.local/dynamo-frontend:1",
        "prefill": "registry.local/dynamo-vllm:1",
        "decode": "registry.local/dynamo-vllm:1",
        "Planner": "registry.local/dynamo-frontend:1",
    }
    assert _dgd(docs)["spec"]["pvcs"] == [{"name": "models", "create": False}]
    for role in ("prefill", "decode"):
        svc = _worker(docs, role)
        assert svc["envFromSecret"] == "my-hf"
        assert svc["volumeMounts"] == [{"name": "models", "mountPoint": "/opt/model-cache"}]
        assert {"name": "HF_HOME", "value": "/opt/model-cache"} in svc["envs"]
        assert _flag(_args(svc), "--model") == "/opt/model-cache/qwen3-32b"
        assert _flag(_args(svc), "--served-model-name") == "Qwen/Qwen3-32B"
    # a path already under the mount point is not joined twice (Dynamo issue 8568)
    docs = _render("sglang", "tp2", "tp4", model_cache_pvc="models", model_cache_pvc_path="/opt/model-cache/q")
    assert _flag(_args(_worker(docs, "decode")), "--model-path") == "/opt/model-cache/q"
    assert _flag(_args(_worker(docs, "decode")), "--served-model-name") == "Qwen/Qwen3-32B"


BASE = """
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata:
  name: my-graph
  labels: {team: inference}
spec:
  envs: [{name: DYN_LOG, value: debug}]
  services:
    Frontend:
      componentType: frontend
      replicas: 2
      extraPodSpec:
        mainContainer: {image: "my/frontend:7", args: [--router-mode, kv]}
    pw:
      envFromSecret: old-secret
      componentType: worker
      subComponentType: prefill
      replicas: 1
      resources: {limits: {gpu: "1"}, requests: {gpu: "1", memory: 40Gi}}
      multinode: {nodeCount: 4}
      sharedMemory: {size: 80Gi}
      extraPodSpec:
        tolerations: [{key: gpu, operator: Exists}]
        mainContainer:
          image: "my/vllm:7"
          workingDir: /workspace/examples/backends/vllm
          command: [python3]
          args: [-m, dynamo.vllm, --model, old/model, --is-prefill-worker, --data-parallel-size, "2",
                 --max-model-len, "6000", --kv-cache-dtype=fp8]
    dw:
      componentType: worker
      subComponentType: decode
      replicas: 1
      resources: {limits: {gpu: "1"}}
      extraPodSpec:
        mainContainer:
          image: "my/vllm:7"
          command: [python3, -m, dynamo.vllm]
          args: [--model, old/model, --enable-expert-parallel, --gpu-memory-utilization, "0.85"]
    Planner:
      componentType: planner
      replicas: 1
      extraPodSpec:
        mainContainer:
          image: "my/planner:7"
          command: [python3, -m, planner_sla]
          args: [--environment=kubernetes, --adjustment-interval=180, --ttft=1, --itl, "2", --max-gpu-budget=16]
"""


def test_base_dgd_keeps_unrelated_fields():
    base = yaml.safe_load(BASE)
    docs = _render("vllm", "tp4", "tp16", base=base)
    dgd = _dgd(docs)
    assert base["metadata"]["name"] == "my-graph"  # the caller's dict is not modified
    assert dgd["metadata"]["labels"] == {"team": "inference"}
    assert dgd["spec"]["envs"] == [{"name": "DYN_LOG", "value": "debug"}]
    services = dgd["spec"]["services"]
    assert list(services) == ["Frontend", "pw", "dw", "Planner"]
    assert services["Frontend"]["replicas"] == 2
    assert services["Frontend"]["extraPodSpec"]["mainContainer"] == {
        "image": "my/frontend:7",
        "args": ["--router-mode", "kv"],
    }
    pw, dw = services["pw"], services["dw"]
    assert pw["sharedMemory"] == {"size": "80Gi"}
    assert pw["extraPodSpec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pw["resources"] == {"limits": {"gpu": "4"}, "requests": {"gpu": "4", "memory": "40Gi"}}
    assert "multinode" not in pw  # TP4 fits one node now
    assert dw["multinode"] == {"nodeCount": 2} and dw["resources"]["limits"]["gpu"] == "8"
    assert pw["envFromSecret"] == "hf-token-secret"
    assert pw["extraPodSpec"]["mainContainer"]["image"] == "my/vllm:7"  # no image in the request: kept
    assert pw["extraPodSpec"]["mainContainer"]["workingDir"] == "/workspace/examples/backends/vllm"
    assert pw["extraPodSpec"]["mainContainer"]["command"] == ["python3", "-m", "dynamo.vllm"]
    assert _args(pw) == [
        "--model",
        "Qwen/Qwen3-32B",
        "--tensor-parallel-size",
        "4",
        "--is-prefill-worker",
        "--max-model-len",
        "6000",
        "--kv-cache-dtype=fp8",
    ]  # stale DP flag gone, own flags kept
    assert _args(dw) == [
        "--model",
        "Qwen/Qwen3-32B",
        "--tensor-parallel-size",
        "16",
        "--gpu-memory-utilization",
        "0.85",
    ]  # stale EP flag gone
    assert services["Planner"]["extraPodSpec"]["mainContainer"]["image"] == "my/planner:7"
    pargs = _args(services["Planner"])
    assert pargs[:5] == [
        "--environment=kubernetes",
        "--adjustment-interval=180",
        "--ttft=300",
        "--itl=25",
        "--max-gpu-budget=16",
    ]  # ours replace theirs in place; the rest is kept
    assert _flag(pargs, "--prefill-engine-num-gpu") == "4" and _flag(pargs, "--decode-engine-num-gpu") == "16"


def test_a_base_flag_the_engines_ran_without_is_named_in_the_header():
    # BASE's prefill worker sets --kv-cache-dtype=fp8; the profile ran the checkpoint's BF16 KV cache
    base = yaml.safe_load(BASE)
    req = _request("vllm")
    sel = _selection(req, "tp4", "tp16")
    (warning,) = base_precision_warnings(req, sel, base)
    assert "worker 'pw' sets --kv-cache-dtype" in warning and "ran as declared" in warning
    assert warning in describe(req, sel, base)
    # profiled with FP8 KV: the rendered flag replaces the base's, nothing to warn about
    fp8 = sel.model_copy(update={"precision": EnginePrecision(kv_cache="fp8")})
    assert base_precision_warnings(req, fp8, base) == []
    pw = _worker(render_manifests(req, fp8, PREFILL_JSON, DECODE_JSON, base=base), "prefill")
    assert _flag(_args(pw), "--kv-cache-dtype") == "fp8" and _args(pw).count("--kv-cache-dtype=fp8") == 0


def test_base_needs_workers_and_a_dgd():
    base = yaml.safe_load(BASE)
    del base["spec"]["services"]["dw"]
    with pytest.raises(UserError, match="no decode worker.*services: Frontend, pw, Planner"):
        _render("vllm", "tp4", "tp4", base=base)
    with pytest.raises(UserError, match="must be a DynamoGraphDeployment"):
        _render("vllm", "tp4", "tp4", base={"kind": "Deployment"})
    base = yaml.safe_load(BASE)
    base["spec"]["services"]["pw"]["extraPodSpec"]["mainContainer"].update(
        command=["/bin/sh", "-c"], args=["python3 -m dynamo.vllm"]
    )
    with pytest.raises(UserError, match="runs a shell command line"):
        _render("vllm", "tp4", "tp4", base=base)
    base = yaml.safe_load(BASE)
    base["spec"]["services"]["VllmDecodeWorkerWithAVeryLongName"] = base["spec"]["services"].pop("dw")
    with pytest.raises(UserError, match="service name 'VllmDecodeWorkerWithAVeryLongName' is too long"):
        _render("vllm", "tp4", "tp4", base=base)


def test_names_fit_dynamo_pod_name_limit():
    assert model_short_name("Qwen/Qwen3-30B-A3B") == "qwen3-30b-a3b"
    assert model_short_name("/models/Llama-3.1-8B-Instruct/") == "llama-3-1-8b-instruct"
    assert model_short_name("01-ai/Yi-34B") == "yi-34b" and model_short_name("org/7b_chat") == "m-7b-chat"
    budget = name_budget(["Frontend", "prefill", "decode", "Planner"])
    assert budget == 25
    assert derive_name("Qwen/Qwen3-32B", "vllm", budget) == "qwen3-32b-vllm"
    long_a = derive_name("nvidia/Llama-3.3-Nemotron-Super-49B-v1.5-FP8", "trtllm", budget)
    long_b = derive_name("nvidia/Llama-3.3-Nemotron-Super-49B-v1.5-NVFP4", "trtllm", budget)
    assert len(long_a) <= budget and long_a.startswith("llama-3-") and long_a.endswith("-trtllm")
    assert long_a != long_b and long_a == derive_name("nvidia/Llama-3.3-Nemotron-Super-49B-v1.5-FP8", "trtllm", budget)
    docs = _render("trtllm", "tp1", "tp1", model="nvidia/Llama-3.3-Nemotron-Super-49B-v1.5-FP8")
    assert _dgd(docs)["metadata"]["name"] == long_a
    assert docs[1]["metadata"]["name"] == f"{long_a}-engine-config"
    with pytest.raises(UserError, match="has 29 characters.*at most 25"):
        _render("vllm", "tp1", "tp1", name="a-deployment-name-of-30-chars")
    with pytest.raises(UserError, match="invalid DGD name 'Bad_Name'"):
        _render("vllm", "tp1", "tp1", name="Bad_Name")


def test_local_model_folder_is_flagged(tmp_path, model_dir):
    store = LocalStore(tmp_path)
    req = _request("vllm", str(model_dir("Qwen3-32B")))
    store.put_bytes(Layout.REQUEST, req.model_dump_json().encode())
    store.put_bytes(Layout.SELECTION, _selection(req, "tp1", "tp2").model_dump_json().encode())
    store.put_bytes(Layout.PREFILL_JSON, PREFILL_JSON.encode())
    store.put_bytes(Layout.DECODE_JSON, DECODE_JSON.encode())
    header = run_step(store).split("apiVersion")[0]
    assert "# warning: the model is the local folder" in header and "--model-cache-pvc-path" in header
    assert "warning" not in run_step(_write_run(tmp_path / "hub")).split("apiVersion")[0]


def test_nothing_to_deploy_and_bad_planner_data():
    req = _request("vllm")
    sel = _selection(req, "tp1", "tp1").model_copy(update={"decode": None})
    with pytest.raises(UserError, match="no decode engine"):
        render_manifests(req, sel, PREFILL_JSON, DECODE_JSON)
    with pytest.raises(UserError, match="decode planner data lacks .*max_kv_tokens"):
        render_manifests(req, _selection(req, "tp1", "tp1"), PREFILL_JSON, json.dumps({"x_kv_usage": []}))


def test_merge_args_replaces_both_spellings():
    assert merge_args(["--a=1", "--b", "2", "--c", "-1", "--flag"], ["--a", "9"], {"--flag"}) == [
        "--a",
        "9",
        "--b",
        "2",
        "--c",
        "-1",
    ]


def _write_run(tmp_path, backend="sglang", replicas=(2, 3)):
    req = _request(backend, "Qwen/Qwen3-30B-A3B", rate=4.0)
    store = LocalStore(tmp_path)
    store.put_bytes(Layout.REQUEST, req.model_dump_json().encode())
    store.put_bytes(Layout.SELECTION, _selection(req, "tep4", "dep8", replicas).model_dump_json().encode())
    store.put_bytes(Layout.PREFILL_JSON, PREFILL_JSON.encode())
    store.put_bytes(Layout.DECODE_JSON, DECODE_JSON.encode())
    return store


def test_run_step_writes_dgd_yaml(tmp_path):
    store = _write_run(tmp_path)
    text = run_step(store)
    assert text == (tmp_path / "dgd.yaml").read_text()
    assert text.startswith(
        "# Rendered by slaprof: Qwen/Qwen3-30B-A3B on sglang, h200_sxm\n# prefill TEP:4 x2, decode DEP:8 x3"
    )
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["ConfigMap", "DynamoGraphDeployment"]
    assert _worker(docs, "decode")["replicas"] == 3


def test_cli_render_with_base(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _write_run(run_dir, backend="vllm")
    base = tmp_path / "disagg.yaml"
    base.write_text(BASE)
    out = tmp_path / "out.yaml"
    assert (
        main(
            [
                "render",
                "--selection",
                str(run_dir),
                "--out",
                str(out),
                "--base",
                str(base),
                "--namespace",
                "prod",
                "--engine-image",
                "my/vllm:8",
            ]
        )
        == 0
    )
    assert "prefill TEP:4 x2, decode DEP:8 x3" in capsys.readouterr().out
    docs = list(yaml.safe_load_all(out.read_text()))
    dgd = _dgd(docs)
    assert dgd["metadata"]["namespace"] == "prod" and docs[0]["metadata"]["namespace"] == "prod"
    assert dgd["spec"]["services"]["dw"]["extraPodSpec"]["mainContainer"]["image"] == "my/vllm:8"
    assert dgd["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]["image"] == "my/vllm:8"
    assert dgd["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["image"] == "my/vllm:8"
    del dgd["spec"]["services"]["Planner"]  # a base without a Planner gets one, with the Frontend's image
    docs = _render("vllm", "tp1", "tp1", base=dgd)
    assert _dgd(docs)["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["image"] == "my/vllm:8"
    assert main(["render", "--selection", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "must be a finished run folder" in capsys.readouterr().err


def test_rendered_manifests_apply_cleanly(cluster):
    docs = _render("trtllm", "tep4", "dep8", model="Qwen/Qwen3-30B-A3B", replicas=(1, 2))
    api = cluster.api_client()
    first = apply_manifests(docs, "serving", api_client=api)
    assert [o.action for o in first.objects] == ["created"] * 3
    again = _render("trtllm", "tep4", "dep8", model="Qwen/Qwen3-30B-A3B", replicas=(1, 2))
    assert {o.action for o in apply_manifests(again, "serving", api_client=api).objects} == {"unchanged"}
    more = _render("trtllm", "tep4", "dep8", model="Qwen/Qwen3-30B-A3B", replicas=(1, 4))
    assert [o.action for o in apply_manifests(more, "serving", api_client=api).objects] == [
        "unchanged",
        "unchanged",
        "updated",
    ]
    stored = cluster.get(DGD_RESOURCE, "serving", _dgd(more)["metadata"]["name"])
    assert stored["spec"]["services"]["decode"]["replicas"] == 4
