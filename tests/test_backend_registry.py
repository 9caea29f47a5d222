"""A backend is one registered EngineBackend: a toy backend defined and registered here, in one
place, is profiled offline end to end (plan, estimates, selection, a DGD running its workers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import Selection
from slaprof.steps.dynamo import dynamo_releases
from slaprof.steps.engines import EngineBackend, backend_names, get_backend, register_backend, registry
from slaprof.steps.engines.base import Role, ServerLaunch, ServerOptions, dynamo_image, last_per_rank, to_int
from slaprof.steps.perf.constants import constants_for
from slaprof.steps.perf.memory import kv_capacity_tokens
from slaprof.steps.perf.roofline import BuiltinEstimator
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info
from tests.test_profile import DECODE_LINE, PREFILL_LINE, QWEN32B_SLA

_KV = re.compile(r"toy kv tokens:\s*(?P<n>[0-9,]+)")


class ToyBackend(EngineBackend):
    """Everything slaprof needs to know about an engine it has never seen."""

    name = "toy"
    dynamo_module = "dynamo.toy"
    runtime_image = dynamo_image("toy-runtime")
    dgd_workdir = "/workspace/examples/backends/toy"
    memory_utilization = 0.80  # claims less memory than vLLM: fewer KV tokens
    calibrated_as = "vllm"  # no calibration of its own: times itself like vLLM

    def parallel_args(self, cand: Candidate) -> list[str]:
        args = ["--toy-tp", str(cand.size)]
        if cand.moe_ep > 1:
            args.append("--toy-expert-parallel")
        if cand.attn_dp > 1:
            args += ["--toy-attention-dp", str(cand.attn_dp)]
        return args

    def dgd_worker_args(self, model: str, cand: Candidate, role: Role, max_context: int = 0) -> list[str]:
        context = ["--toy-max-len", str(max_context)] if max_context else []
        return ["--model", model, *self.parallel_args(cand), *context, "--toy-role", role]

    def server_launch(self, model: str, cand: Candidate, port: int, options: ServerOptions) -> ServerLaunch:
        return ServerLaunch(argv=["toy-serve", model, "--port", str(port), *self.parallel_args(cand)])

    def kv_tokens_from_log(self, log_text: str, attn_dp: int = 1) -> int | None:
        return last_per_rank([(None, to_int(m.group("n"))) for m in _KV.finditer(log_text)], attn_dp)


@pytest.fixture
def toy(monkeypatch):
    """The toy registered for one test (a copy of the registry, so the next test does not see it)."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    register_backend(ToyBackend)
    return get_backend("toy")


def test_a_request_names_only_registered_backends(toy):
    assert backend_names() == ("vllm", "sglang", "trtllm", "toy")
    assert "simulated" in backend_names(deployable_only=False)
    assert build_request({"model": "m", "backend": "toy"}).backend == "toy"
    with pytest.raises(UserError, match=r"backend = 'tgi': must be one of vllm, sglang, trtllm, toy$"):
        build_request({"model": "m", "backend": "tgi"})
    with pytest.raises(UserError, match="backend = 'simulated'"):  # a stand-in, chosen by --method simulate
        build_request({"model": "m", "backend": "simulated"})
    with pytest.raises(ValueError, match="already registered by tests.test_backend_registry.ToyBackend"):
        register_backend(type("OtherToy", (ToyBackend,), {}))


def test_an_unregistered_backend_is_one_clear_line(tmp_path, capsys):
    code = main(["profile", *QWEN32B_SLA, "--backend", "toy", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == "slaprof: error: invalid request: backend = 'toy': must be one of vllm, sglang, trtllm"


def test_the_toy_backend_brings_its_own_facts(toy):
    model, gpu, tp2 = load_model_info(str(QWEN32B_SLA[1])), get_gpu("h200_sxm"), Candidate.parse("tp2")
    assert constants_for("toy") == constants_for("vllm")
    assert BuiltinEstimator(model, gpu, "toy", tp2).prefill_ttft_ms(3000) == pytest.approx(
        BuiltinEstimator(model, gpu, "vllm", tp2).prefill_ttft_ms(3000)
    )
    assert 0 < kv_capacity_tokens(model, gpu, tp2, "toy") < kv_capacity_tokens(model, gpu, tp2, "vllm")
    with pytest.raises(UserError, match="AI Configurator has no backend 'toy'; it covers vllm, sglang, trtllm"):
        from slaprof.steps.perf.aic import AicEstimator

        AicEstimator(model, gpu, "toy", tp2)
    dgd = toy.dgd_template("engine:1", "frontend:1")
    decode = dgd["spec"]["services"]["decode"]["extraPodSpec"]["mainContainer"]
    assert decode["command"] == ["python3", "-m", "dynamo.toy"] and decode["workingDir"] == toy.dgd_workdir
    assert dgd["metadata"]["name"] == "toy-disagg"


def test_profile_offline_with_a_toy_backend(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    code = main(["profile", *QWEN32B_SLA, "--backend", "toy", "--serving", "disagg", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    plan = json.loads((out / "plan.json").read_text())
    assert plan["backend"] == "toy"
    model, gpu = load_model_info(str(QWEN32B_SLA[1])), get_gpu("h200_sxm")
    runnable = [c for c in plan["candidates"] if c["status"] == "runnable"]
    assert runnable
    for c in runnable:  # the plan sized each engine with the toy's memory share, not vLLM's
        cand = Candidate.model_validate(c["candidate"])
        assert (
            c["kv_tokens_estimate"]
            == kv_capacity_tokens(model, gpu, cand, "toy")
            < kv_capacity_tokens(model, gpu, cand, "vllm")
        )

    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert selection.backend == "toy" and selection.deployment.mode == "disagg"
    lines = captured.out.strip().splitlines()
    prefill, decode = PREFILL_LINE.match(lines[0]), DECODE_LINE.match(lines[1])
    assert prefill and decode, lines
    assert prefill.group(1, 2) == (selection.prefill.candidate.kind.upper(), str(selection.prefill.candidate.size))
    assert float(prefill.group(3)) == pytest.approx(selection.prefill.ttft_ms, abs=0.006)

    docs = [d for d in yaml.safe_load_all((out / "dgd.yaml").read_text()) if d]
    dgd = docs[-1]
    release = dynamo_releases.get(dynamo_releases.NEWEST)
    assert dgd["kind"] == "DynamoGraphDeployment" and dgd["apiVersion"] == release.dgd_api_version
    assert dgd["metadata"]["name"] == "qwen3-32b-toy"
    workers = {c["type"]: c for c in dgd["spec"]["components"] if c["type"] in ("prefill", "decode")}
    for role, choice in (("prefill", selection.prefill), ("decode", selection.decode)):
        main_container = workers[role]["podTemplate"]["spec"]["containers"][0]
        assert main_container["image"] == f"nvcr.io/nvidia/ai-dynamo/toy-runtime:{release.version}"
        assert main_container["command"] == ["python3", "-m", "dynamo.toy"]
        assert main_container["workingDir"] == "/workspace/examples/backends/toy"
        args = main_container["args"]
        assert args[: len(toy.parallel_args(choice.candidate)) + 2] == [
            "--model",
            str(QWEN32B_SLA[1]),
            *toy.parallel_args(choice.candidate),
        ]
        assert args[args.index("--toy-role") + 1] == role


# ---------------------------------------------------------------------------
# a backend from an installed package (entry-point group slaprof.backends)
# ---------------------------------------------------------------------------
PLUGIN_MODULE = """
import re
from slaprof.steps.engines import EngineBackend
from slaprof.steps.engines.base import ServerLaunch, dynamo_image, last_per_rank, to_int

class PluggedBackend(EngineBackend):
    name = "plugged"
    dynamo_module = "dynamo.plugged"
    runtime_image = dynamo_image("plugged-runtime")
    dgd_workdir = "/workspace/plugged"
    calibrated_as = "vllm"

    def parallel_args(self, cand):
        return ["--plugged-tp", str(cand.size)]

    def dgd_worker_args(self, model, cand, role, max_context=0):
        return ["--model", model, *self.parallel_args(cand), "--plugged-role", role]

    def server_launch(self, model, cand, port, options):
        return ServerLaunch(argv=["plugged-serve", model, "--port", str(port)])

    def kv_tokens_from_log(self, log_text, attn_dp=1):
        found = re.finditer(r"kv tokens: ([0-9,]+)", log_text)
        return last_per_rank([(None, to_int(m.group(1))) for m in found], attn_dp)

class Misnamed(PluggedBackend):
    name = "other"
"""


def _install_plugin(root, entry_points: dict[str, str]):
    """A package installed the way pip leaves one: its module and a dist-info with entry_points.txt."""
    info = root / "slaprof_plugged-0.1.dist-info"
    info.mkdir(parents=True)
    (root / "slaprof_plugged.py").write_text(PLUGIN_MODULE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slaprof-plugged\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text("[slaprof.backends]\n" + lines)
    return root


def test_an_installed_plugin_backend_is_found_by_a_fresh_process(tmp_path):
    # a new process knows only what is installed: the simulated engine and Argo pods are such processes
    plugin = _install_plugin(tmp_path / "site", {"plugged": "slaprof_plugged:PluggedBackend"})
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    cli = [sys.executable, "-m", "slaprof.steps.cli.main"]
    help_text = subprocess.run([*cli, "profile", "--help"], env=env, capture_output=True, text=True, check=True)
    assert "{vllm,sglang,trtllm,plugged}" in help_text.stdout
    out = tmp_path / "out"
    run = subprocess.run(
        [*cli, "profile", *QWEN32B_SLA, "--backend", "plugged", "--serving", "disagg", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert PREFILL_LINE.match(run.stdout.splitlines()[0]), run.stdout
    dgd = [d for d in yaml.safe_load_all((out / "dgd.yaml").read_text()) if d][-1]
    assert dgd["metadata"]["name"] == "qwen3-32b-plugged"
    workers = [c for c in dgd["spec"]["components"] if c["type"] in ("prefill", "decode")]
    assert {tuple(w["podTemplate"]["spec"]["containers"][0]["command"]) for w in workers} == {
        ("python3", "-m", "dynamo.plugged")
    }
    # without the package the same process does not know it
    bare = subprocess.run(
        [*cli, "profile", *QWEN32B_SLA, "--backend", "plugged", "--out", str(tmp_path / "bare")],
        capture_output=True,
        text=True,
    )
    assert bare.returncode == 2 and "must be one of vllm, sglang, trtllm" in bare.stderr


def test_a_broken_plugin_is_named_and_leaves_the_others_working(tmp_path, monkeypatch, caplog):
    plugin = _install_plugin(
        tmp_path / "site",
        {
            "plugged": "slaprof_plugged:PluggedBackend",
            "missing": "slaprof_not_installed:Backend",
            "misnamed": "slaprof_plugged:Misnamed",
            "wrong": "slaprof_plugged:re",
        },
    )
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    monkeypatch.setattr(registry, "_plugin_errors", {})
    monkeypatch.setattr(registry, "_plugins_read", False)
    assert backend_names() == ("vllm", "sglang", "trtllm", "plugged")
    assert get_backend("plugged").dynamo_module == "dynamo.plugged"
    with pytest.raises(
        UserError,
        match=r"^backend plugin 'missing' \(slaprof_not_installed:Backend\) did not load: "
        r"ModuleNotFoundError",
    ):
        get_backend("missing")
    with pytest.raises(UserError, match=r"slaprof_plugged:Misnamed is named 'other', not 'misnamed'$"):
        get_backend("misnamed")
    with pytest.raises(UserError, match=r"backend = 'wrong': backend plugin 'wrong' .* not an EngineBackend subclass"):
        build_request({"model": "m", "backend": "wrong"})
    assert sum("did not load" in r.getMessage() for r in caplog.records) == 3
