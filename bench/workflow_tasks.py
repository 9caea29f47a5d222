"""What a DAG task costs as an Argo pod runs it, against the same step called in-process.

Each task of the slaprof-profile WorkflowTemplate runs `python -m hera.workflows.runner -e
slaprof.workflows.tasks:<task>` in a fresh interpreter, so every pod pays the interpreter, Hera and slaprof
imports before the step itself. This script runs plan -> bench (every candidate) -> fit -> render
both ways on the same request, on a local folder store (SLAPROF_STORE_ROOT), and prints the median
wall time per task: in-process step (baseline), runner subprocess, and their ratio; plus the bare
interpreter (`python -c pass`) as the floor. Offline method, so the step work is the estimate only.

Job: Qwen3-32B (config fixture) on h200_sxm, ISL 3000, OSL 150, TTFT 200 ms, ITL 20 ms, at most 4 GPUs.

    .venv/bin/python bench/workflow_tasks.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "tests" / "fixtures" / "models" / "Qwen3-32B"
PARAMS = {
    "model": str(MODEL),
    "gpu": "h200_sxm",
    "isl": "3000",
    "osl": "150",
    "ttft": "200",
    "itl": "20",
    "max-gpus-per-engine": "4",
}


def _runner(task: str, inputs: dict[str, str], root: Path, out: Path) -> float:
    args = out / f"{task}.json"
    args.write_text(json.dumps([{"name": k, "value": v} for k, v in inputs.items()]))
    env = {
        **os.environ,
        "SLAPROF_STORE_ROOT": str(root),
        "hera__outputs_directory": str(out / task),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(ROOT),
    }
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "hera.workflows.runner", "-e", f"slaprof.workflows.tasks:{task}", str(args)],
        env=env,
        capture_output=True,
        text=True,
        cwd=out,
    )
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"{task} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall


def run_as_pods(run: str, root: Path) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="slaprof-pods-"))
    from slaprof.workflows.params import REQUEST_PARAMS

    every_input = {"run": run, "request": "", **{p.name: "" for p in REQUEST_PARAMS}, **PARAMS}  # as Argo passes them
    times = {"plan": _runner("plan", every_input, root, out)}
    ids = json.loads((out / "plan" / "parameters" / "candidate-ids").read_text())
    times["bench (per candidate)"] = statistics.mean(
        _runner("bench", {"run": run, "candidate": cid, "gpus": "0"}, root, out) for cid in ids
    )
    times["fit"] = _runner("fit", {"run": run}, root, out)
    times["render"] = _runner("render", {"run": run}, root, out)
    return times


def run_in_process(run: str, root: Path) -> dict[str, float]:
    from slaprof.steps.core.store import Layout, open_store, write_model
    from slaprof.steps.dag import bench, fit, plan, render
    from slaprof.workflows.tasks import build_request_from_parameters

    store = open_store(str(root / run))
    times = {}
    start = time.perf_counter()
    request = build_request_from_parameters("", PARAMS)
    write_model(store, Layout.REQUEST, request)
    ids = plan.run_step(store).runnable_ids()
    times["plan"] = time.perf_counter() - start
    per = []
    for cid in ids:
        start = time.perf_counter()
        bench.run_step(store, cid)
        per.append(time.perf_counter() - start)
    times["bench (per candidate)"] = statistics.mean(per)
    start = time.perf_counter()
    fit.run_step(store)
    times["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    render.run_step(store)
    times["render"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pods: dict[str, list[float]] = {}
    inproc: dict[str, list[float]] = {}
    floor = []
    for i in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="slaprof-bench-store-"))
        for name, t in run_in_process(f"inproc-{i}", root).items():
            inproc.setdefault(name, []).append(t)
        for name, t in run_as_pods(f"pods-{i}", root).items():
            pods.setdefault(name, []).append(t)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        floor.append(time.perf_counter() - start)
    print(f"runs: {args.runs}; medians in seconds; bare interpreter: {statistics.median(floor):.3f} s")
    print(f"{'task':<24}{'in-process':>12}{'runner pod':>12}{'ratio':>8}{'overhead':>10}")
    for name in pods:
        a, b = statistics.median(inproc[name]), statistics.median(pods[name])
        print(f"{name:<24}{a:>12.3f}{b:>12.3f}{b / max(a, 1e-9):>8.0f}{b - a:>10.2f}")
    # the in-process column pays each import once, in its first run; later runs are pure step time


if __name__ == "__main__":
    main()
