"""The simulated engine, started and stopped through the engine interface like a real backend:
OpenAI streaming format, usage, KV capacity on /metrics, the KV limit making requests wait,
the prefix cache, profiling endpoints, timing against the performance model, clean stop."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines import ServerOptions, get_backend
from slaprof.steps.engines.process import EngineProcess, group_alive
from slaprof.steps.measure.simengine import DEFAULT_ADMIT_TOKENS, Engine, SimRequest, build_engine, parse_args
from slaprof.steps.perf import get_estimator
from slaprof.steps.specs.gpus import get_gpu
from slaprof.steps.specs.models import load_model_info
from tests.conftest import MODELS
from tests.plugins.clock import run_on_virtual_clock

MODEL = str(MODELS / "Qwen3-0.6B")
TIME_SCALE = 50.0  # the served engine's scale; timing itself is asserted on a virtual clock
MAX_KV = 600  # tokens: two requests of 250 + 100 do not fit together


@pytest.fixture(scope="module")
def engine(tiny_tokenizer, tmp_path_factory):
    backend = get_backend(
        "simulated",
        emulate="vllm",
        gpu="h100_sxm",
        tokenizer=str(tiny_tokenizer),
        time_scale=TIME_SCALE,
        max_kv_tokens=MAX_KV,
    )
    workdir = tmp_path_factory.mktemp("simengine")
    proc = EngineProcess(
        backend, MODEL, Candidate.parse("tp1"), workdir, options=ServerOptions(profile_dir=str(workdir / "traces"))
    )
    with proc:
        proc.wait_ready(60)
        yield proc
    assert proc.pgid is not None and not group_alive(proc.pgid), "the simulated engine left a process behind"


def _estimator():
    return get_estimator(load_model_info(MODEL), get_gpu("h100_sxm"), "vllm", Candidate.parse("tp1"))


async def _stream(url: str, prompt: str, max_tokens: int, path: str = "/v1/chat/completions") -> dict:
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": prompt}]} if "chat" in path else {"prompt": prompt})
    times, chunks, usage = [], [], None
    start = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                chunks.append("[DONE]")
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]
            if data["choices"]:
                times.append(time.monotonic() - start)
                chunks.append(data)
    return {"times": times, "chunks": chunks, "usage": usage, "start": start}


def _words(n: int, tag: str) -> str:
    return tag + " " + " ".join(["garden", "river", "morning", "silver"] * (n // 4))


def test_start_readiness_metrics_and_models(engine):
    assert engine.kv_tokens() == MAX_KV  # from /metrics
    assert engine.backend.kv_tokens_from_log(engine.log_text()) == MAX_KV  # and from the start-up log
    models = json.loads(urllib.request.urlopen(engine.url + "/v1/models").read())
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert engine.version().startswith("slaprof")


def test_streaming_chat_format_and_usage(engine):
    out = asyncio.run(_stream(engine.url, _words(40, "format"), 5))
    data = [c for c in out["chunks"] if c != "[DONE]"]
    assert out["chunks"][-1] == "[DONE]"
    assert len(data) == 5 and data[0]["object"] == "chat.completion.chunk"
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert data[-1]["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 5 and out["usage"]["prompt_tokens"] > 30
    comp = asyncio.run(_stream(engine.url, _words(40, "completion"), 3, "/v1/completions"))
    assert [c["object"] for c in comp["chunks"] if c != "[DONE]"] == ["text_completion"] * 3


def test_prefix_cache_hits_a_repeated_prompt(engine):
    prompt = _words(120, "cached-prompt")
    first = asyncio.run(_stream(engine.url, prompt, 2))
    second = asyncio.run(_stream(engine.url, prompt, 2))
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 96


async def _serve_on_this_loop(engine: Engine, requests: list[tuple[float, SimRequest]]) -> list[list[float]]:
    """Submit each request at its (virtual) time; return each one's token times from time 0."""
    loop = asyncio.get_running_loop()
    runner = loop.create_task(engine.run())
    t0 = loop.time()

    async def client(at: float, req: SimRequest) -> list[float]:
        await asyncio.sleep(at)
        loop.create_task(engine.admit_later(req))
        times = []
        while (n := await req.out.get()) is not None:
            times += [loop.time() - t0] * n
        return times

    try:
        return list(await asyncio.gather(*(client(at, req) for at, req in requests)))
    finally:
        runner.cancel()


@pytest.mark.parametrize("time_scale", [1.0, 50.0])
def test_timing_follows_the_performance_model_exactly(time_scale):
    """On a clock the test controls: TTFT and every decode step are the model's, times the scale."""
    est = _estimator()
    engine = Engine(est, max_kv_tokens=10_000, time_scale=time_scale, prefix_caching=False)
    isl, osl = 200, 12
    (times,) = run_on_virtual_clock(_serve_on_this_loop(engine, [(0.0, SimRequest(isl, [], osl))]))
    assert len(times) == osl
    assert times[0] * 1e3 / time_scale == pytest.approx(float(est.prefill_ttft_ms(isl, 1)), rel=1e-9)
    gaps = [(b - a) * 1e3 / time_scale for a, b in zip(times, times[1:])]
    # after the prefill step each decode step holds the one request at its growing context
    assert gaps == pytest.approx([float(est.decode_itl_ms(1, isl + k)) for k in range(1, osl)], rel=1e-9)


def test_the_step_budget_the_engine_is_given_is_the_one_it_is_timed_with():
    # `--max-batched-tokens` (the bench's Plan.step_tokens) sets both what one step admits and how the
    # performance model chunks it; without it the step admits the default and the backend's chunk times it
    given = build_engine(parse_args(["--model", MODEL, "--max-batched-tokens", "32768"]))[0]
    assert given.max_batched_tokens == 32768 and given.est.chunk_tokens == 32768
    default = build_engine(parse_args(["--model", MODEL]))[0]
    assert default.max_batched_tokens == DEFAULT_ADMIT_TOKENS
    assert default.est.chunk_tokens == _estimator().chunk_tokens != 32768


def test_kv_limit_makes_extra_requests_wait():
    engine = Engine(_estimator(), max_kv_tokens=MAX_KV, time_scale=1.0, prefix_caching=False)
    first, second = SimRequest(250, [], 100), SimRequest(250, [], 100)
    assert first.reserve + second.reserve > MAX_KV  # the two cannot be resident together
    a, b = run_on_virtual_clock(_serve_on_this_loop(engine, [(0.0, first), (0.001, second)]))
    assert len(a) == len(b) == 100
    assert b[0] > a[-1], "the second request started before the first freed its KV cache"


def test_a_request_larger_than_the_kv_cache_is_refused(engine):
    req = urllib.request.Request(
        engine.url + "/v1/completions",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"model": MODEL, "prompt": "x", "max_tokens": MAX_KV + 1}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400


def test_profiling_endpoints_write_a_trace(engine):
    engine.start_profile()
    asyncio.run(_stream(engine.url, _words(40, "profiled"), 4))
    engine.stop_profile()
    traces = list(Path(engine.options.profile_dir).glob("*.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert len(events) >= 4 and {e["ph"] for e in events} == {"X"}


# ---------------------------------------------------------------------------
# one-session sweeps: groups, weights, per-request clocks (all on a virtual clock)
# ---------------------------------------------------------------------------
def _tagged(
    prompt: int,
    max_tokens: int,
    group: int,
    size: int,
    weight: int = 1,
    scale: float | None = None,
    gang: int | None = None,
):
    from slaprof.steps.measure.simengine import SimTag

    tag = SimTag(session="s", group=group, size=size, gang=gang, weight=weight, time_scale=scale)
    return SimRequest(prompt, [], max_tokens, tag=tag)


def test_a_weighted_request_decodes_as_that_many_requests_and_reserves_their_kv():
    est = _estimator()
    engine = Engine(est, max_kv_tokens=100_000, time_scale=1.0, prefix_caching=False)
    req = _tagged(200, 6, group=0, size=1, weight=40)
    assert req.reserve == 40 * (200 + 6)
    (times,) = run_on_virtual_clock(_serve_on_this_loop(engine, [(0.0, req)]))
    gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx([float(est.decode_itl_ms(40, 200 + k)) for k in range(1, 6)], rel=1e-9)
    assert times[0] * 1e3 == pytest.approx(float(est.prefill_ttft_ms(200, 40)), rel=1e-9)


def test_each_request_runs_on_its_own_clock_and_zero_takes_no_time():
    est = _estimator()
    engine = Engine(est, max_kv_tokens=100_000, time_scale=50.0, prefix_caching=False)
    slow, instant = _tagged(200, 4, group=0, size=1, scale=10.0), _tagged(200, 4, group=1, size=1, scale=0.0)
    a, b = run_on_virtual_clock(_serve_on_this_loop(engine, [(0.0, slow), (0.0, instant)]))
    assert a[0] * 1e3 / 10.0 == pytest.approx(float(est.prefill_ttft_ms(200, 1)), rel=1e-9)
    assert b[0] == pytest.approx(a[-1]) and b[-1] == pytest.approx(a[-1])  # after group 0, in no time


def test_groups_enter_in_order_and_whole():
    est = _estimator()
    engine = Engine(est, max_kv_tokens=100_000, time_scale=1.0, prefix_caching=False)
    later = _tagged(100, 3, group=1, size=2)
    first = _tagged(100, 3, group=0, size=1)
    straggler = _tagged(100, 3, group=1, size=2)
    # group 1's first request comes before group 0's, its second only at t=0.5 s
    one, zero, two = run_on_virtual_clock(_serve_on_this_loop(engine, [(0.0, later), (0.01, first), (0.5, straggler)]))
    assert one[0] > zero[-1]  # group 1 waited for group 0 to finish
    assert one[0] > 0.5 and one == pytest.approx(two)  # and for its whole group: one step for both
    itl = float(est.decode_itl_ms(2, 101))
    assert (one[1] - one[0]) * 1e3 == pytest.approx(itl, rel=1e-9)


def test_a_closed_loop_group_enters_with_its_first_wave_and_the_next_group_waits_for_all_of_it():
    est = _estimator()
    engine = Engine(est, max_kv_tokens=100_000, time_scale=1.0, prefix_caching=False)
    wave = [_tagged(100, 3, group=0, size=3, gang=2) for _ in range(2)]
    late = _tagged(100, 3, group=0, size=3, gang=2)  # a later request of the loop: enters as it comes
    after = _tagged(100, 3, group=1, size=1)
    a, b, c, d = run_on_virtual_clock(
        _serve_on_this_loop(engine, [(0.0, wave[0]), (0.0, wave[1]), (0.2, late), (0.0, after)])
    )
    assert a == pytest.approx(b) and a[-1] < 0.2  # the first wave together, without waiting for the third
    assert 0.2 < c[0] < 1.0  # the third entered as it arrived (a gang wait lasts seconds)
    assert d[0] > c[-1]  # the next group only after every request of the loop


def test_a_refused_request_still_ends_its_group():
    engine = Engine(_estimator(), max_kv_tokens=100_000, time_scale=1.0, prefix_caching=False)
    refused = _tagged(100, 3, group=0, size=2)

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        runner = loop.create_task(engine.run())
        ok, nxt = _tagged(100, 3, group=0, size=2), _tagged(100, 3, group=1, size=1)
        loop.create_task(engine.admit_later(ok))
        loop.create_task(engine.admit_later(nxt))
        await asyncio.sleep(0.2)
        engine.refused(refused.tag)  # the HTTP layer answered 400: counts as arrived and finished
        times = []
        for req in (ok, nxt):
            while await req.out.get() is not None:
                times.append(loop.time())
        runner.cancel()
        return times

    times = run_on_virtual_clock(scenario())
    assert len(times) == 6 and times[0] >= 0.2  # group 0 entered once complete; group 1 followed


def test_a_late_submission_keeps_the_modelled_ttft():
    """The simulator's own work on a request (reading it, tokenizing a long prompt) is not the modelled
    engine's: a request received at t=0 but submitted 30 ms later still sees the model's TTFT."""
    est = _estimator()
    engine = Engine(est, max_kv_tokens=100_000, time_scale=10.0, prefix_caching=False)
    ttft = float(est.prefill_ttft_ms(4000, 1)) * 10.0 / 1e3  # seconds, on the engine's clock

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        runner = loop.create_task(engine.run())
        received = loop.time()
        req = SimRequest(4000, [], 2, received=received)
        await asyncio.sleep(min(0.03, ttft / 2))  # tokenizing
        loop.create_task(engine.admit_later(req))
        await req.out.get()
        runner.cancel()
        return loop.time() - received

    assert run_on_virtual_clock(scenario()) == pytest.approx(ttft, rel=1e-9)
