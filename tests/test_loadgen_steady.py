"""Decode ITL from the steady window: requests that enter an engine over several steps make the
first steps longer (each also prefills a newcomer); only the steps with the whole batch decoding
count. On a busy 2-core machine the simulated engine took requests in over ~19 steps, which put
whole-request ITL 27% above the model while the steady window stayed within 0.1%."""

from __future__ import annotations

import json
import statistics

import pytest

from slaprof.steps.measure.loadgen import MIN_STEADY_GAPS, RequestRecord, _record, steady_itl_ms

STEP_MS, PREFILL_MS = 2.0, 2.4  # a decode step, and what a step that also prefills adds


def _engine_run(arrival_steps: list[int], osl: int) -> list[RequestRecord]:
    """Records of requests decoding in one engine whose request i joins at step arrival_steps[i]."""
    last = max(arrival_steps) + osl
    joins = set(arrival_steps)
    clock, ends = 0.0, []
    for step in range(last + 1):
        clock += STEP_MS + (PREFILL_MS if step in joins else 0.0)
        ends.append(clock)  # tokens of step `step` arrive at ends[step]
    records = []
    for i, join in enumerate(arrival_steps):
        times = ends[join : join + osl]
        gaps = [b - a for a, b in zip(times, times[1:])]
        records.append(
            RequestRecord(
                phase="profiling",
                session=i,
                ttft_ms=times[0],
                start_ns=1_000_000_000,
                itl_ms=sum(gaps) / len(gaps),
                chunk_gaps_ms=gaps,
            )
        )
    return records


def test_steady_window_excludes_the_ramp_up_steps():
    records = _engine_run(list(range(10)), osl=30)  # one newcomer per step for 10 steps
    itls = [r.itl_ms for r in records if r.itl_ms is not None]
    whole = sum(itls) / len(itls)
    assert whole > STEP_MS * 1.15  # the ramp inflates whole-request ITL
    assert steady_itl_ms(records) == pytest.approx(STEP_MS)


def _seen(token_times: list[float], streams: int = 4) -> list[RequestRecord]:
    gaps = [b - a for a, b in zip(token_times, token_times[1:])]
    return [
        RequestRecord(phase="profiling", session=i, ttft_ms=token_times[0], start_ns=10**9, chunk_gaps_ms=gaps)
        for i in range(streams)
    ]


def test_the_robust_itl_ignores_a_stall_at_the_edge_of_the_window():
    """A busy CPU holds the first tokens back 3 ms (1.5 steps); the one after comes in a burst, the
    rest on schedule. The window then starts late and is short of a step: the mean drops 14%; the
    robust estimate (median slope over token pairs) is still the step."""
    on_time = [k * STEP_MS for k in range(12)]
    records = _seen([3.0, 3.01, *on_time[2:]])
    mean = steady_itl_ms(records)
    assert mean is not None
    assert mean == pytest.approx((on_time[-1] - 3.0) / 11) and mean < STEP_MS * 0.9
    assert steady_itl_ms(records, robust=True) == pytest.approx(STEP_MS)


def test_the_robust_itl_holds_when_tokens_are_read_in_pairs():
    """A client that reads every other step sees gaps of 0 and 2 steps (a median gap of 0); pairs of
    tokens further apart still give the step."""
    read = [(k // 2) * 2 * STEP_MS + STEP_MS for k in range(12)]  # tokens 2j and 2j+1 read together
    assert statistics.median(b - a for a, b in zip(read, read[1:])) == 0.0
    assert steady_itl_ms(_seen(read), robust=True) == pytest.approx(STEP_MS, rel=0.1)


def test_no_steady_window_falls_back_to_none():
    assert steady_itl_ms(_engine_run([0, 40], osl=30)) is None  # they never decode together
    assert steady_itl_ms(_engine_run([0], osl=MIN_STEADY_GAPS - 1)) is None  # too few gaps
    assert steady_itl_ms([RequestRecord(phase="profiling", session=0, ttft_ms=5.0, itl_ms=2.0)]) is None


def test_records_carry_aiperfs_inter_chunk_latencies():
    line = json.dumps(
        {
            "metadata": {
                "session_num": 3,
                "benchmark_phase": "profiling",
                "request_start_ns": 2_000_000_000,
                "request_end_ns": 2_010_000_000,
            },
            "metrics": {
                "time_to_first_token": {"value": 4.0, "unit": "ms"},
                "inter_token_latency": {"value": 2.5, "unit": "ms"},
                "inter_chunk_latency": {"value": [2.0, 3.0], "unit": "ms"},
            },
        }
    )
    record = _record(line)
    assert record is not None and record.chunk_gaps_ms == [2.0, 3.0]
    assert record.token_times_ns() == [2_004_000_000, 2_006_000_000, 2_009_000_000]
    in_us = json.loads(line)
    in_us["metrics"]["inter_chunk_latency"] = {"value": [2000, 3000], "unit": "us"}
    assert _record(json.dumps(in_us)).chunk_gaps_ms == [2.0, 3.0]
