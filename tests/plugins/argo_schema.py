"""Strict offline validation of Argo manifests against the Argo Workflows v4.1.2 full CRDs.

The CRDs live in ../shared/argo-crds/. Each CRD's `openAPIV3Schema` is made strict before use:
`x-kubernetes-int-or-string` becomes `anyOf: [integer, string]`, the other `x-kubernetes-*`
keys are dropped, and every object schema that lists `properties` gets
`additionalProperties: false`, so a misspelt key fails (Hera's own models ignore unknown keys,
and the CRDs as shipped accept them). Schemas marked `x-kubernetes-preserve-unknown-fields`
stay open, as the API server keeps them.

Use:
    from tests.plugins.argo_schema import argo_errors, assert_valid_argo
    assert_valid_argo(doc)          # raises AssertionError listing every problem
    argo_errors(doc) -> list[str]   # "spec.templates[0].scrpt: unexpected key" style messages
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "argo-crds"
CRD_FILES = {
    "Workflow": "argoproj.io_workflows.yaml",
    "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml",
    "CronWorkflow": "argoproj.io_cronworkflows.yaml",
}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def strict_schema(node: Any) -> Any:
    """A copy of an openAPIV3Schema made strict (see the module docstring)."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    open_ended = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    out = {k: strict_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not open_ended and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@cache
def _validator(kind: str):
    from jsonschema import Draft7Validator

    if not CRD_DIR.is_dir():
        if os.environ.get("CI"):  # CI always has shared/ beside the checkout: never skip there
            pytest.fail(f"Argo CRDs not found at {CRD_DIR}")
        pytest.skip(f"Argo CRDs not found at {CRD_DIR}: the shared/ folder is missing from this checkout")
    if kind not in CRD_FILES:
        raise ValueError(f"no CRD for kind {kind!r}; known: {', '.join(CRD_FILES)}")
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=_Loader)
    schema = strict_schema(copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def argo_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one Argo manifest (Workflow, WorkflowTemplate, CronWorkflow)."""
    kind = doc.get("kind")
    if doc.get("apiVersion") != "argoproj.io/v1alpha1":
        return [f"apiVersion is {doc.get('apiVersion')!r}, expected 'argoproj.io/v1alpha1'"]
    validator = _validator(str(kind))
    errors = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in known)
            errors.append(f"{_where(err.absolute_path)}: unexpected key(s) {', '.join(extra)}")
        else:
            errors.append(f"{_where(err.absolute_path)}: {err.message}")
    return errors


def assert_valid_argo(doc: dict[str, Any]) -> None:
    errors = argo_errors(doc)
    name = (doc.get("metadata") or {}).get("name") or (doc.get("metadata") or {}).get("generateName")
    assert not errors, f"{doc.get('kind')} {name} violates the Argo v4.1.2 CRD schema:\n  " + "\n  ".join(errors)
