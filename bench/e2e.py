"""Wall time of the offline main job, as a user meets it: `slaprof profile` in a fresh process.

Job: Qwen3-32B (config fixture) on h200_sxm, ISL 3000, OSL 150, TTFT 200 ms, ITL 20 ms, offline:
plan + every candidate + fit (selection, planner data, plots, report) + DGD. Each run writes a
fresh output folder, so nothing is reused. Baselines measured in the same run: the bare
interpreter (`python -c pass`) and `slaprof plan` (CLI import + plan). Target: median <= 3 s.
Also the README's quick start verbatim (`--model Qwen/Qwen3-32B`, a Hub id) on a machine without
the Hugging Face Hub, both ways: HF_HUB_OFFLINE=1, and HF_ENDPOINT at a closed local port (the
Hub is asked once, refused, and the built-in catalog answers); an empty HF cache in both.

    .venv/bin/python bench/e2e.py [--runs 5] [--breakdown]

--breakdown adds where the time goes: the runner's per-step times (from its log) and the
slowest imports (`python -X importtime`), grouped by top-level package.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "models" / "Qwen3-32B"
SLA = ["--gpu", "h200_sxm", "--isl", "3000", "--osl", "150", "--ttft", "200", "--itl", "20"]
REQUEST = ["--model", str(MODEL), *SLA]
QUICK_START = ["--model", "Qwen/Qwen3-32B", *SLA]  # the README's first command
TARGET_S = 3.0


def timed(
    cmd: list[str], check: bool = True, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if check and res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return wall, res


def measure(
    name: str, make_cmd, runs: int, env: dict[str, str] | None = None
) -> tuple[str, list[float], subprocess.CompletedProcess]:
    walls, last = [], None
    for _ in range(runs):
        wall, last = timed(make_cmd(), env=env)
        walls.append(wall)
    assert last is not None, "runs must be at least 1"
    return name, walls, last


def import_breakdown(top: int = 12) -> list[tuple[str, float]]:
    """Cumulative import time per top-level package of one offline run (self time summed)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "slaprof.steps.cli.main",
                "profile",
                *REQUEST,
                "--out",
                f"{tmp}/run",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    per_pkg: dict[str, float] = defaultdict(float)
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            per_pkg[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
    return sorted(per_pkg.items(), key=lambda kv: -kv[1])[:top]


def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true", help="per-step and per-import times")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slaprof-e2e-"))
    counter = iter(range(10_000))
    py = sys.executable
    rows = [
        measure("python -c pass (interpreter floor)", lambda: [py, "-c", "pass"], args.runs),
        measure(
            "slaprof plan (CLI import + plan)",
            lambda: [py, "-m", "slaprof.steps.cli.main", "plan", *REQUEST],
            args.runs,
        ),
        measure(
            "slaprof profile, offline (whole job)",
            lambda: [
                py,
                "-m",
                "slaprof.steps.cli.main",
                "profile",
                *REQUEST,
                "--out",
                str(tmp / f"run{next(counter)}"),
            ],
            args.runs,
        ),
    ]
    no_hub = {**os.environ, "HF_HUB_CACHE": str(tmp / "empty-hf-cache"), "HF_TOKEN": ""}
    for name, extra in (
        ("quick start, HF_HUB_OFFLINE=1", {"HF_HUB_OFFLINE": "1"}),
        ("quick start, Hub unreachable", {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}),
    ):
        rows.append(
            measure(
                name,
                lambda: [
                    py,
                    "-m",
                    "slaprof.steps.cli.main",
                    "profile",
                    *QUICK_START,
                    "--out",
                    str(tmp / f"run{next(counter)}"),
                ],
                args.runs,
                env={**no_hub, **extra},
            )
        )
    floor = statistics.median(rows[0][1])
    print(
        f"Offline main job: Qwen3-32B on h200_sxm, ISL 3000 OSL 150, TTFT 200 ms ITL 20 ms; "
        f"median of {args.runs} fresh processes\n"
    )
    print(f"| {'command':<40} | median s | min s | max s | x interpreter |")
    print(f"|{'-' * 42}|----------|-------|-------|---------------|")
    for name, walls, _ in rows:
        med = statistics.median(walls)
        print(f"| {name:<40} | {med:8.2f} | {min(walls):5.2f} | {max(walls):5.2f} | {med / floor:13.1f} |")
    for name, walls, _ in rows[2:]:
        job = statistics.median(walls)
        verdict = "PASS" if job <= TARGET_S else "MISS"
        print(f"{name}: median {job:.2f} s vs target {TARGET_S:.1f} s: {verdict} ({job / TARGET_S:.2f} of target)")
    outputs = sorted(str(p.relative_to(tmp / "run0")) for p in (tmp / "run0").rglob("*") if p.is_file())
    print(f"outputs of one run ({len(outputs)} files): {', '.join(outputs)}")
    step_line = [line for line in rows[2][2].stderr.splitlines() if "done:" in line]
    if step_line:
        print(f"runner steps (last run): {step_line[-1].split('done: ', 1)[1]}")
    if args.breakdown:
        print("\nslowest imports of one run (self time per top-level package):")
        for pkg, seconds in import_breakdown():
            print(f"  {pkg:<28} {seconds:6.3f} s")


if __name__ == "__main__":
    main()
