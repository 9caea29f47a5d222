"""The local runner's parts: resume rules, parallelism defaults, GPU queueing, progress output."""

from __future__ import annotations

import io

import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import CandidateProfile, DecodePoint, PrefillPoint, Provenance
from slaprof.steps.core.store import Layout, open_store, write_model
from slaprof.steps.runner.local import GpuPool, default_parallel, reusable_profile, visible_gpus
from slaprof.steps.runner.progress import PlainProgress, RichProgress, SilentProgress, make_progress


def _profile(cid: str, key: str, status: str = "ok") -> CandidateProfile:
    return CandidateProfile(
        candidate=Candidate.parse(cid),
        status=status,
        reason="" if status == "ok" else "engine crashed",
        max_kv_tokens=100_000,
        prefill=[PrefillPoint(isl=1000, ttft_ms=50.0, thpt_per_gpu=20_000.0)],
        decode=[DecodePoint(isl=1000, context=1075, concurrency=8, kv_usage=0.09, itl_ms=9.0, thpt_per_gpu=800.0)],
        provenance=Provenance(method="offline", backend="vllm", request_key=key),
    )


def test_reusable_profile_needs_same_key_ok_status_and_valid_json(tmp_path):
    store = open_store(str(tmp_path))
    write_model(store, Layout.profile("tp1"), _profile("tp1", "key-a"))
    write_model(store, Layout.profile("tp2"), _profile("tp2", "key-a", status="failed"))
    write_model(store, Layout.profile("tp4"), _profile("tp2", "key-a"))  # a profile of another candidate
    store.put_bytes(Layout.profile("tp8"), b'{"candidate": {"kind": "tp", "size": 8}, "status": "ok"')  # truncated

    reused = reusable_profile(store, "tp1", "key-a")
    assert reused is not None and reused.prefill[0].ttft_ms == 50.0
    assert reusable_profile(store, "tp1", "key-b") is None  # measured under another request
    assert reusable_profile(store, "tp2", "key-a") is None  # failed last time: measure again
    assert reusable_profile(store, "tp4", "key-a") is None
    assert reusable_profile(store, "tp8", "key-a") is None
    assert reusable_profile(store, "tp16", "key-a") is None  # never measured


def test_default_parallel_per_method():
    assert default_parallel("offline", 4, cpus=2) == 1
    assert default_parallel("simulate", 4, cpus=2) == 2
    assert default_parallel("simulate", 4, cpus=1) == 1
    assert default_parallel("simulate", 4, cpus=16) == 4
    assert default_parallel("simulate", 2, cpus=16) == 2
    assert default_parallel("online", 3, cpus=2) == 3


def test_visible_gpus_follows_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1, 3"}) == ["0", "1", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,-1,3"}) == ["2"]  # CUDA stops at the first invalid id
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5d1c,GPU-77aa"}) == ["GPU-5d1c", "GPU-77aa"]


def test_gpu_pool_hands_out_disjoint_sets_and_queues():
    pool = GpuPool(["0", "1", "2", "3"])
    a = pool.acquire(2)
    b = pool.acquire(1)
    assert a == ["0", "1"] and b == ["2"]
    assert pool.acquire(2) is None  # one free: a 2-GPU candidate waits
    pool.release(a)
    c = pool.acquire(2)
    assert c == ["0", "1"] and set(c).isdisjoint(b)
    pool.release(b)
    pool.release(c)
    assert pool.free == ["0", "1", "2", "3"] and pool.total == 4


def test_plain_progress_lines_are_throttled_but_keep_phase_edges():
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=3600)
    progress.step("plan", "2 candidates (tp1, tp2)")
    progress.candidate_started("tp1", "GPUs 0")
    for done in range(1, 11):
        progress.phase("tp1", "decode", done, 10)
    progress.candidate_finished("tp1", "failed", "engine out of memory")
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "plan: 2 candidates (tp1, tp2)",
        "bench tp1: started (GPUs 0)",
        "bench tp1: decode 1/10",
        "bench tp1: decode 10/10",
        "bench tp1: failed: engine out of memory",
    ]


def test_rich_progress_draws_rows_and_keeps_finished_lines():
    out = io.StringIO()
    progress = RichProgress(out, force_terminal=True)
    progress.candidate_started("tp2")
    progress.phase("tp2", "prefill", 3, 4)
    rows = {(t.fields["candidate"], t.fields["phase"]): (t.completed, t.total) for t in progress.progress.tasks}
    assert rows == {("tp2", "prefill"): (3, 4)}  # the start-up row gave way to the phase row
    progress.candidate_finished("tp2", "ok", "4 prefill points")
    assert not progress.progress.tasks
    progress.close()
    text = out.getvalue()
    assert "\x1b[" in text and "bench" in text and "tp2" in text and "4 prefill points" in text


def test_make_progress_picks_plain_when_not_a_terminal():
    assert isinstance(make_progress("auto", io.StringIO()), PlainProgress)
    assert isinstance(make_progress("none"), SilentProgress)


@pytest.mark.parametrize(
    "model,expected",
    [
        ("Qwen/Qwen3-32B", "slaprof-out/Qwen3-32B-vllm-h200_sxm-offline"),
        ("/models/my model/", "slaprof-out/my-model-vllm-h200_sxm-offline"),
    ],
)
def test_default_out_is_stable_per_request(model, expected):
    from slaprof.steps.cli.commands.profile import default_out

    assert default_out(model, "vllm", "h200_sxm", "offline") == expected
