"""Drift report of the `record` step: history under a stable key, percent changes, threshold."""

from __future__ import annotations

import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import StepFailed
from slaprof.steps.core.request import ProfileRequest
from slaprof.steps.core.results import DecodeChoice, PrefillChoice, Selection
from slaprof.steps.core.store import Layout, LocalStore, read_model, write_model
from slaprof.steps.dag.drift import DRIFT_KEY, DriftReport, compare, history_key, run_step


def _selection(
    prefill: str = "tp2",
    decode: str = "tp4",
    ttft: float = 40.0,
    itl: float = 8.0,
    p_thpt: float = 10_000.0,
    d_thpt: float = 1_000.0,
) -> Selection:
    p, d = Candidate.parse(prefill), Candidate.parse(decode)
    return Selection(
        model="Qwen/Qwen3-32B",
        backend="vllm",
        gpu="h200_sxm",
        isl=3000,
        osl=500,
        ttft_ms=50,
        itl_ms=10,
        prefill=PrefillChoice(candidate=p, isl=3000, ttft_ms=ttft, thpt_per_gpu=p_thpt, meets_sla=True),
        decode=DecodeChoice(
            candidate=d,
            context=3250,
            concurrency=64,
            kv_usage=0.5,
            itl_ms=itl,
            thpt_per_gpu=d_thpt,
            max_kv_tokens=400_000,
            meets_sla=True,
        ),
    )


def test_history_key_is_stable_and_path_safe():
    assert history_key("Qwen/Qwen3-32B", "vllm", "h200_sxm") == "qwen-qwen3-32b/vllm/h200_sxm"
    assert history_key("/models/My Model!", "sglang", "h100_sxm") == "models-my-model/sglang/h100_sxm"


def test_first_run_has_nothing_to_compare():
    report = compare(None, _selection(), key="k", run="r1", threshold_pct=5)
    assert not report.compared and not report.exceeded and report.current_choice == "tp2+tp4"
    assert "first result" in report.summary()


def test_percent_changes_at_the_chosen_configs():
    report = compare(_selection(), _selection(ttft=44.0, d_thpt=900.0), key="k", run="r2", previous_run="r1")
    changes = {m.name: m.change_pct for m in report.metrics}
    assert changes == {
        "prefill_ttft_ms": 10.0,
        "prefill_thpt_per_gpu": 0.0,
        "decode_itl_ms": 0.0,
        "decode_thpt_per_gpu": -10.0,
    }
    assert report.max_abs_change_pct == 10.0 and not report.choice_changed
    assert not report.exceeded  # threshold 0 = report only
    assert "prefill_ttft_ms +10.0%" in report.summary() and "r1" in report.summary()


def test_threshold_and_changed_choice():
    assert compare(_selection(), _selection(ttft=44.0), key="k", run="r", threshold_pct=5).exceeded
    assert not compare(_selection(), _selection(ttft=41.0), key="k", run="r", threshold_pct=5).exceeded
    moved = compare(_selection(), _selection(decode="tp8"), key="k", run="r", threshold_pct=50)
    assert moved.choice_changed and moved.exceeded and "tp2+tp4 -> tp2+tp8" in moved.summary()


def _run(tmp_path, name: str, selection: Selection, request: ProfileRequest | None = None) -> LocalStore:
    store = LocalStore(tmp_path / name)
    write_model(store, Layout.REQUEST, request or ProfileRequest(model="Qwen/Qwen3-32B"))
    write_model(store, Layout.SELECTION, selection)
    return store


def test_run_step_records_history_and_fails_only_beyond_threshold(tmp_path):
    history = LocalStore(tmp_path / "history" / "qwen-qwen3-32b" / "vllm" / "h200_sxm")
    first = run_step(_run(tmp_path, "run-1", _selection()), history, "run-1", threshold_pct=5)
    assert not first.compared and history.exists("selection.json")

    second_store = _run(tmp_path, "run-2", _selection(itl=8.2))
    second = run_step(second_store, history, "run-2", threshold_pct=5)
    assert second.compared and second.previous_run == "run-1" and not second.exceeded
    assert read_model(second_store, DRIFT_KEY, DriftReport).metrics == second.metrics

    third_store = _run(tmp_path, "run-3", _selection(itl=9.5))
    with pytest.raises(StepFailed, match=r"decode_itl_ms \+15\.[89]%.*exceeds 5%"):
        run_step(third_store, history, "run-3", threshold_pct=5)
    # the report is written and the new result becomes the reference even when the step fails
    assert read_model(third_store, DRIFT_KEY, DriftReport).exceeded
    assert read_model(history, "selection.json", Selection).decode.itl_ms == 9.5


def test_a_changed_request_is_named_and_not_held_to_the_threshold(tmp_path):
    # a user who asks another question (a tighter SLA, fewer GPUs) gets other numbers: the drift line
    # says what changed and the step does not fail, while the same question drifting still does
    history = LocalStore(tmp_path / "history")
    asked = ProfileRequest(model="Qwen/Qwen3-32B")
    run_step(_run(tmp_path, "run-1", _selection(), asked), history, "run-1", threshold_pct=5)
    assert read_model(history, "request.json", ProfileRequest) == asked

    tighter = asked.model_copy(deep=True)
    tighter.sla.ttft_ms, tighter.hardware.total_gpus = 25.0, 4
    tighter.deployment.namespace = "elsewhere"  # where the DGD goes changes no number
    second = run_step(_run(tmp_path, "run-2", _selection(ttft=20.0), tighter), history, "run-2", threshold_pct=5)
    assert second.changed_inputs == ["hardware.total_gpus: 0 -> 4", "sla.ttft_ms: 50.0 -> 25.0"]
    assert second.max_abs_change_pct == 50.0 and not second.exceeded
    assert "request changed: hardware.total_gpus: 0 -> 4, sla.ttft_ms: 50.0 -> 25.0" in second.summary()

    moved = tighter.model_copy(deep=True)
    moved.deployment.namespace = "serving"
    with pytest.raises(StepFailed, match="exceeds 5%"):
        run_step(_run(tmp_path, "run-3", _selection(ttft=30.0), moved), history, "run-3", threshold_pct=5)


def test_a_history_without_a_readable_request_is_compared_by_its_selection(tmp_path):
    history = LocalStore(tmp_path / "history")
    write_model(history, "selection.json", _selection())
    history.put_bytes("request.json", b'{"model": "Qwen/Qwen3-32B", "retired_setting": 1}')
    store = _run(tmp_path, "run-2", _selection(ttft=44.0))
    with pytest.raises(StepFailed, match=r"drift vs the previous run: .*prefill_ttft_ms \+10\.0%.*exceeds 5%"):
        run_step(store, history, "run-2", threshold_pct=5)
    assert not read_model(store, DRIFT_KEY, DriftReport).changed_inputs
    assert read_model(history, "request.json", ProfileRequest).model == "Qwen/Qwen3-32B"  # replaced by one it reads
