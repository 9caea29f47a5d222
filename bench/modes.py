"""Aggregated or disaggregated, within the GPUs the user has: slaprof's answer on five cases.

Each case runs `slaprof profile` offline in a fresh process (as a user meets it; a fresh output
folder, so nothing is reused) with both serving modes and a GPU budget, and reads its
selection.json: the best aggregated and the best disaggregated deployment (engines, GPUs,
output tokens/s per GPU of the whole deployment, TTFT, ITL), which one slaprof recommends, the
GPUs it uses and the wall time. Baselines printed beside them: the wall time of the bare
interpreter measured in the same run, and what Dynamo 1.6.1's profiler (rapid) and AI
Configurator 0.12 (`cli default`) answered for the same inputs (published in the issue that
asked for this; not re-run here: neither is installed).

    .venv/bin/python bench/modes.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
TARGET_S = 3.0


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    gpu: str
    backend: str
    isl: int
    osl: int
    ttft: float
    itl: float
    total_gpus: int
    peers: str  # what Dynamo's profiler and AI Configurator answered for the same inputs

    def argv(self, out: Path) -> list[str]:
        return [
            "profile",
            "--model",
            str(MODELS / self.model),
            "--gpu",
            self.gpu,
            "--backend",
            self.backend,
            "--isl",
            str(self.isl),
            "--osl",
            str(self.osl),
            "--ttft",
            f"{self.ttft:g}",
            "--itl",
            f"{self.itl:g}",
            "--total-gpus",
            str(self.total_gpus),
            "--out",
            str(out),
            "--progress",
            "none",
        ]


CASES = [
    Case(
        "1",
        "Qwen3-32B",
        "h200_sxm",
        "trtllm",
        3000,
        150,
        200,
        20,
        8,
        "Dynamo: 1P TP4 + 1D TP4, 152.6 (agg 138.9); AIC: agg TP8 bs20, 169.1 (disagg 152.6)",
    ),
    Case("2", "Qwen3-32B", "h100_sxm", "vllm", 4000, 500, 600, 25, 8, "Dynamo and AIC: 2P TP2 + 1D TP4, 469.1"),
    Case(
        "3",
        "Qwen3-30B-A3B",
        "h200_sxm",
        "sglang",
        2000,
        300,
        300,
        15,
        8,
        "Dynamo: crashes; AIC: 4P TP1 + 1D (attention DP4 x MoE TP4), 2722.7",
    ),
    Case(
        "4",
        "Llama-3.1-70B",
        "h100_sxm",
        "trtllm",
        5000,
        500,
        1000,
        30,
        8,
        "Dynamo and AIC: 1P TP4 + 1D TP4, 154.0 (agg 144.3)",
    ),
    Case("5", "DeepSeek-V3", "h200_sxm", "sglang", 4000, 1000, 2000, 50, 16, "not measured"),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(case: Case, out: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s, selection) of one fresh `slaprof profile` process. CPU time is what the job
    costs whatever else the machine runs; wall time is what a user waits on this machine now."""
    cpu0, start = _cpu(), time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "slaprof.steps.cli.main", *case.argv(out)], capture_output=True, text=True, cwd=ROOT
    )
    wall, cpu = time.perf_counter() - start, _cpu() - cpu0
    if res.returncode != 0:
        sys.exit(f"case {case.name} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall, cpu, json.loads((out / "selection.json").read_text())


def describe(d: dict | None) -> str:
    if d is None:
        return "none fits"
    engines = " + ".join(
        f"{e['replicas']}x{e['candidate']['kind'].upper()}{e['candidate']['size']}"
        + ("" if e["role"] == "agg" else e["role"][0].upper())
        for e in d["engines"]
    )
    sla = "" if d["meets_sla"] else ", misses SLA"
    return f"{engines}: {d['thpt_per_gpu']:.1f} ({d['ttft_ms']:.0f} ms, {d['itl_ms']:.1f} ms{sla})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs per case (the median wall time is shown)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slaprof-modes-"))
    floor = statistics.median([_timed_pass() for _ in range(3)])
    rows = []
    for case in CASES:
        walls: list[float] = []
        cpus: list[float] = []
        sel: dict = {}
        for i in range(args.runs):
            wall, cpu, sel = run_case(case, tmp / f"case{case.name}-{i}")
            walls.append(wall)
            cpus.append(cpu)
        chosen, other = sel["deployment"], sel["alternative"]
        by_mode = {d["mode"]: d for d in (chosen, other) if d is not None}
        rows.append((case, by_mode, chosen, statistics.median(walls), statistics.median(cpus)))

    print("Offline `slaprof profile`, both serving modes; tokens/s per GPU of the whole deployment (TTFT, ITL)\n")
    print(
        "| case | model, GPU, backend | ISL/OSL, TTFT/ITL | budget | best aggregated | best disaggregated "
        "| choice | GPUs | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, by_mode, chosen, wall, cpu in rows:
        print(
            f"| {case.name} | {case.model}, {case.gpu}, {case.backend} | {case.isl}/{case.osl}, "
            f"{case.ttft:g}/{case.itl:g} ms | {case.total_gpus} | {describe(by_mode.get('agg'))} | "
            f"{describe(by_mode.get('disagg'))} | {chosen['mode']} | {chosen['gpus']} | {wall:.2f} | {cpu:.2f} |"
        )
    print("\nPeers on the same inputs (from the issue; tokens/s/GPU):")
    for case, *_ in rows:
        print(f"  case {case.name}: {case.peers}")
    worst = max(wall for *_, wall, _ in rows)
    worst_cpu = max(cpu for *_, cpu in rows)
    verdict = "PASS" if worst <= TARGET_S else "MISS"
    print(
        f"\nslowest case {worst:.2f} s wall ({worst_cpu:.2f} s CPU at most) vs target {TARGET_S:.1f} s: {verdict}; "
        f"bare interpreter {floor:.2f} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    over = [case.name for case, _, chosen, *_ in rows if chosen["gpus"] > case.total_gpus]
    print(f"recommendations over budget: {', '.join(over) or 'none'}")


def _timed_pass() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
