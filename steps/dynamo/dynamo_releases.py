"""The Dynamo releases slaprof renders for: every fact that differs between them, declared once.

A DGD the user's operator and planner cannot run is worse than none, so each supported release
line lists what its own source says (checked against the release's `ai-dynamo` wheel and its
repository tag; tests/test_dynamo_releases.py proves the planner facts with that release's own
code, tests/fixtures/dynamo-crds/ holds each line's DynamoGraphDeployment CRD):

- the DGD's apiVersion and shape (`spec.services` map, or the v1beta1 `spec.components` list);
- how the Planner starts: 0.7-0.9 `python3 -m planner_sla` with one flag per setting, 1.x
  `python3 -m dynamo.planner --config <JSON>` with its own key names;
- the Planner's image (the backend runtime image before 1.1, a `dynamo-planner` image since);
- the default image tag.

A backend's worker flags that differ between releases are the backend's own facts
(`EngineBackend.release_role_args` in steps/engines/, keyed by the release lines here).

Everything here is data; render.py asks `resolve()` for a release and applies it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from slaprof.steps.core.errors import UserError
from slaprof.steps.dynamo.argv import groups, set_flag_values

DgdShape = Literal["services", "components"]
# Where the Planner finds the profile data (the `planner-profile-data` ConfigMap) in every release.
PLANNER_DATA_DIR = "/workspace/profiling_results"
PLANNER_WORKDIR = "/workspace/components/src/dynamo/planner"
PLANNER_INTERVAL_S = 60  # seconds between the Planner's throughput adjustments, as Dynamo's examples set


class _Facts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannerFacts(_Facts):
    """How a release starts its SLA planner and names its settings."""

    module: str  # python3 -m <module>
    style: Literal["flags", "config"]  # one CLI flag per setting, or one `--config` JSON document
    # The setting names: CLI flags (style "flags") or keys of the --config JSON (style "config").
    keys: dict[str, str]
    fixed: dict[str, Any] = {}  # settings every slaprof Planner gets in this release
    image_name: str | None = None  # the Planner's own image name; None: it runs from the frontend's image


class DynamoRelease(_Facts):
    line: str  # "0.9": the major.minor these facts hold for
    version: str  # the newest patch release checked; the default image tag
    dgd_api_version: str
    dgd_shape: DgdShape
    planner: PlannerFacts
    sources: str  # where these facts come from

    def worker_image(self, backend_image: str, dynamo_image: str | None = None) -> str:
        """A backend's runtime image (steps/engines/) at this release's tag, or, given a DGDR's
        `spec.image`, that image's `<backend>-runtime` sibling (what Dynamo's profiler runs)."""
        if dynamo_image:
            runtime = backend_image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
            return rename_image(dynamo_image, runtime)
        return retag(backend_image, self.version)

    def planner_command(self) -> list[str]:
        return ["python3", "-m", self.planner.module]

    def planner_args(self, values: dict[str, Any], base_args: list[str]) -> list[str]:
        """The Planner's arguments for `values` (logical names: backend, ttft, itl, profile_results_dir,
        prefill_engine_num_gpu, decode_engine_num_gpu), keeping the base DGD's other settings; the
        environment and adjustment interval get Dynamo's example values unless the base sets them."""
        keys = self.planner.keys

        def named(d: dict[str, Any]) -> dict[str, Any]:
            return {keys.get(k, k): v for k, v in d.items()}

        defaults = named({"environment": "kubernetes", "interval": PLANNER_INTERVAL_S})
        settings = {**self.planner.fixed, **named(values)}
        if self.planner.style == "flags":
            given = {flag for flag, _ in groups(base_args) if flag}
            wanted = {**{k: v for k, v in defaults.items() if k not in given}, **settings}
            return set_flag_values(base_args, {k: _flag_text(v) for k, v in wanted.items()})
        base = _config_of(base_args)
        for logical, key in keys.items():  # another release's spelling of a key we set
            if logical != key:
                base.pop(logical, None)
        return ["--config", json.dumps({**defaults, **base, **settings}, separators=(",", ":"))]


# ---------------------------------------------------------------------------
# the releases
# ---------------------------------------------------------------------------
_FLAG_KEYS = {
    "environment": "--environment",
    "backend": "--backend",
    "ttft": "--ttft",
    "itl": "--itl",
    "interval": "--adjustment-interval",
    "profile_results_dir": "--profile-results-dir",
    "prefill_engine_num_gpu": "--prefill-engine-num-gpu",
    "decode_engine_num_gpu": "--decode-engine-num-gpu",
}
_PLANNER_SLA = PlannerFacts(module="planner_sla", style="flags", keys=_FLAG_KEYS)
_V1ALPHA1 = "nvidia.com/v1alpha1"


def _legacy(line: str, version: str, tag_commit: str) -> DynamoRelease:
    return DynamoRelease(
        line=line,
        version=version,
        dgd_api_version=_V1ALPHA1,
        dgd_shape="services",
        planner=_PLANNER_SLA,
        sources=(
            f"ai-dynamo {version} wheel (dynamo/planner/planner_sla.py, utils/planner_argparse.py, "
            f"utils/perf_interpolation.py); tag v{version} ({tag_commit[:10]}): "
            "examples/backends/*/deploy/disagg_planner.yaml and the operator's DGD CRD"
        ),
    )


RELEASES: dict[str, DynamoRelease] = {
    r.line: r
    for r in (
        _legacy("0.7", "0.7.1", "15f1a73b375eb318ff4db7ddc89fd3d1faef0fac"),
        _legacy("0.8", "0.8.1", "5ea7ff0979feb0bb44c1191ee968959b871ae2bc"),
        _legacy("0.9", "0.9.1", "ebcbd617aa4dea3bf608a8f0d25d98f013549085"),
        DynamoRelease(
            line="1.0",
            version="1.0.2",
            dgd_api_version=_V1ALPHA1,
            dgd_shape="services",
            planner=PlannerFacts(
                module="dynamo.planner",
                style="config",
                keys={"interval": "throughput_adjustment_interval"},
                fixed={"mode": "disagg"},
            ),
            sources=(
                "ai-dynamo 1.0.2 wheel (dynamo/planner/__main__.py, utils/planner_config.py, "
                "utils/perf_interpolation.py, profiler/utils/dgd_generation.py, vllm/backend_args.py); "
                "tag v1.0.2 (e3cbfde434): examples/backends/vllm/deploy/disagg*.yaml and the operator's DGD CRD"
            ),
        ),
        DynamoRelease(
            line="1.6",
            version="1.6.1",
            dgd_api_version="nvidia.com/v1beta1",
            dgd_shape="components",
            planner=PlannerFacts(
                module="dynamo.planner",
                style="config",
                keys={"ttft": "ttft_ms", "itl": "itl_ms", "interval": "throughput_adjustment_interval_seconds"},
                # SLA scaling from the mounted profile data (not the default queue thresholds, not AIC).
                fixed={"mode": "disagg", "optimization_target": "sla", "pre_deployment_sweeping_mode": "thorough"},
                image_name="dynamo-planner",
            ),
            sources=(
                "ai-dynamo 1.6.1 wheel (dynamo/planner/__main__.py, config/planner_config.py, "
                "monitoring/perf_metrics.py, profiler/utils/dgd_generation.py, profiler/utils/config.py, "
                "profiler/templates/dgd/*/disagg.yaml, vllm/backend_args.py); DGD CRD: see "
                "tests/fixtures/dynamo-crds/README.md"
            ),
        ),
    )
}
NEWEST = max(RELEASES, key=lambda line: tuple(int(p) for p in line.split(".")))

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[.-]?(?:post|rc|dev)\.?\d*)*$")


def supported() -> str:
    return ", ".join(RELEASES)


def line_of(version: str) -> str | None:
    """'0.9.1', 'v1.6.1', '1.6', '0.8.1.post3' -> '0.9' / '1.6' / '0.8'; None when it is no version."""
    m = _VERSION.match(version.strip())
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def image_tag(image: str) -> str | None:
    """The tag of an image reference (none for a digest-only or untagged reference)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def retag(image: str, tag: str) -> str:
    name = image.split("@", 1)[0]
    repo = name[: name.rfind(":")] if ":" in name.rsplit("/", 1)[-1] else name
    return f"{repo}:{tag}"


def rename_image(image: str, new_name: str) -> str:
    """Swap the last path component of an image reference, keeping registry path, tag and digest."""
    head, _, tail = image.rpartition("/")
    rest = tail[tail.find(":") :] if ":" in tail.split("@", 1)[0] else tail[tail.find("@") :] if "@" in tail else ""
    return f"{head + '/' if head else ''}{new_name}{rest}"


def get(line: str) -> DynamoRelease:
    release = RELEASES.get(line_of(line) or line)
    if release is None:
        raise UserError(f"Dynamo {line} is not supported; slaprof renders for Dynamo {supported()}")
    return release


def resolve(version: str | None, *images: str | None) -> DynamoRelease:
    """The release to render for: `version` if given, else the first image whose tag is a version
    (e.g. `--engine-image ...vllm-runtime:0.9.1`), else the newest supported."""
    if version:
        return get(version)
    for image in images:
        tag = image_tag(image) if image else None
        line = line_of(tag) if tag else None
        if line is None:
            continue
        if line not in RELEASES:
            raise UserError(
                f"image {image} is Dynamo {tag}, which slaprof does not support; pass --dynamo-version with "
                f"one of {supported()} (or an image of one of them)"
            )
        return RELEASES[line]
    return RELEASES[NEWEST]


# ---------------------------------------------------------------------------
# argument lists
# ---------------------------------------------------------------------------
def _flag_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_of(args: list[str]) -> dict[str, Any]:
    """The inline `--config` JSON of a base DGD's Planner (a file path cannot be merged: dropped)."""
    for i, token in enumerate(args):
        text = token.split("=", 1)[1] if token.startswith("--config=") else None
        if token == "--config" and i + 1 < len(args):
            text = args[i + 1]
        if text is not None:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                return {}
            return doc if isinstance(doc, dict) else {}
    return {}
