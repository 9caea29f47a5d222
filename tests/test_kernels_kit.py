"""The GPU validation kit: bench/kernels.py (GPU side), its report read by bench/calibrate.py, and the
Argo Workflow in the chart's ci/ folder that runs it on a cluster GPU node.

No GPU here: the GPU side is checked for its clear failures without PyTorch or CUDA and for the
report it builds; the consumption runs on a small recorded report (tests/fixtures/kernels: a
synthetic one in the kit's format, its `note` says how it was made); the Workflow is checked
against the Argo CRD schema, Pod Security "restricted" and the chart that must be installed for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python.chart as helm_chart
import pytest
import yaml

from slaprof.steps.core.errors import UserError
from slaprof.steps.perf.constants import constants_for
from slaprof.steps.perf.kernel_report import (
    MEASURED_CONSTANTS,
    KernelReport,
    catalog_gpu,
    compare,
    measured_efficiencies,
    read_kernel_report,
)
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info_from_dir
from tests.conftest import MODELS, ROOT
from tests.plugins.argo_schema import assert_valid_argo
from tests.plugins.pod_security import restricted_violations, workflow_pods

FIXTURE = ROOT / "tests" / "fixtures" / "kernels" / "h200-synthetic.json"
WORKFLOW = ROOT / "charts" / "slaprof" / "ci" / "kernels-workflow.yaml"
KERNELS = ROOT / "bench" / "kernels.py"
BUDGET_S = 8 * 60  # what one GPU may spend on the check


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernels() -> ModuleType:
    return _bench_module("kernels")


def _run(args: list[str], tmp_path: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------
# the GPU side
# ---------------------------------------------------------------------------
def test_without_pytorch_the_check_fails_with_one_clear_line(tmp_path: Path) -> None:
    assert importlib.util.find_spec("torch") is None  # slaprof does not depend on it
    proc = _run([str(KERNELS), "--out", "k.json"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kernels: needs PyTorch with CUDA (a PyTorch container, or pip install torch); it is not a slaprof dependency"
    )
    assert not (tmp_path / "k.json").exists()


def test_without_a_gpu_the_check_fails_with_one_clear_line(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "torch"  # a PyTorch built without CUDA, as on a CPU node
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "__version__ = '2.6.0+cpu'\n"
        "class cuda:\n    is_available = staticmethod(lambda: False)\n"
        "class version:\n    cuda = None\n"
    )
    proc = _run([str(KERNELS), "--out", "-"], tmp_path, pythonpath=tmp_path / "site")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "kernels: no CUDA GPU visible to PyTorch 2.6.0+cpu (CUDA none)"


def test_the_report_the_check_builds_is_what_the_calibration_reads(kernels: ModuleType) -> None:
    rows = [kernels.kernel_row("hbm_copy", {"bytes": 1 << 20}, 0.01)]
    rows += [kernels.kernel_row("gemm_bf16", {"m": m, "k": 4096, "n": 28672}, 0.5) for m in (16, 4096)]
    rows += [kernels.kernel_row("attn_prefill", {"seq": 4096}, 0.3)]
    rows += [kernels.kernel_row("layer_decode", {"batch": 32, "context": 2048}, 0.4)]
    doc = kernels.build_report(
        {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0"},
        {"torch": "2.6.0"},
        rows,
        iters=10,
        warmup=3,
        elapsed_s=1.0,
        complete=True,
        skipped=[],
    )
    report = KernelReport.model_validate(json.loads(json.dumps(doc)))
    assert report.format == kernels.FORMAT and [r.kind for r in report.kernels][:2] == ["hbm_copy", "gemm_bf16"]
    gemm = report.of("gemm_bf16")[1]
    assert gemm.flops == 2.0 * 4096 * 4096 * 28672  # 2 m k n
    assert gemm.bytes == 2.0 * (4096 * 28672 + 4096 * 4096 + 4096 * 28672)  # weights, input, output in bf16
    assert report.of("hbm_copy")[0].bytes == 2 * (1 << 20)  # a copy reads and writes
    assert catalog_gpu(report).name == "h100_sxm"
    # the shapes the check times are those of the model the calibration puts next to them
    llama = load_model_info_from_dir(MODELS / "Llama-3.1-8B", "meta-llama/Llama-3.1-8B")
    assert len(compare(report, get_gpu("h100_sxm"), constants_for("vllm"), llama)) == len(rows)


def test_the_budget_fits_one_gpu_and_every_parameter_is_checked(kernels: ModuleType) -> None:
    args = kernels.parse_args(["--out", "-"])
    assert args.budget_s < BUDGET_S and args.iters > 0
    with pytest.raises(ValueError, match="unknown kernel kind"):
        kernels.work("gemm_int4", {})


# ---------------------------------------------------------------------------
# what the calibration takes from a report
# ---------------------------------------------------------------------------
def test_recorded_report_gives_the_kernel_efficiencies() -> None:
    report = read_kernel_report(FIXTURE)
    gpu = catalog_gpu(report)
    assert gpu.name == "h200_sxm" and report.complete and "synthetic" in report.note
    found = measured_efficiencies(report, gpu)
    assert set(found) == set(MEASURED_CONSTANTS)
    # the fixture was written at 86% of HBM bandwidth, 72% of bf16 peak in compute-bound GEMMs and
    # 48% in long-prompt attention: memory-bound GEMMs (16 and 128 tokens) stay out of gemm_eff
    assert found["mem_eff"] == pytest.approx(0.86, abs=0.005)
    assert found["gemm_eff"] == pytest.approx(0.72, abs=0.005)
    assert found["attn_eff"] == pytest.approx(0.48, abs=0.005)


def test_a_pod_log_with_the_report_on_one_line_is_read(tmp_path: Path) -> None:
    doc = json.dumps(json.loads(FIXTURE.read_text()), separators=(",", ":"))
    log = tmp_path / "kernels.log"
    log.write_text(f"slaprof-kernels-x7k2p: kernels on NVIDIA H200\nslaprof-kernels-x7k2p: {doc}\n")
    assert read_kernel_report(log) == read_kernel_report(FIXTURE)


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("no report here\n", "holds no bench/kernels.py report"),
        ('{"format": "slaprof-kernels/1", "device": {"name": "x"}}', "is not a bench/kernels.py report"),
    ],
)
def test_a_file_without_a_report_is_a_clear_user_error(tmp_path: Path, text: str, mentions: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=mentions):
        read_kernel_report(path)


def test_a_gpu_outside_the_catalog_is_named() -> None:
    data = json.loads(FIXTURE.read_text())
    data["device"]["name"] = "NVIDIA H100 PCIe"  # another bandwidth than the SXM part
    with pytest.raises(UserError, match="NVIDIA H100 PCIe .* not a GPU of slaprof's catalog"):
        catalog_gpu(KernelReport.model_validate(data))


@pytest.mark.parametrize(
    ("device", "gpu"),
    [
        ("NVIDIA H100 80GB HBM3", "h100_sxm"),
        ("NVIDIA H200", "h200_sxm"),
        ("NVIDIA A100-SXM4-80GB", "a100_sxm"),
        ("NVIDIA B200", "b200_sxm"),
        ("NVIDIA GB200", "gb200"),  # contains "B200" but is not the B200
        ("NVIDIA GB300", "gb300"),
        ("NVIDIA L40S", "l40s"),
    ],
)
def test_each_catalog_gpu_knows_the_device_name_torch_gives_it(device: str, gpu: str) -> None:
    data = json.loads(FIXTURE.read_text())
    data["device"]["name"] = device
    assert catalog_gpu(KernelReport.model_validate(data)).name == gpu


def test_calibration_pins_the_measured_efficiencies() -> None:
    calibrate = _bench_module("calibrate")
    pins = {"mem_eff": 0.86, "gemm_eff": 0.72}
    table = calibrate.pinned(calibrate.FITTED, pins)
    assert list(table) == list(calibrate.FITTED)
    for name, value in pins.items():
        start, lo, hi = table[name]
        assert start == value and lo < value < hi and hi - lo < 1e-5
    assert table["attn_eff"] == calibrate.FITTED["attn_eff"]
    with pytest.raises(ValueError, match="not fitted constants: hbm_gbps"):
        calibrate.pinned(calibrate.FITTED, {"hbm_gbps": 4800.0})


def test_calibrate_compares_a_report_without_fitting(tmp_path: Path) -> None:
    proc = _run([str(ROOT / "bench" / "calibrate.py"), "--kernels", str(FIXTURE), "--kernels-only"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "NVIDIA H200 -> h200_sxm" in proc.stdout and "gemm_bf16 m=8192 k=4096 n=28672" in proc.stdout
    measured = next(line for line in proc.stdout.splitlines() if line.startswith("measured:"))
    assert "mem_eff 0.86" in measured and "gemm_eff 0.72" in measured and "attn_eff 0.48" in measured
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = _run([str(ROOT / "bench" / "calibrate.py"), "--kernels", str(bad), "--kernels-only"], tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad.json is not a bench/kernels.py report (slaprof-kernels/1): format: Field required" in proc.stderr


# ---------------------------------------------------------------------------
# the cluster recipe
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_is_a_valid_restricted_argo_workflow(workflow: dict[str, Any]) -> None:
    assert_valid_argo(workflow)
    pods = workflow_pods(workflow)
    assert list(pods) == ["kernels"]
    assert restricted_violations(pods["kernels"]) == []


def test_workflow_runs_the_check_within_its_budget_and_logs_the_report(
    workflow: dict[str, Any], kernels: ModuleType
) -> None:
    template = workflow["spec"]["templates"][0]
    command = template["container"]["command"]
    assert command[0] == "python"
    script = Path(command[1])
    args = kernels.parse_args(command[2:])
    assert args.out == "-"  # the report goes to the log, where calibrate.py reads it
    assert args.budget_s < BUDGET_S <= template["activeDeadlineSeconds"] <= workflow["spec"]["activeDeadlineSeconds"]
    mount = next(m for m in template["container"]["volumeMounts"] if m["mountPath"] == str(script.parent))
    volume = next(v for v in workflow["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "slaprof-kernels"  # README: create it from bench/kernels.py
    readme = (ROOT / "README.md").read_text()
    assert f"create configmap slaprof-kernels --from-file={script.name}=bench/kernels.py" in readme
    assert f"argo submit -n profiling --wait {WORKFLOW.relative_to(ROOT)}" in readme


def test_workflow_uses_what_the_chart_installs(workflow: dict[str, Any]) -> None:
    """The account, the GPU resource and toleration, and the 1-GPU semaphore of the chart's defaults."""
    values = yaml.safe_load((ROOT / "charts" / "slaprof" / "values.yaml").read_text())
    with helm_chart.Chart.load(ROOT / "charts" / "slaprof") as chart:
        rendered = chart.render({}, name="slaprof", namespace="profiling")
    texts = [text for path, text in rendered.items() if not path.endswith("NOTES.txt")]
    docs = [d for text in texts for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    semaphores = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    spec, template = workflow["spec"], workflow["spec"]["templates"][0]
    assert spec["serviceAccountName"] in accounts and spec["executor"]["serviceAccountName"] in accounts
    ref = template["synchronization"]["semaphores"][0]["configMapKeyRef"]
    assert int(semaphores[ref["name"]][ref["key"]]) >= 1
    assert template["container"]["resources"]["limits"][values["gpu"]["resourceName"]] == "1"
    assert template["tolerations"] == values["gpu"]["tolerations"]
