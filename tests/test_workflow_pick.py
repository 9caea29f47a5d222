"""Pareto choices offered by the suspend node, and the exit codes the templates' retries rely on."""

from __future__ import annotations

import pytest

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.errors import StepFailed, Unreachable, UserError
from slaprof.steps.core.results import DecodeChoice, ParetoPoint, PrefillChoice, Selection
from slaprof.steps.core.store import StoreUnavailable
from slaprof.steps.fitting.pick import RECOMMENDED, pareto_choices, parse_choice
from slaprof.workflows.params import PICK_SLOTS
from slaprof.workflows.tasks import TRANSIENT_EXIT, fit_outputs, step_errors


def _selection(
    prefill_front: list[tuple[str, float]],
    decode_front: list[tuple[str, float]],
    chosen: tuple[str, str] = ("tp2", "tp4"),
) -> Selection:
    p, d = Candidate.parse(chosen[0]), Candidate.parse(chosen[1])
    return Selection(
        model="m",
        backend="vllm",
        gpu="h200_sxm",
        isl=3000,
        osl=500,
        ttft_ms=50,
        itl_ms=10,
        prefill=PrefillChoice(candidate=p, isl=3000, ttft_ms=45, thpt_per_gpu=9000, meets_sla=True),
        decode=DecodeChoice(
            candidate=d,
            context=3250,
            concurrency=32,
            kv_usage=0.4,
            itl_ms=9.5,
            thpt_per_gpu=800,
            max_kv_tokens=10**6,
            meets_sla=True,
        ),
        prefill_pareto=[ParetoPoint(candidate_id=c, latency_ms=lat, thpt_per_gpu=1.0) for c, lat in prefill_front],
        decode_pareto=[
            ParetoPoint(candidate_id=c, latency_ms=lat, thpt_per_gpu=1.0, concurrency=n)
            for n, (c, lat) in enumerate(decode_front, 1)
        ],
    )


def test_recommendation_first_then_one_change_at_a_time():
    sel = _selection([("tp1", 80.0), ("tp2", 45.0), ("tp4", 30.0)], [("tp4", 9.5), ("tp4", 7.0), ("tp8", 5.0)])
    choices = pareto_choices(sel)
    assert choices[0] == f"tp2+tp4{RECOMMENDED}: TTFT 45.0 ms, ITL 7.00 ms"
    pairs = [parse_choice(c) for c in choices]
    assert pairs[:4] == [("tp2", "tp4"), ("tp4", "tp4"), ("tp1", "tp4"), ("tp2", "tp8")]
    assert len(choices) == 6 == PICK_SLOTS and len(set(pairs)) == 6


def test_fit_outputs_fill_every_slot():
    sel = _selection([("tp2", 45.0)], [("tp4", 9.5)])
    out = fit_outputs(sel)
    assert out["prefill"] == "TP:2" and out["decode"] == "TP:4" and out["meets_sla"] == "true"
    assert [out[f"choice_{i}"] for i in range(1, PICK_SLOTS + 1)] == [pareto_choices(sel)[0]] * PICK_SLOTS


@pytest.mark.parametrize(
    "label,expected",
    [
        ("auto", None),
        ("", None),
        ("tp1+dep8: TTFT 1 ms", ("tp1", "dep8")),
        (f"tp2+tp4{RECOMMENDED}: TTFT 45.0 ms", ("tp2", "tp4")),
        (f"agg-dtp4{RECOMMENDED}: TTFT 45.0 ms, ITL 9.00 ms", ("agg-dtp4",)),
    ],
)
def test_parse_choice(label, expected):
    assert parse_choice(label) == expected


def test_an_aggregated_recommendation_comes_first():
    from slaprof.steps.core.results import DeploymentChoice, EngineGroup

    group = EngineGroup(
        role="agg",
        candidate=Candidate.parse("agg-tp8"),
        replicas=1,
        concurrency=12,
        ttft_ms=44.0,
        itl_ms=9.0,
        thpt_per_gpu=300.0,
        request_rate=2.0,
    )
    sel = _selection([("tp2", 45.0)], [("tp4", 9.5)]).model_copy(
        update={
            "prefill": None,
            "decode": None,
            "deployment": DeploymentChoice(
                mode="agg",
                engines=[group],
                gpus=8,
                request_rate=2.0,
                thpt_per_gpu=300.0,
                ttft_ms=44.0,
                itl_ms=9.0,
                meets_sla=True,
            ),
        }
    )
    choices = pareto_choices(sel)
    assert choices[0] == f"agg-tp8{RECOMMENDED}: TTFT 44.0 ms, ITL 9.00 ms"
    assert [parse_choice(c) for c in choices] == [("agg-tp8",), ("tp2", "tp4")]  # the pair is not marked
    out = fit_outputs(sel)
    assert out["prefill"] == "none" and out["serving"] == "agg" and out["meets_sla"] == "true"
    assert out["deployment"] == "1 x aggregated TP:8 on 8 GPUs, 300.0 tokens/s/GPU"


def test_parse_choice_rejects_free_text():
    with pytest.raises(UserError, match="offered labels"):
        parse_choice("the fast one")


@pytest.mark.parametrize(
    "exc,code",
    [
        (
            Unreachable("S3 endpoint 127.0.0.1:9 is unreachable (MaxRetryError); check SLAPROF_S3_ENDPOINT"),
            TRANSIENT_EXIT,
        ),
        # the type decides, not the words: a bad request that mentions an unreachable host is still exit 2
        (UserError("invalid request: unreachable endpoint in base DGD"), 2),
        (ConnectionResetError("peer"), TRANSIENT_EXIT),
        (
            StoreUnavailable("S3 endpoint s3:9000 is unreachable (NewConnectionError; upload retried for 120 s)"),
            TRANSIENT_EXIT,
        ),
        (UserError("invalid request: backend"), 2),
        (StepFailed("drift"), 1),
    ],
)
def test_exit_codes(exc, code, capsys):
    with pytest.raises(SystemExit) as info, step_errors("task"):
        raise exc
    assert info.value.code == code
    assert str(exc) in capsys.readouterr().err


def test_unknown_errors_keep_their_traceback():
    with pytest.raises(KeyError), step_errors("task"):
        raise KeyError("bug")


@pytest.mark.parametrize("text,seconds", [("4h", 14400), ("2h30m", 9000), ("90s", 90), ("1.5h", 5400)])
def test_durations_of_parameters(text, seconds):
    from slaprof.workflows.params import duration_seconds

    assert duration_seconds(text, "bench-timeout") == seconds


@pytest.mark.parametrize("text", ["", "4", "four hours", "4d", "0s", "-1h"])
def test_bad_durations_name_the_parameter(text):
    from slaprof.workflows.params import duration_seconds

    with pytest.raises(UserError, match="bench-timeout"):
        duration_seconds(text, "bench-timeout")
