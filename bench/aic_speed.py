"""`slaprof profile --use-ai-configurator` against AI Configurator's own search of the same case.

Case 1 of `bench/modes.py` (Qwen3-32B on 8 H200s with TRT-LLM, ISL/OSL 3000/150, TTFT 200 ms, ITL
20 ms). Each run starts fresh processes, so every tool pays its imports and its kernel-database
load, in turn:

  slaprof      `slaprof profile --use-ai-configurator` (every candidate's offline surfaces from
               AI Configurator, then the fit, the deployment and the report with its plots)
  aic-cli      `aiconfigurator cli default` (its own agg-vs-disagg search), the baseline
  aic-api      `aiconfigurator.cli.cli_default(...)` in Python, the same search without the CLI

and prints the median wall and CPU time of each (CPU time is what a run costs whatever else the
machine runs; wall time is what a user waits on it now) and each tool's best aggregated answer.

    .venv/bin/python bench/aic_speed.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.modes import CASES, Case, describe  # noqa: E402

HF_ID = "Qwen/Qwen3-32B"  # AI Configurator's own name for the fixture model of case 1

_API = """
import json, logging, sys
logging.disable(logging.WARNING)
from aiconfigurator.cli import cli_default
c = json.loads(sys.argv[1])
r = cli_default(model_path=c["hf_id"], total_gpus=c["gpus"], system=c["gpu"], backend=c["backend"],
                isl=c["isl"], osl=c["osl"], ttft=c["ttft"], tpot=c["itl"])
lat = r.best_latencies.get("agg", {})
print(json.dumps({"agg": r.best_throughputs.get("agg"), "ttft": lat.get("ttft"), "itl": lat.get("tpot"),
                  "chosen": r.chosen_exp}))
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    cpu0, start = _cpu(), time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu0
    if res.returncode != 0:
        sys.exit(f"{argv[0]} {' '.join(argv[1:3])} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall, cpu, res.stdout


def slaprof(case: Case, out: Path) -> tuple[float, float, str]:
    argv = [
        sys.executable,
        "-m",
        "slaprof.steps.cli.main",
        *case.argv(out),
        "--use-ai-configurator",
        "--aic-hf-id",
        HF_ID,
    ]
    wall, cpu, _ = _timed(argv, ROOT)
    sel = json.loads((out / "selection.json").read_text())
    best = {d["mode"]: d for d in (sel["deployment"], sel["alternative"]) if d is not None}
    return wall, cpu, f"agg {describe(best.get('agg'))}; chosen {sel['deployment']['mode']}"


def aic_cli(case: Case, out: Path) -> tuple[float, float, str]:
    exe = Path(sys.executable).with_name("aiconfigurator")
    argv = [str(exe), "cli", "default", "--model", HF_ID, "--system", case.gpu, "--backend", case.backend]
    argv += ["--total-gpus", str(case.total_gpus), "--isl", str(case.isl), "--osl", str(case.osl)]
    argv += ["--ttft", f"{case.ttft:g}", "--tpot", f"{case.itl:g}"]
    out.mkdir(parents=True)
    wall, cpu, stdout = _timed(argv, out)
    best = next((line.strip() for line in stdout.splitlines() if "Best Experiment Chosen" in line), "?")
    return wall, cpu, best


def aic_api(case: Case, out: Path) -> tuple[float, float, str]:
    spec = {"hf_id": HF_ID, "gpus": case.total_gpus, "gpu": case.gpu, "backend": case.backend}
    spec |= {"isl": case.isl, "osl": case.osl, "ttft": case.ttft, "itl": case.itl}
    out.mkdir(parents=True)
    wall, cpu, stdout = _timed([sys.executable, "-c", _API, json.dumps(spec)], out)
    r = json.loads(stdout.strip().splitlines()[-1])
    return wall, cpu, f"agg {r['agg']:.1f} ({r['ttft']:.0f} ms, {r['itl']:.1f} ms); chosen {r['chosen']}"


TOOLS = {"slaprof": slaprof, "aic-cli": aic_cli, "aic-api": aic_api}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool, interleaved (medians shown)")
    args = parser.parse_args()
    case = CASES[0]
    tmp = Path(tempfile.mkdtemp(prefix="slaprof-aic-speed-"))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in TOOLS}
    answers: dict[str, str] = {}
    try:
        for i in range(args.runs):  # interleaved, so a burst of load on the machine hits every tool
            for name, tool in TOOLS.items():
                wall, cpu, answers[name] = tool(case, tmp / f"{name}-{i}")
                times[name].append((wall, cpu))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base_wall = statistics.median(w for w, _ in times["aic-cli"])
    base_cpu = statistics.median(c for _, c in times["aic-cli"])
    print(
        f"Case {case.name}: {case.model}, {case.gpu}, {case.backend}, ISL/OSL {case.isl}/{case.osl}, "
        f"TTFT/ITL {case.ttft:g}/{case.itl:g} ms, {case.total_gpus} GPUs; medians of {args.runs} fresh runs\n"
    )
    print("| tool | wall s | CPU s | wall vs aic-cli | best aggregated (tokens/s/GPU, TTFT, ITL) |")
    print("|---|---|---|---|---|")
    for name in TOOLS:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / base_wall:.2f}x | {answers[name]} |")
    slaprof_wall = statistics.median(w for w, _ in times["slaprof"])
    slaprof_cpu = statistics.median(c for _, c in times["slaprof"])
    verdict = "PASS" if slaprof_wall <= base_wall and slaprof_cpu <= base_cpu else "MISS"
    print(
        f"\nslaprof vs AI Configurator's own search: {slaprof_wall:.1f} vs {base_wall:.1f} s wall, "
        f"{slaprof_cpu:.1f} vs {base_cpu:.1f} s CPU: {verdict}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
