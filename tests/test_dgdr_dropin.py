"""slaprof's image as a DGDR's profiler image: the operator's Job contract, met and checked.

The profiling container is started exactly as the operator starts it (command, arguments, the
DGDR_* environment, /data as the output volume), from the shims the image puts on PYTHONPATH.
What the operator then reads is checked the way it reads it: the output-copier sidecar's `grep`
of profiler_status.yaml, the `dgdr-output-<name>` ConfigMap it writes (stored in the Kubernetes
API emulator and read back with the official client), and the DGD plus ConfigMaps parsed out of
the result file (the operator keeps the ConfigMaps in a DGDR annotation of at most 250,000 bytes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MODELS, ROOT
from tests.plugins.dynamo_crd import assert_valid_dgd

SHIMS = ROOT / "images" / "slaprof" / "dgdr"
MAX_ANNOTATION_SIZE = 250_000  # the operator's limit for the ConfigMaps it keeps beside the DGD
DGDR = {"DGDR_NAME": "qwen-sla", "DGDR_NAMESPACE": "serving", "DGDR_UID": "0b7a-42"}


def _profiler_container(command: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The operator's `profiler` container: `python -m <module> <args>` with the DGDR environment."""
    env = {**os.environ, **DGDR, "PYTHONPATH": str(SHIMS)}
    return subprocess.run(
        [sys.executable, *command[1:], *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _sidecar_field(status_text: str, field: str) -> str:
    """`grep "^field:" | awk '{print $2}' | tr -d '"' | tr -d "'"`, as the output-copier reads it."""
    line = next((ln for ln in status_text.splitlines() if ln.startswith(f"{field}:")), "")
    parts = line.split()
    return parts[1].replace('"', "").replace("'", "") if len(parts) > 1 else ""


def _operator_reads(cluster, result_text: str, status_text: str, result_key: str) -> tuple[dict, list[dict]]:
    """Store the sidecar's ConfigMap in the API server and read it back as the controller does."""
    from kubernetes import client

    name = f"dgdr-output-{DGDR['DGDR_NAME']}"
    body: Any = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": DGDR["DGDR_NAMESPACE"]},
        "data": {
            "phase": _sidecar_field(status_text, "phase"),
            "profiler_status": _sidecar_field(status_text, "status"),
            result_key: result_text,
            "profiler_status.yaml": status_text,
        },
    }
    api = client.CoreV1Api(cluster.api_client())
    api.create_namespaced_config_map(DGDR["DGDR_NAMESPACE"], body)
    stored = api.read_namespaced_config_map(name, DGDR["DGDR_NAMESPACE"]).data
    assert stored["profiler_status"] == "success"
    docs = [d for d in yaml.safe_load_all(stored[result_key]) if d]
    (dgd,) = [d for d in docs if d.get("kind") == "DynamoGraphDeployment"]
    others = [d for d in docs if d.get("kind") != "DynamoGraphDeployment"]
    kept = "\n---\n".join(yaml.safe_dump(d) for d in others)
    assert len(kept.encode()) <= MAX_ANNOTATION_SIZE
    return dgd, others


def test_dynamo_1x_operator_contract(tmp_path, cluster):
    spec = {
        "model": str(MODELS / "Qwen3-32B"),
        "backend": "vllm",
        "image": "ghcr.io/slaprof/slaprof:0.1.0",  # this image: not a Dynamo image
        "workload": {"isl": 3000, "osl": 150},
        "sla": {"ttft": 200, "itl": 20},
        "hardware": {"gpuSku": "h200_sxm", "numGpusPerNode": 8},
        "searchStrategy": "rapid",
    }
    data = tmp_path / "data"
    done = _profiler_container(
        ["python", "-m", "dynamo.profiler"], ["--config", json.dumps(spec), "--output-dir", str(data)], tmp_path
    )
    assert done.returncode == 0, done.stderr
    status = (data / "profiler_status.yaml").read_text()
    assert (_sidecar_field(status, "status"), _sidecar_field(status, "phase")) == ("success", "Done")
    assert "Suggested prefill" in yaml.safe_load(status)["message"]
    dgd, others = _operator_reads(cluster, (data / "final_config.yaml").read_text(), status, "final_config.yaml")
    assert dgd["apiVersion"] == "nvidia.com/v1beta1" and dgd["metadata"]["namespace"] == "serving"
    assert_valid_dgd(dgd, "1.6")
    assert [d["metadata"]["name"] for d in others] == [f"{dgd['metadata']['name']}-planner-profile-data"]
    images = {c["name"]: c["podTemplate"]["spec"]["containers"][0]["image"] for c in dgd["spec"]["components"]}
    assert "slaprof" not in json.dumps(images)  # spec.image (ours) is not a worker or planner image
    assert images["Planner"] == "nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1"


def test_dynamo_09_operator_contract(tmp_path, cluster):
    data = tmp_path / "data"
    config = {  # what the 0.9 operator's prepareProfilingConfig passes
        "sla": {"isl": 3000, "osl": 150, "ttft": 200, "itl": 20},
        "hardware": {"gpuType": "h200_sxm", "numGpusPerNode": 8},
        "deployment": {"namespace": "serving", "model": str(MODELS / "Qwen3-32B")},
        "engine": {"backend": "sglang"},
        "output_dir": str(data),
    }
    done = _profiler_container(
        ["python", "-m", "benchmarks.profiler.profile_sla"],
        ["--profile-config", yaml.safe_dump(config), "--enable-gpu-discovery"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    status = (data / "profiler_status.yaml").read_text()
    dgd, _ = _operator_reads(
        cluster, (data / "config_with_planner.yaml").read_text(), status, "config_with_planner.yaml"
    )
    assert dgd["apiVersion"] == "nvidia.com/v1alpha1"
    assert_valid_dgd(dgd, "0.9")
    planner = dgd["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]
    assert planner["command"] == ["python3", "-m", "planner_sla"]
    assert "--backend=sglang" in planner["args"]


def test_a_bad_request_reports_failed_to_the_operator(tmp_path):
    data = tmp_path / "data"
    done = _profiler_container(
        ["python", "-m", "dynamo.profiler"],
        ["--config", json.dumps({"backend": "vllm"}), "--output-dir", str(data)],
        tmp_path,
    )
    assert done.returncode == 2
    status = (data / "profiler_status.yaml").read_text()
    assert _sidecar_field(status, "status") == "failed"
    assert yaml.safe_load(status)["error"] == "the DGDR names no model (spec.model)"
    assert done.stderr.strip() == "slaprof: error: the DGDR names no model (spec.model)"


@pytest.mark.parametrize("module", ["dynamo.profiler", "benchmarks.profiler.profile_sla"])
def test_the_image_puts_the_shims_on_pythonpath(module):
    dockerfile = (ROOT / "images" / "slaprof" / "Dockerfile").read_text()
    assert "COPY images/slaprof/dgdr/ /opt/slaprof-dgdr/" in dockerfile
    assert "PYTHONPATH=/opt/slaprof-dgdr" in dockerfile
    path = SHIMS / module.replace(".", "/")
    assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()
