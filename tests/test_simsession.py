"""One AIPerf run for a whole simulated sweep: the trace it sends, how records become points, how each
point is checked against the model driving the simulated engine (flagged beyond 15%), failed points
kept apart from the others, and resuming from the points of an unfinished run. Records and
measurements here are constructed, so every number is known exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from slaprof.steps.core.request import build_request
from slaprof.steps.core.results import CandidateProfile, DecodePoint, FailedPoint, PrefillPoint, Provenance
from slaprof.steps.dag.bench import BenchOptions, CandidateBench, _Job
from slaprof.steps.dag.plan import make_plan
from slaprof.steps.measure.loadgen import LoadResult, RequestRecord
from slaprof.steps.measure.simcheck import TOLERANCE, check, flagged, summary
from slaprof.steps.measure.simengine import SIM_FIELD, SimTag
from slaprof.steps.measure.simsession import MEASURE_OSL, PROBE_ROUNDS, STREAMS, SessionPlan, auto_time_scale, split
from tests.conftest import MODELS


def _fake_prompt(tokens: int, tag: str) -> str:
    return f"{tokens}|{tag}"


def _tag(entry) -> SimTag:
    return SimTag.model_validate(entry.extra[SIM_FIELD])


def test_a_session_sends_each_point_as_whole_groups_of_weighted_streams():
    plan = SessionPlan("s1", _fake_prompt, streams=4)
    plan.add_prefill(isl=500, repeats=2, ranks=1, osl=2, scale=20.0)
    plan.add_decode(isl=300, concurrency=10, context=315, osl=12, scale=8.0)
    plan.add_decode(isl=300, concurrency=1, context=315, osl=12, scale=9.0)
    tags = [_tag(e) for e in plan.entries]
    groups = [t.group for t in tags]
    assert groups == sorted(groups) and set(groups) == set(range(max(groups) + 1))  # in order, none skipped
    for g, n in Counter(groups).items():
        assert all(t.size == n for t in tags if t.group == g)  # each request knows its group's size
    # an opening request, PROBE_ROUNDS zero-time probes of the latency floor, then two prefill groups
    # of one fresh prompt each
    n = 1 + PROBE_ROUNDS + 2
    assert [e.session_id for e in plan.entries[:n]] == ["p0"] * n
    assert [_tag(e).time_scale for e in plan.entries[:n]] == [0.0] * (1 + PROBE_ROUNDS) + [20.0, 20.0]
    assert [p.phase for p in plan.points[:2]] == ["probe", "prefill"]
    prompts = [e.messages[0]["content"] for e in plan.entries[n - 2 : n]]
    assert prompts[0] != prompts[1] and all(p.startswith("500|") for p in prompts)
    # decode 10: a warm-up group (1 token, no wall time), then 4 streams whose weights add up to 10
    warm, measured = plan.entries[n : n + 4], plan.entries[n + 4 : n + 8]
    assert [e.output_length for e in warm] == [1] * 4 and {_tag(e).time_scale for e in warm} == {0.0}
    assert [e.output_length for e in measured] == [12] * 4 and {_tag(e).time_scale for e in measured} == {8.0}
    assert [_tag(e).weight for e in measured] == [3, 3, 2, 2]
    # prompts of context - osl/2 tokens: the steady window decodes at the point's mean context
    assert {e.messages[0]["content"].split("|")[0] for e in measured} == {str(315 - 6)}
    # decode 1 reuses stream d0's prompt (warm from before) with weight 1
    last = plan.entries[-1]
    assert last.session_id == "d0" and _tag(last).weight == 1 and last.messages == measured[0].messages
    assert plan.conversations == 5 and plan.concurrency == 5  # every conversation in flight at once
    assert len(plan.prompts()) == 1 + PROBE_ROUNDS + 2 + 4  # opening, probes, two prefill prompts, 4 streams


def test_a_closed_loop_point_is_one_group_whose_first_wave_enters_together():
    plan = SessionPlan("s3", _fake_prompt, streams=4, load_streams=3)
    plan.add_closed_loop("agg", isl=300, concurrency=7, osl=30, rounds=3, scale=5.0)
    probe, point = plan.points
    assert (point.phase, point.concurrency, point.osl, point.context) == ("agg", 7, 30, 315)
    opening, probes, loop = (
        plan.entries[:3],
        plan.entries[3 : 3 + 3 * PROBE_ROUNDS],
        plan.entries[3 + 3 * PROBE_ROUNDS :],
    )
    # the three load streams are opened first, then probe the latency floor: one token, no wall time
    assert [e.session_id for e in opening] == ["l0", "l1", "l2"] and {_tag(e).time_scale for e in opening} == {0.0}
    assert probe.phase == "probe" and {_tag(e).time_scale for e in probes} == {0.0}
    assert [e.session_id for e in probes] == ["l0", "l1", "l2"] * PROBE_ROUNDS
    # then 3 rounds of the 3 streams in one group: 9 requests, the first 3 enter together
    tags = [_tag(e) for e in loop]
    assert len({t.group for t in tags}) == 1 and {(t.size, t.gang) for t in tags} == {(9, 3)}
    assert [e.session_id for e in loop] == ["l0", "l1", "l2"] * 3
    assert [t.weight for t in tags[:3]] == [3, 2, 2]  # weights add up to the concurrency
    assert {t.time_scale for t in tags} == {5.0} and {e.output_length for e in loop} == {30}
    assert len({e.messages[0]["content"] for e in loop}) == 9  # a fresh prompt for every request
    # the first wave is not measured; the point is complete when all 9 are back
    probed = [_record(f"l{j}", 1 + r, ttft_ms=3.0) for r in range(PROBE_ROUNDS) for j in range(3)]
    assert plan.feed([_record(f"l{j}", 0) for j in range(3)] + probed) == [probe]
    first = [_record(f"l{j}", 1 + PROBE_ROUNDS, ttft_ms=100.0, itl_ms=5.0) for j in range(3)]
    later = [
        _record(f"l{j}", t, ttft_ms=40.0, itl_ms=6.0) for t in (2 + PROBE_ROUNDS, 3 + PROBE_ROUNDS) for j in range(3)
    ]
    assert plan.feed(first) == []
    assert plan.feed(later) == [point]
    assert [r.ttft_ms for r in point.measured] == [40.0] * 6


def _record(conversation: str, turn: int, **fields) -> RequestRecord:
    return RequestRecord(phase="profiling", session=0, conversation_id=conversation, turn_index=turn, **fields)


def test_records_complete_points_and_errors_stay_with_their_point():
    plan = SessionPlan("s2", _fake_prompt, streams=2)
    plan.add_prefill(isl=500, repeats=1, ranks=1, osl=2, scale=1.0)
    plan.add_decode(isl=300, concurrency=2, context=315, osl=12, scale=1.0)
    probe, prefill, decode = plan.points
    assert plan.feed([_record("p0", 0, ttft_ms=1.0)]) == []  # the opening request is no point
    assert plan.feed([_record("p0", 1 + r, ttft_ms=2.0) for r in range(PROBE_ROUNDS)]) == [probe]
    prefill_turn = 1 + PROBE_ROUNDS
    assert plan.feed([_record("p0", prefill_turn, ttft_ms=40.0), _record("elsewhere", 0)]) == [prefill]
    assert [r.ttft_ms for r in prefill.measured] == [40.0]
    # decode: two warm-ups (turn 0 of d0, d1) then the measured requests (turn 1); one fails
    assert plan.feed([_record("d0", 0), _record("d1", 0), _record("d0", 1, itl_ms=3.0)]) == []
    assert plan.unfinished() == [decode]
    assert plan.feed([_record("d1", 1, error="HTTP 400: too long")]) == [decode]
    assert decode.errors == ["HTTP 400: too long"] and len(decode.measured) == 1
    assert plan.unfinished() == []


def test_time_scales_and_weights():
    assert auto_time_scale(2.0, 20.0) == pytest.approx(10.0)
    assert auto_time_scale(400.0, 100.0) == pytest.approx(0.25)  # a long step runs faster than real time
    assert auto_time_scale(0.0, 20.0) == 1000.0  # bounded
    assert split(2000, 8) == [250] * 8 and split(5, 3) == [2, 2, 1]


# ---------------------------------------------------------------------------
# a simulated candidate's bench, fed constructed records
# ---------------------------------------------------------------------------
REQUEST = {
    "model": str(MODELS / "Qwen3-0.6B"),
    "method": "simulate",
    "sla": {"isl": 300, "osl": 30, "ttft_ms": 200, "itl_ms": 50},
    "hardware": {"gpu": "h200_sxm", "max_gpus_per_engine": 1},
    "engine": {"max_context_length": 1024},
    "sweep": {"prefill_granularity": 2, "decode_granularity": 2},
}
KV = 10_000


class _Prompts:
    make = staticmethod(_fake_prompt)


class _Engine:
    url = "http://127.0.0.1:1"
    started_at = stopped_at = None

    def alive(self) -> bool:
        return True


class _Run:
    def __init__(self, records: list[RequestRecord]) -> None:
        self.records = records

    def new_records(self) -> list[RequestRecord]:
        out, self.records = self.records, []
        return out


def _bench(tmp_path: Path, resume: CandidateProfile | None = None, saved: list | None = None) -> CandidateBench:
    request = build_request(REQUEST)
    plan = make_plan(request)
    opts = BenchOptions(sim_max_kv_tokens=KV)
    checkpoint = saved.append if saved is not None else None
    bench = CandidateBench(request, plan, plan.runnable()[0], tmp_path, opts, None, resume, checkpoint)
    bench.engine = _Engine()  # type: ignore[assignment]
    return bench


LATENCY_FLOOR_MS = 4.0  # what HTTP and AIPerf add to every TTFT on the wall clock


def _answer(bench: CandidateBench, plan: SessionPlan, off: dict[tuple, float], failing: set[tuple]) -> list:
    """What AIPerf would record if every point took the model's time (times `off[point]`), scaled."""
    model = bench.sim_model
    records = []
    turns = Counter[str]()
    for entry in plan.entries:
        tag, conversation = _tag(entry), entry.session_id
        assert conversation is not None and tag.time_scale is not None
        turn = turns[conversation]
        turns[conversation] += 1
        point, measured = plan._turns[(conversation, turn)]
        key = (point.phase, point.isl, point.concurrency if point.phase == "decode" else None)
        if not measured or not point.counted:
            records.append(_record(conversation, turn, ttft_ms=1.0))
        elif point.phase == "probe":  # zero-time requests: the wall latency alone
            records.append(_record(conversation, turn, ttft_ms=LATENCY_FLOOR_MS))
        elif key in failing:
            records.append(_record(conversation, turn, error="HTTP 503: overloaded"))
        elif point.phase in ("prefill", "prefill_load"):
            prompts = 1 if point.phase == "prefill" else point.concurrency
            ttft = float(model.prefill_ttft_ms(point.isl, prompts)) * off.get(key, 1.0) * tag.time_scale
            records.append(_record(conversation, turn, ttft_ms=ttft + LATENCY_FLOOR_MS, start_ns=1_000_000_000))
        else:
            itl = float(model.decode_itl_ms(point.concurrency, point.context)) * off.get(key, 1.0) * tag.time_scale
            gaps = [itl] * (entry.output_length - 1)
            records.append(
                _record(conversation, turn, ttft_ms=5.0, itl_ms=itl, chunk_gaps_ms=gaps, start_ns=1_000_000_000)
            )
    return records


def test_every_point_is_checked_against_the_driving_model_and_one_far_off_is_flagged(tmp_path):
    saved: list[CandidateProfile] = []
    bench = _bench(tmp_path, saved=saved)
    plan = bench._session_plan(_Prompts(), bench._set_capacity(KV))  # type: ignore[arg-type]
    decode_keys = [("decode", p.isl, p.concurrency) for p in plan.points if p.phase == "decode"]
    perturbed = decode_keys[1]  # 25% slower than the model: a machine too busy for its time scale
    broken = decode_keys[-1]  # its requests fail: recorded apart, the other points stand
    answer = _Run(_answer(bench, plan, {perturbed: 1.25, ("prefill", 100, None): 0.9}, {broken}))
    bench._session = (plan, answer)  # type: ignore[assignment]
    bench._take_session_points()

    profile = bench.profile("ok", "")
    assert [p.isl for p in profile.prefill] == bench.prefill_isls()
    assert len(profile.decode) == len(decode_keys) - 1
    assert profile.failed_points == [
        FailedPoint(phase="decode", isl=broken[1], concurrency=broken[2], reason=profile.failed_points[0].reason)
    ]
    streams = min(broken[2], STREAMS)  # its warm-up went through, its measured requests did not
    assert f"{streams} of {2 * streams} requests failed" in profile.failed_points[0].reason
    assert "503" in profile.failed_points[0].reason
    # a check per measured point; exactly the perturbed one is beyond the tolerance
    assert len(profile.checks) == len(profile.prefill) + len(profile.decode)
    assert [(c.phase, c.isl, c.concurrency) for c in flagged(profile)] == [perturbed]
    worst = flagged(profile)[0]
    assert worst.error == pytest.approx(0.25, abs=1e-3) and worst.measured_ms == pytest.approx(
        1.25 * worst.model_ms, rel=1e-3
    )
    low = next(c for c in profile.checks if c.phase == "prefill" and c.isl == 100)
    assert low.error == pytest.approx(-0.1, abs=1e-3) and not low.flagged  # 10% off: within 15%
    assert "1 of" in summary(profile) and "ITL +25%" in summary(profile)
    # measured points are rescaled to the modelled clock, whatever scale each ran at
    assert len({c.time_scale for c in profile.checks}) > 1
    assert all(c.measured_ms == pytest.approx(c.model_ms, rel=1e-3) for c in profile.checks if abs(c.error) < 0.01)
    # the prefill engine under load (4 and 16 prompts at the SLA's ISL) is in the same session
    assert [(p.isl, p.concurrency) for p in profile.prefill_load] == [(300, 4), (300, 16)]
    # the latency floor the probes measured is out of every TTFT (else the checks above would be off)
    assert bench.latency_floor_ms == LATENCY_FLOOR_MS
    assert all(abs(c.error) < 1e-3 for c in profile.checks if c.phase == "prefill" and c.isl != 100)
    for load in profile.prefill_load:
        assert load.ttft_ms == pytest.approx(float(bench.sim_model.prefill_ttft_ms(300, load.concurrency)), rel=1e-3)
    # each point (and the failure) was handed to the checkpoint as it came
    assert len(saved) == len(profile.prefill) + len(profile.prefill_load) + len(profile.decode) + 1
    assert saved[-1].failed_points and len(saved[0].prefill) == 1


def test_flagging_is_strictly_beyond_the_tolerance():
    assert not check("decode", 100, 4, 11.4999, 10.0, 1.0).flagged
    assert check("decode", 100, 4, 11.6, 10.0, 1.0).flagged
    assert check("prefill", 100, None, 8.4, 10.0, 1.0).flagged  # too fast is as wrong as too slow
    assert TOLERANCE == 0.15


def test_a_failed_aiperf_run_of_one_point_does_not_fail_the_candidate(tmp_path):
    bench = _bench(tmp_path)
    bench.max_kv = KV
    job = _Job("decode-isl300-c4", "decode", 300, 4, 30, True, list, bench._spec)
    result = LoadResult(label=job.label, ok=False, failure="timeout", reason="4 of 4 requests failed (timeout)")
    bench._consume(job, result)  # the engine is alive: this point only
    assert bench.failed_points == [
        FailedPoint(phase="decode", isl=300, concurrency=4, reason=bench.failed_points[0].reason)
    ]
    assert "timeout" in bench.failed_points[0].reason


def _stored(prefill: list[int], decode: list[tuple[int, int]], kv: int) -> CandidateProfile:
    request = build_request(REQUEST)
    plan = make_plan(request)
    return CandidateProfile(
        candidate=plan.runnable()[0],
        status="failed",
        reason="interrupted",
        max_kv_tokens=kv,
        prefill=[PrefillPoint(isl=i, ttft_ms=1.5, thpt_per_gpu=1.0) for i in prefill],
        decode=[
            DecodePoint(isl=i, context=i + 15, concurrency=c, kv_usage=0.1, itl_ms=2.5, thpt_per_gpu=1.0)
            for i, c in decode
        ],
        failed_points=[FailedPoint(phase="decode", isl=300, concurrency=1, reason="overloaded")],
        provenance=Provenance(method="simulate", backend="vllm", request_key=plan.request_key),
    )


def test_resuming_measures_only_the_points_still_missing(tmp_path):
    fresh = _bench(tmp_path)
    grid = fresh.decode_grid(KV)
    first = grid[0]
    bench = _bench(tmp_path, resume=_stored([100], [first], KV))
    assert bench.prefill_todo() == [isl for isl in fresh.prefill_isls() if isl != 100]
    todo = bench._set_capacity(KV)
    assert todo == grid[1:]  # a failed point is measured again; a measured one is not
    assert [(p.isl, p.concurrency) for p in bench.decode] == [first] and bench.decode[0].itl_ms == 2.5
    plan = bench._session_plan(_Prompts(), todo)  # type: ignore[arg-type]
    assert {(p.isl, p.concurrency) for p in plan.points if p.phase == "decode"} == set(todo)
    assert 100 not in {p.isl for p in plan.points if p.phase == "prefill"}
    # decode points measured at another KV capacity had other concurrencies: measured again
    other = _bench(tmp_path, resume=_stored([100], [first], KV * 2))
    assert other._set_capacity(KV) == grid and other.decode == []
    assert [p.isl for p in other.prefill] == [100]


def test_streams_default_and_measured_output_length():
    assert STREAMS >= 4 and MEASURE_OSL % 2 == 0  # even: the steady window's mean context is exact


def test_the_report_and_the_run_summary_mark_flagged_and_failed_points():
    from slaprof.steps.dag.fit import fit_profiles
    from slaprof.steps.fitting.report import render_html
    from slaprof.steps.runner.local import _summary
    from tests.test_fit import make_plan_for, make_profile, make_request

    marked = make_profile("tp1")
    marked.checks = [
        check("decode", 3000, 64, 12.5, 10.0, 8.0),  # +25%: flagged
        check("prefill", 3000, None, 20.5, 20.0, 5.0),  # +2.5%: fine
    ]
    marked.failed_points = [FailedPoint(phase="decode", isl=8000, concurrency=500, reason="4 of 8 requests failed")]
    clean = make_profile("tp2")
    request = make_request(ttft_ms=500.0, itl_ms=50.0)
    html = render_html(fit_profiles(request, make_plan_for(["tp1", "tp2"]), [marked, clean]), request, {})
    section = html[html.index("Points to look at") :]
    assert "decode ISL 3000 x 64: ITL +25%" in section and "decode ISL 8000 x 500: 4 of 8 requests failed" in section
    assert "prefill ISL 3000" not in section and "tp2" not in section.split("</table>")[0]
    assert "Points to look at" not in render_html(
        fit_profiles(request, make_plan_for(["tp2"]), [clean]), request, {}
    )  # nothing to mark: no section
    line = _summary(marked)
    assert "1 point failed" in line and "1 of 2 simulated points more than 15% off" in line
    assert _summary(clean).endswith("tokens")


def test_what_a_run_resumes_from(tmp_path):
    from slaprof.steps.core.store import Layout, LocalStore, delete, write_model
    from slaprof.steps.dag.bench import resumable_profile

    store = LocalStore(tmp_path / "run")
    partial = _stored([100], [(300, 1)], KV)
    key = partial.provenance.request_key
    assert resumable_profile(store, "tp1", key) is None  # nothing yet
    write_model(store, Layout.partial("tp1"), partial)
    assert resumable_profile(store, "tp1", key) == partial
    assert resumable_profile(store, "tp1", "another-request") is None  # measured under another request
    store.put_bytes(Layout.partial("tp1"), b"{not json")
    assert resumable_profile(store, "tp1", key) is None  # unreadable: measured again
    # a failed profile keeps its points (an engine that died mid-sweep); a finished one is not resumed
    write_model(store, Layout.profile("tp1"), partial)
    assert resumable_profile(store, "tp1", key) == partial
    write_model(store, Layout.profile("tp1"), partial.model_copy(update={"status": "ok"}))
    assert resumable_profile(store, "tp1", key) is None
    delete(store, Layout.partial("tp1"))  # what the bench step does once the profile is written
    assert not (tmp_path / "run" / "partial").exists() and (tmp_path / "run" / "profiles").is_dir()


def test_force_measures_every_point_again():
    from slaprof.steps.runner.local import RunOptions, bench_overrides

    assert bench_overrides(RunOptions(out="x", bench_overrides={"time_scale": "10"})) == {"time_scale": "10"}
    assert bench_overrides(RunOptions(out="x", force=True)) == {"resume": False}
    assert bench_overrides(RunOptions(out="x")) is None
