"""No silent wrong answers: inputs that used to give a wrong or unsafe result with exit 0 (or a
traceback) now give a correct result or one clear line with exit 2. One test per case, as a user
meets it: the `slaprof` command line on real files (and a real S3 server and KMock cluster)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core import store as store_module
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.results import Selection
from slaprof.steps.core.store import open_store
from slaprof.steps.engines import get_backend
from slaprof.steps.runner.runlock import LOCK_KEY, RunInUse, RunLock
from tests.conftest import MODELS, ROOT

QWEN06 = str(MODELS / "Qwen3-0.6B")  # max_position_embeddings 40960


def _profile(out: Path | str, *args: str) -> list[str]:
    # Dynamo 0.9's DGD shape (spec.services) of a disaggregated graph, which these checks read; every
    # release and serving mode is rendered in tests/test_dynamo_releases.py and tests/test_render_agg.py
    return [
        "profile",
        "--model",
        QWEN06,
        "--gpu",
        "h200_sxm",
        "--dynamo-version",
        "0.9",
        "--serving",
        "disagg",
        "--progress",
        "none",
        "--out",
        str(out),
        *args,
    ]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slaprof: error: "), err
    return lines[0]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _service(docs: list[dict], role: str) -> dict:
    (svc,) = [s for s in docs[-1]["spec"]["services"].values() if s.get("subComponentType") == role]
    return svc


def _planner_args(docs: list[dict]) -> list[str]:
    (svc,) = [s for s in docs[-1]["spec"]["services"].values() if s.get("componentType") == "planner"]
    return [str(a) for a in svc["extraPodSpec"]["mainContainer"]["args"]]


def _flag(args: list[str], flag: str) -> str | None:
    for i, tok in enumerate(args):
        if tok == flag:
            return args[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------
# two runs into the same output
# ---------------------------------------------------------------------------
HOLD = (
    "import sys\n"
    "from slaprof.steps.core.store import open_store\n"
    "from slaprof.steps.runner.runlock import RunLock\n"
    "RunLock(open_store(sys.argv[1])).acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_second_profile_into_the_same_folder_exits_2_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(_profile(out)) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"host {socket.gethostname()}, pid {holder.pid}, started " in line and str(out) in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_KEY]  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()

    # the holder died without releasing: the next run takes its lock over, says so, and finishes
    assert main(_profile(out)) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of {out}" in err and f"pid {holder.pid}" in err and "no longer running" in err
    assert (out / "selection.json").is_file() and not (out / LOCK_KEY).exists()


def test_second_profile_into_the_same_s3_prefix_exits_2(s3_server, monkeypatch, capsys):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    location = "s3://slaprof-runs/locked-run"
    store = open_store(location)
    remote = RunLock(store, host="gpu-node-7", pid=4242)
    remote.acquire()
    assert main(_profile(location)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "s3://slaprof-runs/locked-run" in line and "host gpu-node-7, pid 4242, started " in line
    assert store.list() == [LOCK_KEY]

    # a lease its holder stopped renewing expires: the next run takes it over with a warning
    stale = RunLock(store, host="gpu-node-7", pid=4242, clock=lambda: time.time() - 3600)
    remote.release()
    stale.acquire()  # left by a holder that stopped an hour ago
    assert main(_profile(location)) == 0
    err = capsys.readouterr().err
    assert "took over the lock of s3://slaprof-runs/locked-run" in err and "stopped renewing its lease" in err
    assert store.exists("selection.json") and not store.exists(LOCK_KEY)


def test_argo_tasks_refuse_a_prefix_a_local_run_holds(tmp_path, monkeypatch):
    from slaprof.workflows.tasks import run_store

    monkeypatch.setenv("SLAPROF_STORE_ROOT", str(tmp_path))
    RunLock(open_store(str(tmp_path / "wf-1"))).acquire()
    with pytest.raises(RunInUse, match=f"pid {os.getpid()}"):
        run_store("wf-1")
    assert run_store("wf-2").uri() == str(tmp_path / "wf-2")


# ---------------------------------------------------------------------------
# requests longer than the context
# ---------------------------------------------------------------------------
def test_isl_plus_osl_beyond_the_models_context_is_refused(tmp_path, capsys):
    assert main(_profile(tmp_path / "a", "--isl", "1000000", "--osl", "500")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "ISL 1000000 + OSL 500 = 1000500 tokens" in line and "40960" in line
    assert not (tmp_path / "a" / "selection.json").exists()

    assert main(_profile(tmp_path / "b", "--max-context-length", "1000", "--isl", "3000")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "3500 tokens" in line and "--max-context-length 1000" in line

    estimate = ["estimate", "--model", QWEN06, "--gpu", "h200_sxm", "--backend", "vllm", "--mapping", "tp1"]
    assert main([*estimate, "--isl", "1000000", "--osl", "500", "--batch", "1"]) == 2
    assert "1000500 tokens" in _one_error_line(capsys.readouterr().err)
    assert main([*estimate, "--isl", "3000", "--osl", "500", "--batch", "1"]) == 0


def test_select_refuses_a_new_isl_beyond_the_context(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_profile(run)) == 0
    capsys.readouterr()
    assert main(["select", "--profiles", str(run), "--isl", "40000", "--osl", "1000"]) == 2
    assert "41000 tokens exceed the context" in _one_error_line(capsys.readouterr().err)
    assert main(["select", "--profiles", str(run), "--isl", "4000"]) == 0


def test_argo_plan_refuses_the_same_request():
    from slaprof.steps.dag.plan import make_plan
    from slaprof.workflows.tasks import build_request_from_parameters

    request = build_request_from_parameters("", {"model": QWEN06, "isl": "40000", "osl": "1000"})
    with pytest.raises(UserError, match="41000 tokens"):
        make_plan(request)


# ---------------------------------------------------------------------------
# the context the plan assumed reaches the workers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
def test_max_context_length_reaches_the_workers(tmp_path, capsys, backend):
    out = tmp_path / backend
    assert main(_profile(out, "--backend", backend, "--max-context-length", "8192", "--isl", "2000")) == 0
    docs = _docs(out / "dgd.yaml")
    for role in ("prefill", "decode"):
        args = [str(a) for a in _service(docs, role)["extraPodSpec"]["mainContainer"]["args"]]
        if backend == "vllm":
            assert _flag(args, "--max-model-len") == "8192"
        elif backend == "sglang":
            assert _flag(args, "--context-length") == "8192"
        else:
            (cm,) = [d for d in docs if d["metadata"]["name"].endswith("-engine-config")]
            engine = yaml.safe_load(cm["data"][f"{role}.yaml"])
            assert engine["max_seq_len"] == 8192 and engine["max_num_tokens"] == 8192
    assert Selection.model_validate_json((out / "selection.json").read_text()).max_context == 8192


def test_without_a_limit_the_workers_get_the_context_the_plan_sized(tmp_path, capsys):
    assert main(_profile(tmp_path / "run")) == 0
    args = _service(_docs(tmp_path / "run" / "dgd.yaml"), "decode")["extraPodSpec"]["mainContainer"]["args"]
    assert _flag([str(a) for a in args], "--max-model-len") == "40960"


# ---------------------------------------------------------------------------
# an SLA that cannot be met
# ---------------------------------------------------------------------------
def test_unmet_sla_deploys_the_nearest_achievable_targets(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_profile(out, "--ttft", "1", "--itl", "1")) == 0
    captured = capsys.readouterr()
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    nearest = selection.nearest_sla
    assert nearest is not None and nearest["ttft_ms"] > 1 and nearest["itl_ms"] > 1
    # the targets are rounded up, never below what the chosen engines reach
    assert nearest["ttft_ms"] >= selection.prefill.ttft_ms and nearest["itl_ms"] >= selection.decode.itl_ms
    args = _planner_args(_docs(out / "dgd.yaml"))
    assert (_flag(args, "--ttft"), _flag(args, "--itl")) == (f"{nearest['ttft_ms']:g}", f"{nearest['itl_ms']:g}")
    note = f"nearest achievable SLA: TTFT {nearest['ttft_ms']:.2f} ms, ITL {nearest['itl_ms']:.2f} ms"
    assert note in captured.err and "the requested SLA (TTFT 1 ms, ITL 1 ms) cannot be met" in captured.err
    report = (out / "report.html").read_text()
    assert f"N{note[1:]}; the DGD's planner targets it instead of the requested SLA" in report
    assert note in (out / "dgd.yaml").read_text().split("apiVersion")[0]  # the DGD's header says so too


def test_unmet_sla_of_an_aggregated_deployment_promises_no_planner(tmp_path, capsys):
    # an aggregated DGD has no planner: the warnings name the nearest SLA as what the deployment reaches
    out = tmp_path / "run"
    assert main(_profile(out, "--ttft", "1", "--itl", "1", "--serving", "agg")) == 0
    err = capsys.readouterr().err
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert selection.deployment is not None and selection.deployment.mode == "agg" and selection.nearest_sla
    assert "cannot be met; the aggregated deployment reaches the nearest achievable SLA" in err
    header = (out / "dgd.yaml").read_text().split("apiVersion")[0]
    assert "the aggregated deployment reaches the nearest achievable SLA" in header
    assert "planner targets" not in err + header + (out / "report.html").read_text()


# ---------------------------------------------------------------------------
# the planner's ConfigMap is named after its DGD
# ---------------------------------------------------------------------------
def test_two_models_in_one_namespace_keep_their_own_planner_data(tmp_path, capsys, cluster):
    from slaprof.steps.dag.apply import apply_manifests
    from tests.plugins.kube import CONFIGMAP_RESOURCE

    names = {}
    for model in ("Qwen3-0.6B", "Llama-3.1-8B"):
        out = tmp_path / model
        assert main([*_profile(out), "--model", str(MODELS / model)]) == 0
        docs = _docs(out / "dgd.yaml")
        dgd = docs[-1]["metadata"]["name"]
        cm = docs[0]["metadata"]["name"]
        assert cm == f"{dgd}-planner-profile-data" and len(cm) <= 63
        (planner,) = [s for s in docs[-1]["spec"]["services"].values() if s["componentType"] == "planner"]
        volumes = planner["extraPodSpec"]["volumes"]
        assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [cm]
        apply_manifests(docs, "dynamo", api_client=cluster.api_client())
        names[model] = (cm, docs[0]["data"]["prefill_raw_data.json"])
    assert names["Qwen3-0.6B"][0] != names["Llama-3.1-8B"][0]
    for cm, prefill in names.values():
        assert cluster.get(CONFIGMAP_RESOURCE, "dynamo", cm)["data"]["prefill_raw_data.json"] == prefill


def test_a_base_dgd_keeps_its_own_name(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_profile(run)) == 0
    base = tmp_path / "base.yaml"
    template = get_backend("vllm").dgd_template("engine:1", "frontend:1")  # the built-in vLLM graph
    template["metadata"]["name"] = "team-graph"
    base.write_text(yaml.safe_dump(template))
    out = tmp_path / "dgd.yaml"
    assert main(["render", "--selection", str(run), "--base", str(base), "--out", str(out)]) == 0
    docs = _docs(out)
    assert docs[-1]["metadata"]["name"] == "team-graph"
    assert docs[0]["metadata"]["name"] == "team-graph-planner-profile-data"
    assert main(["render", "--selection", str(run), "--base", str(base), "--name", "other", "--out", str(out)]) == 0
    assert _docs(out)[0]["metadata"]["name"] == "other-planner-profile-data"


# ---------------------------------------------------------------------------
# request files of the wrong kind
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "found", "hint"),
    [
        (
            {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "spec": {"services": {}}},
            "kind DynamoGraphDeployment",
            "slaprof render --base",
        ),
        (
            {"apiVersion": "nvidia.com/v9", "kind": "DynamoGraphDeploymentRequest", "spec": {"model": QWEN06}},
            "apiVersion 'nvidia.com/v9'",
            "nvidia.com/v1alpha1, nvidia.com/v1beta1",
        ),
        ({"kind": "Foo", "model": QWEN06}, "kind Foo", "DynamoGraphDeploymentRequest"),
    ],
)
def test_request_file_of_an_unknown_kind_says_what_it_found(tmp_path, capsys, doc, found, hint):
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["profile", "--config", str(path), "--progress", "none", "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert found in line and hint in line and str(path) in line


# ---------------------------------------------------------------------------
# tracebacks that are now one line
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--ttft", "inf", "must be a finite number"),
        ("--ttft", "nan", "must be a finite number"),
        ("--itl", "-inf", "must be a finite number"),
        ("--ttft", "-5", "greater than 0"),
        ("--request-rate", "inf", "must be a finite number"),
    ],
)
def test_non_finite_or_negative_targets_are_one_line(tmp_path, capsys, flag, value, says):
    assert main(_profile(tmp_path / "o", f"{flag}={value}")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert says in line and value.lstrip("-") in line


@pytest.mark.parametrize("key", ["num_hidden_layers", "num_attention_heads", "hidden_size"])
def test_config_with_zero_sized_shapes_is_one_line(tmp_path, capsys, key):
    config = json.loads((MODELS / "Qwen3-0.6B" / "config.json").read_text())
    config[key] = 0
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    assert main([*_profile(tmp_path / "o"), "--model", str(model)]) == 2
    assert f"{key} = 0" in _one_error_line(capsys.readouterr().err)
    estimate = ["estimate", "--model", str(model), "--gpu", "h200_sxm", "--backend", "vllm", "--mapping", "tp1"]
    assert main([*estimate, "--isl", "100", "--osl", "10", "--batch", "1"]) == 2
    assert f"{key} = 0" in _one_error_line(capsys.readouterr().err)


def test_selection_of_the_wrong_shape_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_profile(run)) == 0
    capsys.readouterr()
    (run / "selection.json").write_text(json.dumps({"prefill": 3}))
    assert main(["render", "--selection", str(run), "--out", str(tmp_path / "dgd.yaml")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{run / 'selection.json'} is not a valid Selection" in line
    (run / "selection.json").write_text("[1, 2")
    assert main(["render", "--selection", str(run), "--out", str(tmp_path / "dgd.yaml")]) == 2
    assert "is not a valid Selection" in _one_error_line(capsys.readouterr().err)


def test_workflow_render_onto_an_existing_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "manifests.yaml"
    existing.write_text("mine\n")
    assert main(["workflow", "render", "--out", str(existing)]) == 2
    assert "is a file" in _one_error_line(capsys.readouterr().err)
    assert existing.read_text() == "mine\n"
    folder = tmp_path / "manifests"
    assert main(["workflow", "render", "--out", str(folder)]) == 0
    first = (folder / "workflowtemplate.yaml").read_text()
    assert main(["workflow", "render", "--out", str(folder)]) == 0  # regenerated in place
    assert (folder / "workflowtemplate.yaml").read_text() == first
    assert sorted(p.name for p in folder.iterdir()) == ["cronworkflow.yaml", "workflowtemplate.yaml"]


def test_full_disk_is_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    """The disk fills after the plan: every later write gets ENOSPC from the kernel (/dev/full)."""
    real = store_module.temp_file

    def filling(folder: Path, name: str) -> tuple[int, str]:
        if name in (LOCK_KEY, "request.json", "plan.json"):
            return real(folder, name)
        fd, path = real(folder, name)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path

    monkeypatch.setattr(store_module, "temp_file", filling)
    out = tmp_path / "run"
    assert main(_profile(out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(out) in line
    assert not list(out.rglob("*.part")) and not (out / LOCK_KEY).exists()
