"""Keep uv.lock, the one lock of every environment, and the files derived from it in step.

uv.lock (resolved by uv from pyproject.toml) pins every package of the development
virtualenv, the `aic` extra, the `dev` tools and the image build tools, with hashes. The
container images install from requirement files exported from it, never from a virtualenv:

    .venv/bin/python images/lock.py            # after editing dependencies: relock, rewrite images/*.txt
    .venv/bin/python images/lock.py --check    # exit 1 when uv.lock or an image file is stale
    .venv/bin/python images/lock.py --upgrade  # re-resolve on purpose: newest allowed versions
    python3 images/lock.py --uv-requirement    # uv's own pin and hashes (setup.sh bootstraps it)
    .venv/bin/python images/lock.py --dynamo-releases .venv/dynamo   # each locked `ai-dynamo`, one folder each

`--check` looks only at this repository's files (offline): a new release on the registry
cannot make it fail.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

IMAGES = Path(__file__).resolve().parent
ROOT = IMAGES.parent
LOCK = ROOT / "uv.lock"

HEADER = "# Exported from uv.lock by images/lock.py; do not edit by hand.\n# {what}\n"

# Each image requirement file: what it holds, and the `uv export` selection that makes it.
EXPORTS: dict[str, tuple[str, list[str]]] = {
    "requirements.txt": ("Runtime dependencies of slaprof (the step and simulated-engine images).", []),
    "requirements-aic.txt": (
        "Runtime dependencies plus the `aic` extra (AI Configurator): the step image built with it.",
        ["--extra", "aic"],
    ),
    "requirements-build.txt": ("What the images build the slaprof wheel with.", ["--only-group", "build"]),
}


def uv_binary() -> str:
    """The uv next to this interpreter (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("uv is not installed: run ./setup.sh first")
    return found


def uv(*args: str) -> str:
    done = subprocess.run([uv_binary(), *args, "--directory", str(ROOT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"uv {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def uv_requirement(lock: Path = LOCK) -> str:
    """A pip requirement line for the locked uv, with every hash the lock records for it."""
    packages = tomllib.loads(lock.read_text())["package"]
    (entry,) = [p for p in packages if p["name"] == "uv"]
    hashes = [w["hash"] for w in entry.get("wheels", [])]
    if "sdist" in entry:
        hashes.append(entry["sdist"]["hash"])
    return f"uv=={entry['version']} " + " ".join(f"--hash={h}" for h in hashes) + "\n"


def exported(selection: list[str], what: str) -> str:
    text = uv(
        "export",
        "--frozen",
        "--format",
        "requirements-txt",
        "--no-emit-project",
        "--no-header",
        "--no-annotate",
        "--no-default-groups",
        *selection,
    )
    return HEADER.format(what=what) + text


def image_files() -> dict[Path, str]:
    """Every image requirement file's wanted content."""
    return {IMAGES / name: exported(selection, what) for name, (what, selection) in EXPORTS.items()}


DYNAMO_GROUP_PREFIX = "dynamo-"


def dynamo_groups() -> list[str]:
    """The `dynamo-<major>-<minor>` dependency groups: one Dynamo release each, for the compatibility tests."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("dependency-groups", {})
    return sorted(g for g in groups if g.startswith(DYNAMO_GROUP_PREFIX))


def install_dynamo_releases(target: Path) -> list[Path]:
    """Install each dynamo group's locked, hash-checked `ai-dynamo` wheel into `target/<major.minor>`.

    The groups conflict (one `ai-dynamo` per environment), so each release gets its own folder that a
    test puts on a subprocess's path. A folder is reinstalled only when its requirement changed.
    """
    done = []
    for group in dynamo_groups():
        requirement = exported(["--only-group", group], f"The `{group}` group.")
        folder = target / group.removeprefix(DYNAMO_GROUP_PREFIX).replace("-", ".")
        stamp = folder / ".requirement.txt"
        if not (stamp.exists() and stamp.read_text() == requirement):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            req_file = folder.parent / f".{folder.name}.txt"
            req_file.write_text(requirement)
            uv(
                "pip",
                "install",
                "--quiet",
                "--python",
                sys.executable,
                "--target",
                str(folder),
                "--no-deps",
                "--require-hashes",
                "-r",
                str(req_file),
            )
            req_file.unlink()
            stamp.write_text(requirement)
        done.append(folder)
    return done


def lock_is_current() -> bool:
    """Whether uv.lock still satisfies pyproject.toml, judged offline from the repository alone."""
    done = subprocess.run(
        [uv_binary(), "lock", "--check", "--offline", "--directory", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    mode.add_argument("--upgrade", action="store_true", help="re-resolve uv.lock to the newest allowed versions")
    mode.add_argument("--uv-requirement", action="store_true", help="print uv's locked pip requirement line")
    mode.add_argument("--dynamo-releases", metavar="DIR", help="install each locked Dynamo release into DIR/<x.y>")
    args = parser.parse_args(argv)
    if args.uv_requirement:
        sys.stdout.write(uv_requirement())
        return 0
    if args.dynamo_releases:
        install_dynamo_releases(Path(args.dynamo_releases).resolve())
        return 0
    if not args.check:
        # Plain: pin what pyproject.toml added and keep every other pin; --upgrade: re-resolve all.
        uv("lock", *(["--upgrade"] if args.upgrade else []))
    if args.check and not lock_is_current():
        print("uv.lock does not match pyproject.toml: run images/lock.py --upgrade", file=sys.stderr)
        return 1
    stale = []
    for path, text in image_files().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run images/lock.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
