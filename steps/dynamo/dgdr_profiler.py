"""slaprof as the profiler of a DynamoGraphDeploymentRequest: the operator's profiling Job, met as is.

The Dynamo operator starts the profiling Job's `profiler` container from the DGDR's image with a
fixed command, and an `output-copier` sidecar (kubectl) copies two files from the shared `/data`
volume into ConfigMap `dgdr-output-<name>`, from which the operator takes the DGD (and the
ConfigMaps before it) when `profiler_status.yaml` says `status: success`:

| operator | command                                      | arguments                         | result file             |
|----------|----------------------------------------------|-----------------------------------|-------------------------|
| 0.7-0.9  | python -m benchmarks.profiler.profile_sla    | --profile-config <YAML>           | config_with_planner.yaml|
| 1.x      | python -m dynamo.profiler                    | --config <spec JSON> --output-dir | final_config.yaml       |

The slaprof image provides both module names (images/slaprof/dgdr/, on PYTHONPATH) as one-line
shims into `profile_sla_main` / `dynamo_profiler_main` here. The pod has no GPUs and no engines,
so the run is slaprof's offline estimate; the DGD is rendered for the Dynamo release of the
operator's contract (0.9 for the first, the DGDR's `runtimeVersionOverride` or the newest for the
second), with `status.phase`-style progress in `profiler_status.yaml` as the 1.x sidecar relays it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from slaprof.steps.core.errors import StepFailed, UserError
from slaprof.steps.core.request import ProfileRequest, build_request, parse_request_document

STATUS_FILE = "profiler_status.yaml"
LEGACY_RESULT = "config_with_planner.yaml"  # operators 0.7-0.9
RESULT = "final_config.yaml"  # operators 1.x
LEGACY_RELEASE = "0.9"  # newest release of the `benchmarks.profiler.profile_sla` contract


def write_status(out: Path, status: str, phase: str, message: str = "", error: str = "") -> None:
    """The status file the sidecar greps (`^status:`, `^phase:`, `^message:`, `^error:`; one line each)."""
    doc = {"status": status, "phase": phase, "message": " ".join(message.split())}
    if error:
        doc["error"] = " ".join(error.split())
    (out / STATUS_FILE).write_text(yaml.safe_dump(doc, sort_keys=False, width=10**6))


def _request(data: dict[str, Any], release: str | None) -> ProfileRequest:
    data = {**data, "method": "offline"}  # no GPUs or engines in the profiling pod
    # the operator's contract is a graph with its Planner (0.9's result file is `config_with_planner`):
    # a disaggregated one, unless the request asks otherwise
    data.setdefault("serving", "disagg")
    dep = dict(data.get("deployment") or {})
    dep.pop("dynamo_image", None)  # the DGDR's image is this one (slaprof's), not a Dynamo image
    dep["auto_apply"] = False  # the operator deploys the DGD it reads back
    if os.environ.get("DGDR_NAMESPACE"):
        dep.setdefault("namespace", os.environ["DGDR_NAMESPACE"])
    if release:
        dep.setdefault("dynamo_version", release)
    data["deployment"] = dep
    if not data.get("model"):
        raise UserError("the DGDR names no model (spec.model)")
    return build_request(data)


def _writable_caches(out: Path) -> None:
    """The operator may run the pod under another uid than the image's user: keep caches writable."""
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    probe = Path(home)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        os.environ["HF_HOME"] = str(out / ".cache" / "huggingface")
        os.environ.setdefault("MPLCONFIGDIR", str(out / ".cache" / "matplotlib"))


def profile(request: ProfileRequest, out: Path, result_file: str) -> Path:
    """Run slaprof offline into `out/slaprof-run` and write the rendered manifests to `out/result_file`."""
    from slaprof.steps.runner.local import RunOptions, run_profile
    from slaprof.steps.runner.progress import make_progress

    write_status(out, "running", "SweepingPrefill", f"slaprof: estimating {request.model} on {request.backend}")
    result = run_profile(request, RunOptions(out=str(out / "slaprof-run")), make_progress("plain"))
    if not result.recommended or not result.dgd:
        why = "; ".join(result.errors) or "no candidate meets the request (see slaprof-run/report.html)"
        raise StepFailed(f"slaprof made no recommendation: {why}")
    target = out / result_file
    target.write_text((out / "slaprof-run" / "dgd.yaml").read_text())
    assert result.selection is not None
    write_status(out, "success", "Done", "; ".join(result.selection.recommendation))
    return target


def _run(out: Path, result_file: str, build: Any) -> int:
    out.mkdir(parents=True, exist_ok=True)
    _writable_caches(out)
    write_status(out, "running", "Initializing", "slaprof: reading the request")
    try:
        profile(build(), out, result_file)
    except (UserError, StepFailed) as exc:
        write_status(out, "failed", "Initializing", "slaprof could not profile the request", str(exc))
        print(f"slaprof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def profile_sla_main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.profiler.profile_sla --profile-config YAML` (operators 0.7-0.9)."""
    parser = argparse.ArgumentParser(prog="benchmarks.profiler.profile_sla (slaprof)")
    parser.add_argument("--profile-config", required=True, help="profile_sla config, YAML or JSON")
    parser.add_argument("--enable-gpu-discovery", action="store_true", help="accepted; slaprof estimates offline")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.profile_config) or {}
    out = Path(config.get("output_dir") or "profiling_results")

    def build() -> ProfileRequest:
        return _request(parse_request_document({"profilingConfig": {"config": config}}), LEGACY_RELEASE)

    return _run(out, LEGACY_RESULT, build)


def dynamo_profiler_main(argv: Sequence[str] | None = None) -> int:
    """`python -m dynamo.profiler --config SPEC --output-dir DIR` (operators 1.x, DGDR v1beta1)."""
    parser = argparse.ArgumentParser(prog="dynamo.profiler (slaprof)")
    parser.add_argument("--config", required=True, help="the DGDR spec: JSON, or a JSON/YAML file")
    parser.add_argument("--output-dir", default="profiling_results")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)

    def build() -> ProfileRequest:
        path = Path(args.config)
        try:
            spec = yaml.safe_load(path.read_text()) if len(args.config) < 4096 and path.is_file() else None
        except OSError:
            spec = None
        if spec is None:
            try:
                spec = json.loads(args.config)
            except json.JSONDecodeError as exc:
                raise UserError(f"--config is neither a file nor JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise UserError("--config must be a DGDR spec (a mapping)")
        data = parse_request_document(
            {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest", "spec": spec}
        )
        return _request(data, None)  # spec.runtimeVersionOverride is read with the rest of the spec

    return _run(out, RESULT, build)
