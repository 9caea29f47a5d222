"""Strict offline validation of rendered DynamoGraphDeployments against each Dynamo release's own CRD.

The CRDs are vendored in tests/fixtures/dynamo-crds/<release line>/ (see the README there for their
sources). The schema of the version a manifest names (`nvidia.com/v1alpha1` or `v1beta1`) is made
strict as for Argo (tests/plugins/argo_schema.py): unknown keys fail, int-or-string fields take either.

Use:
    from tests.plugins.dynamo_crd import assert_valid_dgd, dgd_errors
    assert_valid_dgd(doc, "0.9")      # raises AssertionError listing every problem
    dgd_errors(doc, "1.6") -> list[str]
Any rendered DGD can be checked this way, whatever its shape or serving mode.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.plugins.argo_schema import _where as where
from tests.plugins.argo_schema import strict_schema

CRD_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "dynamo-crds"
DGD_CRD_FILE = "nvidia.com_dynamographdeployments.yaml"
GROUP = "nvidia.com"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def vendored_lines() -> list[str]:
    """Release lines with a vendored DGD CRD."""
    return sorted(p.name for p in CRD_ROOT.iterdir() if (p / DGD_CRD_FILE).is_file())


@cache
def served_versions(line: str) -> dict[str, dict[str, Any]]:
    """{version name: raw openAPIV3Schema} of every version the release's CRD serves."""
    path = CRD_ROOT / line / DGD_CRD_FILE
    if not path.is_file():
        raise ValueError(f"no vendored DGD CRD for Dynamo {line}; vendored: {', '.join(vendored_lines())}")
    crd = yaml.load(path.read_text(), Loader=_Loader)
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v.get("served", True)}


@cache
def _validator(line: str, version: str) -> Any:
    from jsonschema import Draft7Validator

    schema = strict_schema(copy.deepcopy(served_versions(line)[version]))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def dgd_errors(doc: dict[str, Any], line: str) -> list[str]:
    """Every schema violation of one DGD against Dynamo `line`'s CRD (unknown keys included)."""
    if doc.get("kind") != "DynamoGraphDeployment":
        return [f"kind is {doc.get('kind')!r}, expected 'DynamoGraphDeployment'"]
    group, _, version = str(doc.get("apiVersion", "")).partition("/")
    served = served_versions(line)
    if group != GROUP or version not in served:
        return [f"apiVersion {doc.get('apiVersion')!r} is not served by Dynamo {line} (serves {', '.join(served)})"]
    errors = []
    for err in sorted(_validator(line, version).iter_errors(doc), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in known)
            errors.append(f"{where(err.absolute_path)}: unexpected key(s) {', '.join(extra)}")
        else:
            errors.append(f"{where(err.absolute_path)}: {err.message}")
    return errors


def assert_valid_dgd(doc: dict[str, Any], line: str) -> None:
    errors = dgd_errors(doc, line)
    name = (doc.get("metadata") or {}).get("name")
    assert not errors, f"DGD {name} violates Dynamo {line}'s CRD schema:\n  " + "\n  ".join(errors)
