"""Each request field is declared once (steps/core/request.py); the CLI, the workflow parameters and the
DGDR reader are generated from that declaration (steps/core/fields.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slaprof.steps.cli.main import build_parser, request_from_args
from slaprof.steps.core import fields
from slaprof.steps.core.errors import UserError
from slaprof.steps.core.fields import Exposed
from slaprof.steps.core.request import ProfileRequest, build_request, parse_request_document
from slaprof.workflows.params import REQUEST_PARAMS, parameter_values, request_overrides

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "tests" / "fixtures" / "models" / "Qwen3-32B")

# A new field, declared in one place as a contributor would add it to steps/core/request.py; the rest of
# the script only looks at what slaprof generates from it. It runs in a fresh interpreter so that
# the extended model is in place before the workflow modules are imported, as a real field would be.
NEW_FIELD = """
from typing import Annotated
from pydantic import Field
from slaprof.steps.core import request
from slaprof.steps.core.fields import Exposed

class SLA(request.SLA):
    attainment: Annotated[float, Exposed("--attainment", argo=True, profile_sla="sla.attainment",
                                         v1beta1="sla.attainment")] = Field(
        0.9, gt=0, lt=1, description="share of requests that must meet the targets")

class ProfileRequest(request.ProfileRequest):
    sla: SLA = Field(default_factory=SLA)

request.ProfileRequest = ProfileRequest
"""

PROBE = """
import contextlib, io, json, sys
import yaml
from slaprof.steps.cli.main import build_parser, main, request_from_args
from slaprof.steps.core.request import build_request, parse_request_document
from slaprof.workflows import tasks
from slaprof.workflows.profile import profile_template

model = sys.argv[1]
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    main(["profile", "--help"])
template = yaml.safe_load(profile_template().to_yaml())
plan = next(t for t in template["spec"]["templates"] if t["name"] == "plan")
v1alpha1 = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentRequest",
            "spec": {"model": model, "profilingConfig": {"config": {"sla": {"ttft": 200, "attainment": 0.95}}}}}
v1beta1 = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest",
           "spec": {"model": model, "sla": {"ttft": 200, "attainment": 0.99}}}
args = build_parser().parse_args(["profile", "--model", model, "--attainment", "0.8"])
print(json.dumps({
    "help": help_text.getvalue(),
    "parameters": template["spec"]["arguments"]["parameters"],
    "plan_inputs": [p["name"] for p in plan["inputs"]["parameters"]],
    "cli": request_from_args(args).sla.attainment,
    "argo": tasks.build_request_from_parameters("", {"model": model, "attainment": "0.7"}).sla.attainment,
    "argo_default": tasks.build_request_from_parameters("", {"model": model, "attainment": ""}).sla.attainment,
    "v1alpha1": build_request(parse_request_document(v1alpha1)).sla.attainment,
    "v1beta1": build_request(parse_request_document(v1beta1)).sla.attainment,
}))
"""


def test_a_field_declared_once_is_a_flag_a_workflow_parameter_and_a_dgdr_key():
    proc = subprocess.run(
        [sys.executable, "-c", NEW_FIELD + PROBE, MODEL], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    # slaprof profile --help: the flag, its help and the model's default
    help_lines = " ".join(seen["help"].split())
    assert "--attainment X share of requests that must meet the targets (default: 0.9)" in help_lines
    # the WorkflowTemplate: a workflow parameter with the derived description, passed on to the plan task
    param = next(p for p in seen["parameters"] if p["name"] == "attainment")
    assert param == {
        "name": "attainment",
        "value": "",
        "description": "share of requests that must meet the targets; empty = from `request`, else the default (0.9)",
    }
    assert "attainment" in seen["plan_inputs"]
    # and each way in sets the field
    assert (seen["cli"], seen["argo"], seen["argo_default"]) == (0.8, 0.7, 0.9)
    assert (seen["v1alpha1"], seen["v1beta1"]) == (0.95, 0.99)


def test_without_the_field_nothing_knows_it():
    """The probe above sees the field only because it declares it."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["profile", "--model", MODEL, "--attainment", "0.8"])
    assert "attainment" not in {p.name for p in REQUEST_PARAMS}


# ---------------------------------------------------------------------------
# what the declaration guarantees
# ---------------------------------------------------------------------------
def test_every_workflow_parameter_is_also_a_cli_flag():
    flags = {flag for f in fields.request_fields() for flag in f.exposed.flags}
    assert {f"--{p.name}" for p in REQUEST_PARAMS} <= flags
    with pytest.raises(ValueError, match="must also be a CLI flag"):
        Exposed("--num-gpus-per-node", argo="gpus-per-node")


def test_parameter_descriptions_take_the_defaults_from_the_model():
    defaults = ProfileRequest(model="m").model_dump()
    for param in REQUEST_PARAMS:
        default = fields.get_path(defaults, param.path)
        if param.name == "model":
            assert "empty =" not in param.description  # required: no default to fall back to
        elif isinstance(default, bool):
            assert param.description.endswith(f"({str(default).lower()})")
        elif default is not None:
            assert param.description.endswith(f"({default:g})" if isinstance(default, float) else f"({default})")


def test_enums_come_from_the_field_types():
    enums = {p.name: p.enum for p in REQUEST_PARAMS if p.enum}
    assert enums["backend"] == ("", "vllm", "sglang", "trtllm")
    assert enums["method"] == ("", "offline", "simulate", "online")
    assert enums["auto-apply"] == ("", "true", "false")
    assert "h200_sxm" in enums["gpu"] and enums["gpu"][0] == ""
    assert set(enums) == {"backend", "method", "serving", "gpu", "auto-apply"}


def test_gpus_per_node_has_one_name_in_every_place():
    """Dynamo's flag name stays; the workflow parameter's name is a flag too, and both set the same field."""
    long = build_parser().parse_args(["plan", "--model", MODEL, "--num-gpus-per-node", "4"])
    short = build_parser().parse_args(["plan", "--model", MODEL, "--gpus-per-node", "4"])
    assert request_from_args(long) == request_from_args(short)
    assert request_from_args(short).hardware.gpus_per_node == 4
    assert request_overrides({"gpus-per-node": "4", "min-gpus-per-engine": "2"}) == {
        "hardware": {"gpus_per_node": 4, "min_gpus_per_engine": 2}
    }


def test_workflow_parameters_round_trip_a_request():
    request = build_request(
        {"model": MODEL, "backend": "sglang", "sla": {"ttft_ms": 120.5}, "deployment": {"auto_apply": True}}
    )
    values = parameter_values(request)
    assert values["ttft"] == "120.5" and values["auto-apply"] == "true" and values["gpus-per-node"] == "8"
    assert build_request(request_overrides(values)) == request
    with pytest.raises(UserError, match="workflow parameter isl='many' must be an integer"):
        request_overrides({"isl": "many"})


def test_dgdr_spellings():
    """One reader for both DGDR versions: snake_case fallbacks, a config given as YAML text, Dynamo's `auto`
    backend and upper-case GPU SKUs."""
    config = {
        "sla": {"isl": 1000, "ttft": 300},
        "hardware": {"gpu_type": "h100_sxm", "num_gpus_per_node": 4},
        "deployment": {"model_cache": {"pvc_name": "weights", "mountPath": "/models"}},
        "engine": {"backend": "sglang"},
    }
    v1alpha1 = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeploymentRequest",
        "spec": {
            "model": MODEL,
            "backend": "auto",
            "profilingConfig": {"config": yaml.safe_dump(config)},
            "deploymentOverrides": {"name": "qwen", "workersImage": "reg/vllm:1"},
        },
    }
    data = parse_request_document(v1alpha1)
    assert data == {
        "model": MODEL,
        "backend": "sglang",  # spec.backend `auto` leaves the config's
        "sla": {"isl": 1000, "ttft_ms": 300},
        "hardware": {"gpu": "h100_sxm", "gpus_per_node": 4},
        "deployment": {
            "model_cache_pvc": "weights",
            "model_cache_mount_path": "/models",
            "name": "qwen",
            "engine_image": "reg/vllm:1",
        },
    }
    v1beta1 = {
        "apiVersion": "nvidia.com/v1beta1",
        "kind": "DynamoGraphDeploymentRequest",
        "spec": {
            "model": MODEL,
            "backend": "auto",
            "runtimeVersionOverride": "1.6",
            "hardware": {"gpuSku": "H100_SXM"},
            "workload": {"isl": 900},
        },
    }
    assert parse_request_document(v1beta1) == {
        "model": MODEL,
        "sla": {"isl": 900},
        "hardware": {"gpu": "h100_sxm"},
        "deployment": {"dynamo_version": "1.6"},
    }


def test_ai_configurator_conventions_are_the_same_from_flags_and_dgdrs():
    sla = {"ttft": 100}  # a bare profile_sla config is known by its SLA spelling
    config = {"sla": sla, "sweep": {"useAiConfigurator": True, "aicSystem": "h100_sxm"}, "deployment": {"model": MODEL}}
    from_config = parse_request_document(config)
    flags = ["--model", MODEL, "--ttft", "100", "--use-ai-configurator", "--aic-system", "h100_sxm"]
    assert (
        from_config
        == fields.cli_overrides(build_parser().parse_args(["plan", *flags]))
        == {
            "model": MODEL,
            "method": "offline",
            "sla": {"ttft_ms": 100},
            "sweep": {"estimator": "aic", "aic_system": "h100_sxm"},
            "hardware": {"gpu": "h100_sxm"},
        }
    )
    # an explicit GPU wins over the AI Configurator system; useAiConfigurator: false changes nothing
    config = {
        "sla": sla,
        "sweep": {"useAiConfigurator": False, "aicSystem": "h100_sxm"},
        "hardware": {"gpuType": "b200_sxm"},
    }
    assert parse_request_document(config) == {
        "sla": {"ttft_ms": 100},
        "sweep": {"aic_system": "h100_sxm"},
        "hardware": {"gpu": "b200_sxm"},
    }


def test_render_overrides_come_from_the_same_declaration():
    args = build_parser().parse_args(
        ["render", "--selection", "run", "--out", "-", "--name", "qwen", "--model-cache-mount-path", "/m"]
    )
    assert fields.cli_overrides(args) == {"deployment": {"name": "qwen", "model_cache_mount_path": "/m"}}
