"""Deployment-level selection (`slaprof.steps.fitting.deployments`) on crafted operating points: the x:y split and
the serving mode with the higher SLA-meeting tokens/s per GPU win, in both directions; nothing
exceeds the GPU budget; a request rate is served with the fewest GPUs; the printed lines."""

from __future__ import annotations

import itertools
import random

import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import DecodeOption
from slaprof.steps.fitting import deployments as dep
from slaprof.steps.fitting.deployments import AggOption, PrefillLoad, Workload

ISL, OSL = 4000, 500


def load(cid: str, ttft: float, rate: float, concurrency: int = 1) -> PrefillLoad:
    """A prefill engine serving `rate` requests/s at `ttft` ms."""
    c = Candidate.parse(cid)
    return PrefillLoad(c, concurrency, ttft, rate * ISL / c.num_gpus)


def dec(cid: str, itl: float, rate: float, concurrency: int = 8) -> DecodeOption:
    """A decode engine finishing `rate` requests/s at `itl` ms."""
    c = Candidate.parse(cid)
    return DecodeOption(
        candidate=c,
        context=ISL + OSL // 2,
        concurrency=concurrency,
        kv_usage=0.5,
        itl_ms=itl,
        thpt_per_gpu=rate * OSL / c.num_gpus,
        max_kv_tokens=10**6,
    )


def agg(cid: str, ttft: float, itl: float, thpt_per_gpu: float, concurrency: int = 16) -> AggOption:
    return AggOption(Candidate.parse(f"agg-{cid}"), concurrency, ttft, itl, thpt_per_gpu)


def workload(budget: int = 8, rate: float | None = None, ttft: float = 600.0, itl: float = 25.0) -> Workload:
    return Workload(ISL, OSL, ttft, itl, budget, rate, transfer_ms=10.0, first_token_steps=1.5)


def brute_force(loads: list[PrefillLoad], decodes: list[DecodeOption], w: Workload) -> tuple[float, tuple]:
    """Every (prefill load, x, decode option, y) within the budget, judged from first principles:
    (the highest tokens/s per GPU meeting the SLA, (prefill id, x, decode id, y))."""
    isl, osl = w.isl, w.osl
    best: tuple[float, tuple] = (-1.0, ())
    for p, d in itertools.product(loads, decodes):
        gp, gd = p.candidate.num_gpus, d.candidate.num_gpus
        rp = p.thpt_per_gpu * gp / isl
        rd = d.thpt_per_gpu * gd / osl
        if p.ttft_ms + w.transfer_ms + w.first_token_steps * d.itl_ms > w.ttft_ms or d.itl_ms > w.itl_ms:
            continue
        for x in range(1, w.gpu_budget + 1):
            for y in range(1, w.gpu_budget + 1):
                gpus = x * gp + y * gd
                if gpus > w.gpu_budget:
                    continue
                per_gpu = min(x * rp, y * rd) * osl / gpus
                if per_gpu > best[0] + 1e-9:
                    best = (per_gpu, (p.candidate.id, x, d.candidate.id, y))
    return best


def shape(o) -> tuple:
    p, d = o.group("prefill"), o.group("decode")
    return (p.candidate.id, p.replicas, d.candidate.id, d.replicas)


# ---------------------------------------------------------------------------
# the x:y split
# ---------------------------------------------------------------------------
def test_prefill_heavy_split_wins_when_prefill_is_the_bottleneck():
    loads = [load("tp2", 300.0, 2.0), load("tp4", 200.0, 3.0)]
    decodes = [dec("tp4", 20.0, 4.0), dec("tp2", 24.0, 1.5)]
    w = workload()
    chosen = dep.best(dep.disagg_deployments(loads, decodes, w), w)
    assert chosen is not None and chosen.meets_sla
    # 2 x TP2 prefill (4 req/s) feed 1 x TP4 decode (4 req/s): 4 * 500 tokens/s on 8 GPUs
    assert shape(chosen) == ("tp2", 2, "tp4", 1)
    assert chosen.gpus == 8 and chosen.thpt_per_gpu == pytest.approx(250.0)
    assert chosen.thpt_per_gpu == pytest.approx(brute_force(loads, decodes, w)[0])
    assert chosen.ttft_ms == pytest.approx(300.0 + 10.0 + 1.5 * 20.0) and chosen.itl_ms == 20.0
    assert dep.deployment_line(chosen, w) == (
        "Suggested deployment: 2 x prefill TP:2 + 1 x decode TP:4 on 8 GPUs (250.0 tokens/s/GPU)"
    )


def test_decode_heavy_split_wins_when_decode_is_the_bottleneck():
    loads = [load("tp2", 300.0, 6.0)]
    decodes = [dec("tp2", 20.0, 2.0), dec("tp4", 20.0, 3.0)]
    w = workload()
    chosen = dep.best(dep.disagg_deployments(loads, decodes, w), w)
    # 1 x TP2 prefill (6 req/s) feeds 3 x TP2 decode (3 x 2 req/s)
    assert shape(chosen) == ("tp2", 1, "tp2", 3)
    assert chosen.thpt_per_gpu == pytest.approx(6.0 * OSL / 8)
    assert chosen.thpt_per_gpu == pytest.approx(brute_force(loads, decodes, w)[0])


def test_prefill_runs_at_the_highest_load_that_keeps_ttft():
    # more prompts in flight serve more requests/s but wait longer: the busiest load within the
    # target (after KV transfer and the first decode step) is the one to size with
    loads = [load("tp2", 200.0, 2.0, 1), load("tp2", 450.0, 3.0, 2), load("tp2", 700.0, 3.5, 4)]
    decodes = [dec("tp4", 20.0, 6.0)]
    w = workload()
    chosen = dep.best(dep.disagg_deployments(loads, decodes, w), w)
    assert chosen.group("prefill").concurrency == 2 and chosen.ttft_ms <= w.ttft_ms
    assert chosen.thpt_per_gpu == pytest.approx(brute_force(loads, decodes, w)[0])


def test_random_cases_match_brute_force_and_never_exceed_the_budget():
    rng = random.Random(7)
    for _ in range(60):
        budget = rng.choice([4, 8, 16])
        loads = [
            load(cid, rng.uniform(50, 700), rng.uniform(0.5, 8), conc)
            for cid in ("tp1", "tp2", "tp4", "tp8")
            for conc in (1, 2)
        ]
        decodes = [
            dec(cid, rng.uniform(5, 35), rng.uniform(0.5, 10), c) for cid in ("tp1", "tp2", "tp4") for c in (4, 32)
        ]
        aggs = [agg(cid, rng.uniform(100, 900), rng.uniform(5, 40), rng.uniform(50, 400)) for cid in ("tp2", "tp8")]
        w = workload(budget=budget)
        found = dep.disagg_deployments(loads, decodes, w) + dep.agg_deployments(aggs, w)
        assert all(o.gpus <= budget for o in found)
        best_disagg = dep.best([o for o in found if o.mode == "disagg"], w)
        truth = brute_force(loads, decodes, w)[0]
        if truth > 0:
            assert best_disagg.meets_sla and best_disagg.thpt_per_gpu == pytest.approx(truth)
        else:
            assert best_disagg is None or not best_disagg.meets_sla
        rated = workload(budget=budget, rate=rng.uniform(1, 20))
        found = dep.disagg_deployments(loads, decodes, rated) + dep.agg_deployments(aggs, rated)
        assert all(o.gpus <= budget for o in found)


# ---------------------------------------------------------------------------
# the serving mode, both directions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("agg_thpt, winner", [(300.0, "agg"), (200.0, "disagg")])
def test_the_mode_with_more_tokens_per_gpu_wins(agg_thpt, winner):
    loads = [load("tp2", 300.0, 2.0)]
    decodes = [dec("tp4", 20.0, 4.0)]  # the disaggregated best: 250 tokens/s/GPU on 8 GPUs
    aggs = [agg("tp4", 500.0, 22.0, agg_thpt), agg("tp8", 900.0, 20.0, 1000.0)]  # tp8 misses TTFT
    w = workload()
    bests = {
        "disagg": dep.best(dep.disagg_deployments(loads, decodes, w), w),
        "agg": dep.best(dep.agg_deployments(aggs, w), w),
    }
    chosen = dep.choose_mode(bests, w)
    assert chosen is not None and chosen.mode == winner and chosen.meets_sla
    loser = bests["agg" if winner == "disagg" else "disagg"]
    assert loser is not None
    assert loser.thpt_per_gpu < chosen.thpt_per_gpu
    if winner == "agg":
        # two replicas of the 4-GPU engine fill the 8 GPUs; the faster TP8 misses TTFT
        assert chosen.group("agg").candidate.id == "agg-tp4" and chosen.group("agg").replicas == 2
        assert dep.agg_line(chosen) == (
            "Suggested aggregated TP:4 (TTFT 500.00 ms, ITL 22.00 ms, throughput 300.00 tokens/s/GPU, concurrency 16)"
        )
    line = dep.comparison_line(chosen, loser, "", w)
    assert line.startswith(f"Other mode: best {dep.MODE_NAMES[loser.mode]} ")
    assert f"{loser.thpt_per_gpu / chosen.thpt_per_gpu:.2f}x the tokens/s per GPU" in line


def test_a_mode_that_misses_the_sla_loses_to_one_that_meets_it():
    w = workload()
    fast_but_late = dep.best(dep.agg_deployments([agg("tp8", 900.0, 20.0, 1000.0)], w), w)
    meets = dep.best(dep.disagg_deployments([load("tp2", 300.0, 2.0)], [dec("tp4", 20.0, 4.0)], w), w)
    chosen = dep.choose_mode({"agg": fast_but_late, "disagg": meets}, w)
    assert chosen is not None and fast_but_late is not None and chosen.mode == "disagg"
    assert "TTFT 900.0 ms misses the 600 ms target" in dep.why_lost(fast_but_late, chosen, w)


def test_nothing_meets_the_sla_gives_the_nearest():
    w = workload(ttft=100.0, itl=10.0)
    options = dep.agg_deployments([agg("tp4", 150.0, 12.0, 300.0), agg("tp8", 120.0, 11.0, 100.0)], w)
    nearest = dep.best(options, w)
    assert not nearest.meets_sla and nearest.group("agg").candidate.id == "agg-tp8"  # 1.2x vs 1.5x the SLA


# ---------------------------------------------------------------------------
# a request rate: the fewest GPUs that serve it
# ---------------------------------------------------------------------------
def test_request_rate_is_served_with_the_fewest_gpus():
    loads = [load("tp2", 300.0, 2.0), load("tp4", 200.0, 3.0)]
    decodes = [dec("tp4", 20.0, 4.0), dec("tp2", 24.0, 1.5)]
    w = workload(budget=64, rate=4.0)
    found = dep.disagg_deployments(loads, decodes, w)
    chosen = dep.best(found, w)
    assert chosen.serves_rate and chosen.request_rate >= 4.0 - 1e-9
    assert shape(chosen) == ("tp2", 2, "tp4", 1) and chosen.gpus == 8
    assert all(o.gpus >= chosen.gpus for o in found if o.serves_rate)
    # the same rate within 6 GPUs cannot be served: the best serves what it can, and says so
    small = workload(budget=6, rate=4.0)
    capped = dep.best(dep.disagg_deployments(loads, decodes, small), small)
    assert capped is not None and chosen is not None and not capped.serves_rate and capped.gpus <= 6
    assert "requests/s within 6 GPUs" in dep.why_lost(capped, chosen, small)
    # aggregated replicas: as many as the rate needs
    (a,) = dep.agg_deployments([agg("tp4", 500.0, 22.0, 250.0)], w)  # 2 req/s per engine
    assert a.group("agg").replicas == 2 and a.gpus == 8 and a.serves_rate
