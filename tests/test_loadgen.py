"""AIPerf command building, and real AIPerf runs that fail: an engine that is not there, and an
engine that refuses every request. A failed run must never come back as a measurement."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.engines import get_backend
from slaprof.steps.engines.process import EngineProcess, free_port
from slaprof.steps.measure.loadgen import LoadSpec, TraceEntry, build_command, classify_error_text, run_load
from tests.conftest import MODELS


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_build_command_synthetic_and_trace(tmp_path):
    spec = LoadSpec(
        label="p",
        url="http://127.0.0.1:8000",
        model="Qwen/Qwen3-8B",
        tokenizer="/tok",
        isl=3000,
        osl=500,
        concurrency=8,
        request_count=8,
        warmup_request_count=3,
        random_seed=7,
    )
    args = build_command(spec, tmp_path)
    assert args[0] == "profile" and "--streaming" in args
    assert _flag(args, "--endpoint-type") == "chat" and _flag(args, "--tokenizer") == "/tok"
    assert (
        _flag(args, "--synthetic-input-tokens-mean") == "3000" and _flag(args, "--synthetic-input-tokens-stddev") == "0"
    )
    assert _flag(args, "--output-tokens-mean") == "500" and _flag(args, "--output-tokens-stddev") == "0"
    assert _flag(args, "--concurrency") == "8" and _flag(args, "--request-count") == "8"
    assert _flag(args, "--warmup-request-count") == "3" and _flag(args, "--random-seed") == "7"
    assert _flag(args, "--ui") == "none" and "--no-server-metrics" in args and "--no-gpu-telemetry" in args
    extras = [args[i + 1] for i, a in enumerate(args) if a == "--extra-inputs"]
    assert "ignore_eos:true" in extras and "min_tokens:500" in extras

    trace = LoadSpec(
        label="t",
        url="u",
        model="m",
        tokenizer="/tok",
        concurrency=2,
        request_count=2,
        trace=[TraceEntry(text_input="hello", output_length=4)] * 2,
    )
    args = build_command(trace, tmp_path, tmp_path / "trace.jsonl")
    assert _flag(args, "--custom-dataset-type") == "mooncake_trace"
    assert _flag(args, "--input-file") == str(tmp_path / "trace.jsonl")
    assert "--synthetic-input-tokens-mean" not in args


def test_classify_error_text():
    assert classify_error_text("ClientConnectorError: Cannot connect to host") == "engine_unreachable"
    assert classify_error_text("asyncio.TimeoutError: request timed out") == "timeout"
    assert classify_error_text("HTTP 400 Bad Request") == "errors"


def test_failed_runs_are_classified_not_measured(tmp_path, tiny_tokenizer):
    """Both real AIPerf runs at once (each has ~10 s of start-up): no engine, and a refusing engine."""
    tok = str(tiny_tokenizer)
    # an engine whose KV cache is smaller than any request: it answers HTTP 400 to each one
    backend = get_backend("simulated", tokenizer=tok, max_kv_tokens=64)
    engine = EngineProcess(backend, str(MODELS / "Qwen3-0.6B"), Candidate.parse("tp1"), tmp_path / "engine")
    results: dict[Any, Any] = {}
    with engine:
        engine.wait_ready(60)
        specs = {
            "unreachable": LoadSpec(
                label="unreachable",
                url=f"http://127.0.0.1:{free_port()}",
                model="m",
                tokenizer=tok,
                isl=50,
                osl=4,
                concurrency=1,
                request_count=2,
            ),
            "refused": LoadSpec(
                label="refused",
                url=engine.url,
                model=str(MODELS / "Qwen3-0.6B"),
                tokenizer=tok,
                isl=100,
                osl=8,
                concurrency=2,
                request_count=4,
            ),
        }
        threads = [
            threading.Thread(target=lambda k=k, s=s: results.__setitem__(k, run_load(s, tmp_path, 240)))
            for k, s in specs.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    down, refused = results["unreachable"], results["refused"]
    assert not down.ok and down.failure == "engine_unreachable" and down.returncode not in (0, None)
    assert "without profile_export_aiperf.json" in down.reason and "failed" in down.reason
    assert not refused.ok and refused.failure == "errors", refused
    assert "failed" in refused.reason and not refused.measured()
    assert Path(refused.artifact_dir).parent.joinpath("aiperf.log").is_file()
