"""Deployment-level selection (part of DAG step `fit`): whole deployments within the user's GPUs.

Inputs: every candidate's operating points at the SLA's ISL/OSL, as `fit` derives them from the
profiles: prefill engines under load (prompts in flight, TTFT, input tokens/s/GPU), decode
engines (concurrency, ITL, output tokens/s/GPU) and aggregated engines (concurrency, TTFT, ITL,
output tokens/s/GPU); the SLA, the GPU budget and the request rate when one is given.
Output: the best deployment of each serving mode, and which one to recommend.

Rules:
- disaggregated: x prefill engines and y decode engines, x * GPUs(prefill) + y * GPUs(decode)
  within the budget, serving min(x * prefill requests/s, y * decode requests/s). A user's TTFT is
  the prefill engine's under its load, plus the KV transfer and the decode worker's first token;
- aggregated: r replicas of one engine at one concurrency (as many as the budget holds);
- every deployment meeting both targets is ranked by output tokens/s per GPU of the whole
  deployment (then total tokens/s, fewer GPUs, smaller engines, lower ITL, lower TTFT); with a
  request rate, by the fewest GPUs that serve it (then tokens/s per GPU);
- when no deployment meets the SLA, the nearest one (smallest max(TTFT/target, ITL/target)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import DeploymentChoice, EngineGroup

ServingMode = Literal["agg", "disagg"]
MODE_NAMES = {"agg": "aggregated", "disagg": "disaggregated"}


class DecodePoint(Protocol):
    """What a decode option must carry (slaprof.steps.core.results.DecodeOption)."""

    @property
    def candidate(self) -> Candidate: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def itl_ms(self) -> float: ...
    @property
    def thpt_per_gpu(self) -> float: ...
    @property
    def interpolated(self) -> bool: ...


@dataclass(frozen=True)
class PrefillLoad:
    """A prefill engine with `concurrency` prompts in flight at the SLA's ISL."""

    candidate: Candidate
    concurrency: int
    ttft_ms: float
    thpt_per_gpu: float  # input tokens/s/GPU
    interpolated: bool = False


@dataclass(frozen=True)
class AggOption:
    """An aggregated engine at `concurrency` requests in flight at the SLA's ISL/OSL."""

    candidate: Candidate
    concurrency: int
    ttft_ms: float
    itl_ms: float
    thpt_per_gpu: float  # output tokens/s/GPU
    interpolated: bool = False


@dataclass(frozen=True)
class Workload:
    """The SLA, the budget and the fixed costs every deployment is judged by."""

    isl: int
    osl: int
    ttft_ms: float
    itl_ms: float
    gpu_budget: int
    request_rate: float | None = None
    transfer_ms: float = 0.0  # KV transfer of one prompt from a prefill to a decode worker
    first_token_steps: float = 1.5  # decode steps before a disaggregated request's first token

    def disagg_ttft(self, prefill_ttft_ms: float, decode_itl_ms: float) -> float:
        return prefill_ttft_ms + self.transfer_ms + self.first_token_steps * decode_itl_ms

    def sla_ratio(self, ttft_ms: float, itl_ms: float) -> float:
        """How far from the SLA: 1.0 or less meets both targets."""
        return max(ttft_ms / self.ttft_ms, itl_ms / self.itl_ms)


def prefill_rate(p: PrefillLoad, isl: int) -> float:
    """Requests/s one prefill engine serves at this load."""
    return p.thpt_per_gpu * p.candidate.num_gpus / isl


def decode_rate(d: DecodePoint, osl: int) -> float:
    """Requests/s one decode engine finishes at this concurrency (each request decodes `osl` tokens)."""
    return d.thpt_per_gpu * d.candidate.num_gpus / osl


def agg_rate(a: AggOption, osl: int) -> float:
    return a.thpt_per_gpu * a.candidate.num_gpus / osl


# ---------------------------------------------------------------------------
# building deployments
# ---------------------------------------------------------------------------
def _choice(
    mode: ServingMode, engines: list[EngineGroup], rate: float, ttft: float, itl: float, w: Workload, serves: bool
) -> DeploymentChoice:
    gpus = sum(e.replicas * e.candidate.num_gpus for e in engines)
    if w.request_rate and serves:
        rate = min(rate, w.request_rate)  # it serves the rate asked for; the rest is headroom
    return DeploymentChoice(
        mode=mode,
        engines=engines,
        gpus=gpus,
        request_rate=rate,
        thpt_per_gpu=rate * w.osl / gpus,
        ttft_ms=ttft,
        itl_ms=itl,
        meets_sla=ttft <= w.ttft_ms and itl <= w.itl_ms,
        serves_rate=serves,
    )


def _disagg(p: PrefillLoad, x: int, d: DecodePoint, y: int, w: Workload, serves: bool = True) -> DeploymentChoice:
    rp, rd = prefill_rate(p, w.isl), decode_rate(d, w.osl)
    engines = [
        EngineGroup(
            role="prefill",
            candidate=p.candidate,
            replicas=x,
            concurrency=p.concurrency,
            ttft_ms=p.ttft_ms,
            thpt_per_gpu=p.thpt_per_gpu,
            request_rate=rp,
            interpolated=p.interpolated,
        ),
        EngineGroup(
            role="decode",
            candidate=d.candidate,
            replicas=y,
            concurrency=d.concurrency,
            itl_ms=d.itl_ms,
            thpt_per_gpu=d.thpt_per_gpu,
            request_rate=rd,
            interpolated=d.interpolated,
        ),
    ]
    rate = min(x * rp, y * rd)
    return _choice("disagg", engines, rate, w.disagg_ttft(p.ttft_ms, d.itl_ms), d.itl_ms, w, serves)


def _agg(a: AggOption, r: int, w: Workload, serves: bool = True) -> DeploymentChoice:
    rate = agg_rate(a, w.osl)
    group = EngineGroup(
        role="agg",
        candidate=a.candidate,
        replicas=r,
        concurrency=a.concurrency,
        ttft_ms=a.ttft_ms,
        itl_ms=a.itl_ms,
        thpt_per_gpu=a.thpt_per_gpu,
        request_rate=rate,
        interpolated=a.interpolated,
    )
    return _choice("agg", [group], r * rate, a.ttft_ms, a.itl_ms, w, serves)


def _largest(o: DeploymentChoice) -> int:
    """GPUs of the deployment's largest engine: on a tie, smaller engines scale in finer steps."""
    return max(e.candidate.num_gpus for e in o.engines)


def _key(
    w: Workload, serves: bool, gpus: int, rate: float, per_gpu: float, largest: int, itl: float, ttft: float
) -> tuple[float, ...]:
    """Larger is better, among deployments that meet the SLA."""
    if w.request_rate:
        # served at all first; then the fewest GPUs; then what each GPU delivers
        return (float(serves), -gpus if serves else rate, per_gpu, -largest, -itl, -ttft)
    return (per_gpu, rate, -gpus, -largest, -itl, -ttft)


def rank_key(w: Workload) -> Callable[[DeploymentChoice], tuple[float, ...]]:
    return lambda o: _key(w, o.serves_rate, o.gpus, o.request_rate, o.thpt_per_gpu, _largest(o), o.itl_ms, o.ttft_ms)


def _counts(gp: int, gd: int, w: Workload, rp: float, rd: float) -> list[tuple[int, int, bool]]:
    """(prefill engines, decode engines, serves the rate) worth evaluating for one pair."""
    if w.request_rate:
        x, y = math.ceil(w.request_rate / rp - 1e-9), math.ceil(w.request_rate / rd - 1e-9)
        if x * gp + y * gd <= w.gpu_budget:
            return [(max(1, x), max(1, y), True)]
    out = []
    for x in range(1, (w.gpu_budget - gd) // gp + 1):
        for y in range(1, (w.gpu_budget - x * gp) // gd + 1):
            out.append((x, y, not w.request_rate))
    return out


def disagg_deployments(
    prefill: Sequence[PrefillLoad], decode: Sequence[DecodePoint], w: Workload
) -> list[DeploymentChoice]:
    """The best deployment of every (prefill candidate, decode option) pair that fits the budget.

    For a decode option, the prefill engine runs at its highest load whose TTFT still leaves the
    target met (or, when none does, at its lowest TTFT), and the engine counts are the best
    split of the budget (or, with a request rate, the fewest engines that serve it)."""
    by_cand: dict[str, list[PrefillLoad]] = {}
    for p in prefill:
        if prefill_rate(p, w.isl) > 0:
            by_cand.setdefault(p.candidate.id, []).append(p)
    out: list[DeploymentChoice] = []
    for d in decode:
        rd = decode_rate(d, w.osl)
        if rd <= 0:
            continue
        allowance = w.ttft_ms - w.transfer_ms - w.first_token_steps * d.itl_ms
        for loads in by_cand.values():
            gp, gd = loads[0].candidate.num_gpus, d.candidate.num_gpus
            if gp + gd > w.gpu_budget:
                continue
            within = [p for p in loads if p.ttft_ms <= allowance]
            p = (
                max(within, key=lambda q: prefill_rate(q, w.isl))
                if within
                else min(loads, key=lambda q: (q.ttft_ms, -q.thpt_per_gpu))
            )
            rp = prefill_rate(p, w.isl)
            largest, ttft = max(gp, gd), w.disagg_ttft(p.ttft_ms, d.itl_ms)
            # the engine counts are ranked on plain numbers; only the best becomes a DeploymentChoice
            scored = [
                (
                    _key(w, serves, x * gp + y * gd, r, r * w.osl / (x * gp + y * gd), largest, d.itl_ms, ttft),
                    x,
                    y,
                    serves,
                )
                for x, y, serves in _counts(gp, gd, w, rp, rd)
                for r in (min(x * rp, y * rd),)
            ]
            if scored:
                _, x, y, serves = max(scored, key=lambda t: t[0])
                out.append(_disagg(p, x, d, y, w, serves))
    return out


def agg_deployments(options: Sequence[AggOption], w: Workload) -> list[DeploymentChoice]:
    """Every aggregated option as a deployment: as many replicas as the budget holds (with a
    request rate, as many as serve it)."""
    out = []
    for a in options:
        gm, rate = a.candidate.num_gpus, agg_rate(a, w.osl)
        most = w.gpu_budget // gm
        if most < 1 or rate <= 0:
            continue
        if w.request_rate:
            need = max(1, math.ceil(w.request_rate / rate - 1e-9))
            out.append(_agg(a, need, w) if need <= most else _agg(a, most, w, serves=False))
        else:
            out.append(_agg(a, most, w))
    return out


def best(deployments: Sequence[DeploymentChoice], w: Workload) -> DeploymentChoice | None:
    """The highest-ranked deployment meeting the SLA, else the nearest to it."""
    if not deployments:
        return None
    meeting = [o for o in deployments if o.meets_sla]
    if meeting:
        return max(meeting, key=rank_key(w))
    return min(deployments, key=lambda o: (w.sla_ratio(o.ttft_ms, o.itl_ms), -o.thpt_per_gpu))


def choose_mode(bests: dict[str, DeploymentChoice | None], w: Workload) -> DeploymentChoice | None:
    """The recommended deployment among each mode's best (ties go to disaggregated serving, the
    graph Dynamo's planner scales)."""
    found = [o for mode in ("disagg", "agg") if (o := bests.get(mode)) is not None]
    return best(found, w) if found else None


# ---------------------------------------------------------------------------
# the lines
# ---------------------------------------------------------------------------
def deployment_line(o: DeploymentChoice, w: Workload) -> str:
    rate = f", {o.request_rate:.2f} requests/s" if w.request_rate else ""
    return f"Suggested deployment: {o.shape} on {o.gpus} GPUs ({o.thpt_per_gpu:.1f} tokens/s/GPU{rate})"


def agg_line(o: DeploymentChoice, ttft_band: str = "", itl_band: str = "") -> str:
    """The bands: each estimate's interval after its number (` [80%: 131-224]`), empty for measurements."""
    g = o.group("agg")
    assert g is not None and g.ttft_ms is not None and g.itl_ms is not None
    return (
        f"Suggested aggregated {g.candidate.label} (TTFT {g.ttft_ms:.2f} ms{ttft_band}, ITL {g.itl_ms:.2f} ms{itl_band}, "
        f"throughput {g.thpt_per_gpu:.2f} tokens/s/GPU, concurrency {g.concurrency})"
    )


def _numbers(o: DeploymentChoice) -> str:
    return f"{o.thpt_per_gpu:.1f} tokens/s/GPU, TTFT {o.ttft_ms:.1f} ms, ITL {o.itl_ms:.2f} ms"


def why_lost(loser: DeploymentChoice, winner: DeploymentChoice, w: Workload) -> str:
    """Why `loser` is not recommended, next to `winner`."""
    if not loser.meets_sla:
        missed = []
        if loser.ttft_ms > w.ttft_ms:
            missed.append(f"TTFT {loser.ttft_ms:.1f} ms misses the {w.ttft_ms:g} ms target")
        if loser.itl_ms > w.itl_ms:
            missed.append(f"ITL {loser.itl_ms:.2f} ms misses the {w.itl_ms:g} ms target")
        return " and ".join(missed)
    if not winner.meets_sla:
        return "the other mode is nearer to the SLA"
    if w.request_rate and (loser.serves_rate or winner.serves_rate) and loser.gpus != winner.gpus:
        if not loser.serves_rate:
            return f"serves {loser.request_rate:.2f} of {w.request_rate:g} requests/s within {w.gpu_budget} GPUs"
        return f"needs {loser.gpus} GPUs for {w.request_rate:g} requests/s against {winner.gpus}"
    ratio = loser.thpt_per_gpu / winner.thpt_per_gpu if winner.thpt_per_gpu else 0.0
    return f"{ratio:.2f}x the tokens/s per GPU of the {MODE_NAMES[winner.mode]} choice"


def comparison_line(winner: DeploymentChoice, other: DeploymentChoice | None, absent: str, w: Workload) -> str:
    """One line: how the best deployment of the other serving mode compares with the winner;
    `absent` says why there is none when `other` is None."""
    name = MODE_NAMES["agg" if winner.mode == "disagg" else "disagg"]
    if other is None:
        return f"Other mode: {absent}"
    if not other.meets_sla:
        return (
            f"Other mode: no {name} deployment within {w.gpu_budget} GPUs meets the SLA; the nearest, "
            f"{other.shape} on {other.gpus} GPUs, {_numbers(other)}: {why_lost(other, winner, w)}"
        )
    return (
        f"Other mode: best {name} {other.shape} on {other.gpus} GPUs, {_numbers(other)}: {why_lost(other, winner, w)}"
    )
