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

from steps.candidates import Candidate
from steps.engines import ServerOptions, get_backend
from steps.engines.process import EngineProcess, group_alive
from steps.gpus import get_gpu
from steps.models import load_model_info
from steps.perf import get_estimator
from tests.conftest import MODELS
from tests.plugins.tokenizer import tiny_tokenizer  # noqa: F401

MODEL = str(MODELS / "Qwen3-0.6B")
TIME_SCALE = 50.0  # a modelled TTFT of ~6 ms lasts ~300 ms: HTTP and CPU jitter stay far below 10 %
MAX_KV = 600  # tokens: two requests of 250 + 100 do not fit together


@pytest.fixture(scope="module")
def engine(tiny_tokenizer, tmp_path_factory):
    backend = get_backend("simulated", emulate="vllm", gpu="h100_sxm", tokenizer=str(tiny_tokenizer),
                          time_scale=TIME_SCALE, max_kv_tokens=MAX_KV)
    workdir = tmp_path_factory.mktemp("simengine")
    proc = EngineProcess(backend, MODEL, Candidate.parse("tp1"), workdir,
                         options=ServerOptions(profile_dir=str(workdir / "traces")))
    with proc:
        proc.wait_ready(60)
        yield proc
    assert not group_alive(proc.pgid), "the simulated engine left a process behind"


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


def test_timing_matches_the_performance_model(engine):
    est = _estimator()
    out = asyncio.run(_stream(engine.url, _words(200, "timing"), 12))
    isl = out["usage"]["prompt_tokens"]
    ttft_ms = out["times"][0] * 1e3 / TIME_SCALE
    itl_ms = (out["times"][-1] - out["times"][0]) * 1e3 / (len(out["times"]) - 1) / TIME_SCALE
    assert ttft_ms == pytest.approx(est.prefill_ttft_ms(isl, 1), rel=0.10)
    assert itl_ms == pytest.approx(est.decode_itl_ms(1, isl + 6), rel=0.10)


def test_kv_limit_makes_extra_requests_wait(engine):
    async def both():
        a = asyncio.create_task(_stream(engine.url, _words(240, "kv-a"), 10))
        await asyncio.sleep(0.05)
        b = asyncio.create_task(_stream(engine.url, _words(240, "kv-b"), 10))
        return await a, await b

    a, b = asyncio.run(both())
    a_end = a["start"] + a["times"][-1]
    b_first = b["start"] + b["times"][0]
    assert a["usage"]["prompt_tokens"] + 10 > MAX_KV / 2  # the two cannot be resident together
    assert b_first >= a_end - 0.005, "the second request started before the first freed its KV cache"
    # a request larger than the whole cache is refused, not queued forever
    req = urllib.request.Request(engine.url + "/v1/completions", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": MODEL, "prompt": "x", "max_tokens": MAX_KV + 1}).encode())
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
