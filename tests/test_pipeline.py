"""One step declaration, two runners: a local run and the Argo DAG (each task run by Hera's runner,
as its pod runs it) write byte-identical results for the same request, with fit's pick and a
person's pick."""

from __future__ import annotations

import json

import pytest
import yaml

from slaprof.steps.cli.commands.profile import pick_choice
from slaprof.steps.core.store import Layout, open_store
from slaprof.steps.dag import pipeline
from slaprof.steps.runner.local import RunOptions, run_profile
from slaprof.workflows.tasks import build_request_from_parameters
from tests.conftest import MODELS
from tests.test_workflow_runner import ArgoStandIn

REQUEST_DOC = yaml.safe_dump(
    {
        "model": str(MODELS / "Qwen3-0.6B"),
        "serving": "disagg",
        "sla": {"isl": 1000, "osl": 150, "ttft_ms": 300, "itl_ms": 20},
        "sweep": {"prefill_granularity": 5, "decode_granularity": 4},
    }
)
PARAMETERS = {"request": REQUEST_DOC, "max-gpus-per-engine": "2"}
SAME = (Layout.REQUEST, Layout.PLAN, Layout.SELECTION, *pipeline.PLANNER_DATA, Layout.DGD)


def _local(tmp_path, run: str, pick: str = pipeline.AUTO_CHOICE):
    request = build_request_from_parameters(REQUEST_DOC, {"max-gpus-per-engine": "2"})
    result = run_profile(request, RunOptions(out=str(tmp_path / run), pick=pick))
    assert result.recommended and not result.errors, result.errors
    return result, open_store(str(tmp_path / run))


def _second_choice(argo: ArgoStandIn) -> dict[str, str]:
    """What a person resuming `choose` supplies: the second of fit's Pareto choices."""
    choices = json.loads(argo.outputs["fit"]["choices"])
    assert len(choices) >= 2, choices
    return {"choice": choices[1]}


@pytest.mark.parametrize("picked", [False, True], ids=["fit's pick", "a person's pick"])
def test_local_and_argo_runs_write_the_same_files(s3_server, tmp_path, picked):
    run = "slaprof-same-" + ("picked" if picked else "auto")
    argo = ArgoStandIn(s3_server, tmp_path / "pods", {**PARAMETERS, "pick": "manual" if picked else "auto"}, run)
    status = argo.run_dag({"choose": _second_choice})
    expected = {"plan": "Succeeded", "bench": "Succeeded", "fit": "Succeeded", "render": "Succeeded"}
    assert {k: status[k] for k in expected} == expected and status["record"] == "Succeeded"
    assert status["bench-online"] == status["apply"] == "Skipped"
    assert status["pick"] == ("Succeeded" if picked else "Omitted")

    prefill, decode = _second_choice(argo)["choice"].split(":")[0].split("+")
    local, store = _local(tmp_path, run, pick_choice(f"prefill={prefill},decode={decode}") if picked else "auto")
    for key in SAME:
        assert store.get_bytes(key) == argo.get(f"{run}/{key}"), f"{key} differs between the local and the Argo run"
    selection = json.loads(store.get_bytes(Layout.SELECTION))
    if picked:
        assert selection["recommendation"][0].startswith("Picked by hand")
        assert (selection["prefill"]["candidate"]["size"], selection["decode"]["candidate"]["size"]) == (
            int(prefill.removeprefix("tp")),
            int(decode.removeprefix("tp")),
        )
        assert store.get_bytes(pipeline.AUTO_SELECTION) == argo.get(f"{run}/{pipeline.AUTO_SELECTION}")
    # the context the plan assumed reaches the DGD's workers, whoever chose the deployment
    assert selection["max_context"] == json.loads(store.get_bytes(Layout.PLAN))["grid"]["max_context"] > 0
    dgd = [d for d in yaml.safe_load_all(store.get_bytes(Layout.DGD)) if d]
    assert dgd and all(d["metadata"]["labels"]["slaprof.io/run"] == run for d in dgd)
    # drift is recorded by both: beside the local output, and under the bucket's history/
    assert local.drift is not None and "first result" in local.drift
    key = argo.outputs["plan"]["history-key"]
    assert (tmp_path / "history" / key / "selection.json").read_bytes() == store.get_bytes(Layout.SELECTION)
    assert argo.keys(f"history/{key}/") == [
        f"history/{key}/{name}" for name in ("request.json", "run.json", "selection.json")
    ]
    assert argo.get(f"history/{key}/request.json") == store.get_bytes(Layout.REQUEST)


def test_a_rerun_reuses_the_profiles_and_discards_another_requests(tmp_path):
    first, store = _local(tmp_path, "run")
    assert {o.status for o in first.outcomes} == {"ok"}
    other = json.loads(store.get_bytes(Layout.profile("tp1")))
    other["candidate"]["size"], other["provenance"]["request_key"] = 8, "another request"
    store.put_bytes(Layout.profile("tp8"), json.dumps(other).encode())  # left by a run of another request
    again, _ = _local(tmp_path, "run")
    assert {o.status for o in again.outcomes} == {"reused"}
    assert not store.exists(Layout.profile("tp8"))


@pytest.mark.parametrize(
    "text,choice",
    [("prefill=tp2,decode=tp4", "tp2+tp4"), (" decode=tp1 , prefill=tp2", "tp2+tp1"), ("agg=agg-tp4", "agg-tp4")],
)
def test_pick_option(text, choice):
    assert pick_choice(text) == choice
    assert pick_choice("auto") == pipeline.AUTO_CHOICE


@pytest.mark.parametrize("text", ["tp2", "prefill=tp2", "prefill=tp2,decode=tp4,agg=agg-tp2", "agg=tp2", "x=tp1"])
def test_bad_pick_is_one_line_exit_2(text, capsys):
    from slaprof.steps.cli.main import main

    assert main(["profile", "--model", str(MODELS / "Qwen3-0.6B"), "--pick", text]) == 2
    assert "--pick" in capsys.readouterr().err


def test_run_names_and_labels():
    assert pipeline.run_name("s3://bucket/runs/wf-1/") == "wf-1"
    assert pipeline.run_label("/tmp/out/My Model (test)/") == "My-Model-test"
    assert len(pipeline.run_label("/x/" + "a" * 80)) == 63
    assert pipeline.history_location("s3://bucket/wf-1", "m/vllm/h200_sxm") == "s3://bucket/history/m/vllm/h200_sxm"
    assert pipeline.history_location("s3://bucket", "k") == "s3://bucket/history/k"


def test_every_step_follows_declared_steps_and_reads_what_is_written_before():
    written: set[str] = set()
    for s in pipeline.STEPS:
        assert all(
            a in pipeline.BY_NAME and list(pipeline.BY_NAME).index(a) < list(pipeline.BY_NAME).index(s.name)
            for a in s.after
        )
        assert s.name == "plan" or s.after
        assert set(s.reads) - {pipeline.PROFILE, Layout.PROFILES} <= written | {Layout.REQUEST}, s.name
        written |= set(s.writes)


def test_picking_an_unmeasured_candidate_fails_the_run_after_fit(tmp_path, capsys):
    from slaprof.steps.cli.main import main

    args = ["profile", "--config", str(tmp_path / "request.yaml"), "--max-num-gpus-per-engine", "2"]
    (tmp_path / "request.yaml").write_text(REQUEST_DOC)
    assert main([*args, "--out", str(tmp_path / "run"), "--pick", "prefill=tp1,decode=tp8", "--progress", "none"]) == 1
    assert "pick: picked candidate 'tp8' has no successful profile" in capsys.readouterr().err
    assert not (tmp_path / "run" / "dgd.yaml").exists() and (tmp_path / "run" / "selection.json").exists()


def test_the_prompt_takes_a_number_or_enter(monkeypatch, capsys):
    from slaprof.steps.cli.commands.profile import ask_choice

    answers = iter(["9", "2"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert ask_choice(["tp1+tp2 (recommended): TTFT 1 ms", "tp2+tp2: TTFT 2 ms"]) == "tp2+tp2: TTFT 2 ms"
    assert "type a number from 1 to 2" in capsys.readouterr().err
    monkeypatch.setattr("builtins.input", lambda prompt: "")
    assert ask_choice(["tp1+tp2 (recommended): TTFT 1 ms", "tp2+tp2: TTFT 2 ms"]).startswith("tp1+tp2")


def test_a_local_run_asks_after_fit(tmp_path):
    offered: list[list[str]] = []

    def ask(choices: list[str]) -> str:
        offered.append(choices)
        return choices[1]

    request = build_request_from_parameters(REQUEST_DOC, {"max-gpus-per-engine": "2"})
    result = run_profile(request, RunOptions(out=str(tmp_path / "run"), ask=ask))
    assert len(offered) == 1 and "(recommended)" in offered[0][0]
    assert result.selection is not None and result.selection.recommendation[0].startswith("Picked by hand")
    assert result.dgd is not None and (tmp_path / "run" / pipeline.AUTO_SELECTION).exists()
