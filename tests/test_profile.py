"""`slaprof profile` end to end, as a user runs it: a subprocess, real steps, real files, real S3."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from slaprof.steps.core.candidates import Candidate
from slaprof.steps.core.results import CandidateProfile, Selection
from tests.conftest import MODELS, ROOT

QWEN32B_SLA = [
    "--model",
    str(MODELS / "Qwen3-32B"),
    "--gpu",
    "h200_sxm",
    "--isl",
    "3000",
    "--osl",
    "150",
    "--ttft",
    "200",
    "--itl",
    "20",
]
# an estimate's interval follows its number (`TTFT 172.14 ms [80%: 131-224]`); a measurement has none
BAND = r"(?: \[\d+%: [\d.]+-[\d.]+\])?"
PREFILL_LINE = re.compile(
    rf"^Suggested prefill (TP|TEP|DEP|DTP):(\d+) \(TTFT (\d+\.\d\d) ms{BAND}, "
    r"throughput (\d+\.\d\d) tokens/s/GPU\)$"
)
DECODE_LINE = re.compile(
    rf"^Suggested decode (TP|TEP|DEP|DTP):(\d+) \(ITL (\d+\.\d\d) ms{BAND}, "
    r"throughput (\d+\.\d\d) tokens/s/GPU\)$"
)


def slaprof(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slaprof.steps.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        **kw,
    )


AGG_LINE = re.compile(
    rf"^Suggested aggregated (TP|TEP|DEP|DTP):(\d+) \(TTFT (\d+\.\d\d) ms{BAND}, ITL (\d+\.\d\d) ms{BAND}, "
    r"throughput (\d+\.\d\d) tokens/s/GPU, concurrency (\d+)\)$"
)
DEPLOYMENT_LINE = re.compile(r"^Suggested deployment: (.+) on (\d+) GPUs \((\d+\.\d) tokens/s/GPU\)$")


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """The acceptance run: Qwen3-32B on H200, ISL 3000, OSL 150, TTFT 200 ms, ITL 20 ms, offline,
    both serving modes within one node."""
    out = tmp_path_factory.mktemp("profile") / "qwen32b"
    res = slaprof("profile", *QWEN32B_SLA, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, res


@pytest.fixture(scope="module")
def disagg_run(tmp_path_factory):
    """The same request, disaggregated serving only."""
    out = tmp_path_factory.mktemp("profile") / "qwen32b-disagg"
    res = slaprof("profile", *QWEN32B_SLA, "--serving", "disagg", "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, res


def _runnable(out) -> list[str]:
    plan = json.loads((out / "plan.json").read_text())
    return [Candidate.model_validate(c["candidate"]).id for c in plan["candidates"] if c["status"] == "runnable"]


def _check_planner_data(out) -> None:
    prefill = np.load(out / "prefill" / "raw_data.npz")
    assert {"prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu"} <= set(prefill.files)
    assert np.all(np.isfinite(prefill["prefill_ttft"])) and len(prefill["prefill_isl"]) >= 2
    decode = np.load(out / "decode" / "raw_data.npz")
    assert {"x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens"} <= set(decode.files)
    assert decode["max_kv_tokens"].shape == (1,) and np.all((decode["x_kv_usage"] >= 0) & (decode["x_kv_usage"] <= 1))
    prefill_json = json.loads((out / "prefill_raw_data.json").read_text())
    assert np.allclose(prefill_json["prefill_ttft"], prefill["prefill_ttft"])
    decode_json = json.loads((out / "decode_raw_data.json").read_text())
    assert np.allclose(decode_json["z_itl"], decode["z_itl"])


def test_offline_run_writes_every_output(offline_run):
    out, res = offline_run
    plan = json.loads((out / "plan.json").read_text())
    ids = _runnable(out)
    # both serving modes, within the default budget of one node (8 GPUs)
    assert {"tp1", "tp2", "tp4", "agg-tp1", "agg-tp2", "agg-tp4", "agg-tp8"} == set(ids), plan
    assert json.loads((out / "request.json").read_text())["sla"] == {
        "isl": 3000,
        "osl": 150,
        "ttft_ms": 200.0,
        "itl_ms": 20.0,
        "request_rate": None,
        "confidence": 0.5,
    }
    for cid in ids:
        profile = CandidateProfile.model_validate_json((out / "profiles" / f"{cid}.json").read_text())
        assert profile.status == "ok" and profile.prefill and profile.decode
        assert profile.provenance.method == "offline" and profile.provenance.request_key == plan["request_key"]
        if profile.candidate.is_agg:
            assert profile.agg and {(p.isl, p.osl) for p in profile.agg} == {(3000, 150)}
        else:
            assert profile.prefill_load and {p.isl for p in profile.prefill_load} == {3000}
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    chosen, other = selection.deployment, selection.alternative
    assert chosen is not None and other is not None and {chosen.mode, other.mode} == {"agg", "disagg"}
    assert chosen.gpus <= 8 and other.gpus <= 8 and chosen.meets_sla
    assert chosen.thpt_per_gpu >= other.thpt_per_gpu or not other.meets_sla
    assert {v.candidate_id for v in selection.verdicts} >= set(ids)
    _check_planner_data(out)

    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (out / "plots" / "serving_modes.png").is_file()
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained
    assert "Aggregated vs disaggregated (within 8 GPUs)" in html
    for line in selection.recommendation:
        assert html_escape(line) in html
    docs = [d for d in yaml.safe_load_all((out / "dgd.yaml").read_text()) if d]
    assert docs[-1]["kind"] == "DynamoGraphDeployment"
    spec = docs[-1]["spec"]  # Dynamo 1.6 (the default release): v1beta1 components; before: services
    items = spec["components"] if "components" in spec else list(spec["services"].values())
    workers = [s for s in items if s.get("componentType", s.get("type")) in ("worker", "prefill", "decode")]
    assert len(workers) == (1 if chosen.mode == "agg" else 2)
    assert f"DGD: {out / 'dgd.yaml'}" in res.stderr
    assert not list(out.rglob("*.part"))  # nothing half-written


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_offline_run_prints_both_modes_then_report(offline_run):
    out, res = offline_run
    lines = res.stdout.strip().splitlines()
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    chosen = selection.deployment
    assert lines[:-1] == selection.recommendation
    assert "ms [80%: " in lines[0]  # offline numbers are estimates: each carries its interval
    if chosen.mode == "agg":
        agg = AGG_LINE.match(lines[0])
        assert agg, lines
        group = chosen.group("agg")
        assert agg.group(1, 2, 6) == (group.candidate.kind.upper(), str(group.candidate.size), str(group.concurrency))
        assert float(agg.group(3)) <= 200 and float(agg.group(4)) <= 20
        deployment_at = 1
    else:
        assert PREFILL_LINE.match(lines[0]) and DECODE_LINE.match(lines[1]), lines
        deployment_at = 2
    dep = DEPLOYMENT_LINE.match(lines[deployment_at])
    assert dep and dep.group(1) == chosen.shape and int(dep.group(2)) == chosen.gpus <= 8
    assert float(dep.group(3)) == pytest.approx(chosen.thpt_per_gpu, abs=0.06)
    # the best of the other mode, in one line
    other = selection.alternative
    assert lines[deployment_at + 1].startswith(
        f"Other mode: best {('aggregated', 'disaggregated')[other.mode == 'disagg']} "
    )
    assert f"{other.shape} on {other.gpus} GPUs" in lines[deployment_at + 1]
    assert lines[-1] == f"Report: {out / 'report.html'}"
    assert "plan:" in res.stderr and "bench tp" in res.stderr  # plain log lines, not a terminal
    # the model is a folder here, which the DGD's pods cannot see: said on stderr, not only in the file
    warning = "slaprof: warning: the model is the local folder"
    assert warning in res.stderr and warning[9:] in (out / "dgd.yaml").read_text()


def test_serving_disagg_prints_dynamo_lines_and_the_disaggregated_dgd(disagg_run):
    out, res = disagg_run
    assert not [c for c in _runnable(out) if c.startswith("agg-")]
    lines = res.stdout.strip().splitlines()
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert lines[:-1] == selection.recommendation and selection.deployment.mode == "disagg"
    prefill, decode = PREFILL_LINE.match(lines[0]), DECODE_LINE.match(lines[1])
    assert prefill and decode, lines
    assert prefill.group(1, 2) == (selection.prefill.candidate.kind.upper(), str(selection.prefill.candidate.size))
    assert float(prefill.group(3)) == pytest.approx(selection.prefill.ttft_ms, abs=0.006)
    assert float(prefill.group(3)) <= 200 and float(decode.group(3)) <= 20  # the SLA is reachable on H200
    dep = DEPLOYMENT_LINE.match(lines[2])
    assert dep and dep.group(1) == selection.deployment.shape and int(dep.group(2)) <= 8
    assert lines[3] == "Other mode: aggregated serving was not profiled (--serving disagg)"
    _check_planner_data(out)
    docs = [d for d in yaml.safe_load_all((out / "dgd.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "DynamoGraphDeployment"]
    replicas = {c["type"]: c["replicas"] for c in docs[-1]["spec"]["components"] if c["type"] in ("prefill", "decode")}
    assert replicas == {"prefill": selection.replicas.prefill, "decode": selection.replicas.decode}


def test_serving_agg_and_total_gpus(tmp_path):
    out = tmp_path / "agg"
    res = slaprof("profile", *QWEN32B_SLA, "--serving", "agg", "--total-gpus", "4", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert set(_runnable(out)) == {"agg-tp1", "agg-tp2", "agg-tp4"}
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert selection.deployment.mode == "agg" and selection.deployment.gpus <= 4 and selection.gpu_budget == 4
    lines = res.stdout.strip().splitlines()
    assert AGG_LINE.match(lines[0]) and DEPLOYMENT_LINE.match(lines[1])
    assert lines[2] == "Other mode: disaggregated serving was not profiled (--serving agg)"
    assert "no Planner" in res.stderr


def test_rerun_reuses_profiles_unless_forced(offline_run, tmp_path):
    first_out, first = offline_run
    out = tmp_path / "copy"  # a copy, so the other tests keep the first run's files
    shutil.copytree(first_out, out)
    before = {p.name: p.read_bytes() for p in (out / "profiles").glob("*.json")}
    again = slaprof("profile", *QWEN32B_SLA, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count(": reused") == len(before)
    assert {p.name: p.read_bytes() for p in (out / "profiles").glob("*.json")} == before  # untouched
    assert again.stdout.splitlines()[:2] == first.stdout.splitlines()[:2]

    forced = slaprof("profile", *QWEN32B_SLA, "--out", str(out), "--force")
    assert forced.returncode == 0 and ": reused" not in forced.stderr
    # fields that change the measurement (OSL, engine sizes) invalidate every stored profile, and
    # profiles of candidates the new plan no longer has are removed so fit cannot pick them
    # (and a TTFT no engine meets: the nearest point is still recommended, with a warning, exit 0)
    changed = slaprof(
        "profile", *QWEN32B_SLA, "--osl", "300", "--max-num-gpus-per-engine", "2", "--ttft", "1", "--out", str(out)
    )
    assert changed.returncode == 0 and ": reused" not in changed.stderr
    assert "slaprof: warning:" in changed.stderr and "TTFT" in changed.stderr
    assert changed.stdout.splitlines()[0].startswith("Suggested ")
    assert json.loads((out / "request.json").read_text())["sla"]["osl"] == 300
    assert sorted(p.name for p in (out / "profiles").glob("*.json")) == [
        "agg-tp1.json",
        "agg-tp2.json",
        "tp1.json",
        "tp2.json",
    ]
    assert "removed profiles/agg-tp8.json: measured under another request" in changed.stderr
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert all(e.candidate.size <= 2 for e in selection.deployment.engines)


def test_profile_to_s3(s3_server, tmp_path):
    # two worker processes write the profiles (each opens the S3 store itself)
    res = slaprof(
        "profile", *QWEN32B_SLA, "--out", "s3://slaprof-runs/qwen32b-run", "--parallel", "2", env=s3_server.env()
    )
    assert res.returncode == 0, res.stderr
    assert "bench tp1: started" in res.stderr and "bench tp2: started" in res.stderr
    assert res.stdout.strip().splitlines()[-1] == "Report: s3://slaprof-runs/qwen32b-run/report.html"

    from minio import Minio

    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False)
    keys = {
        o.object_name.removeprefix("qwen32b-run/")
        for o in client.list_objects("slaprof-runs", prefix="qwen32b-run/", recursive=True)
    }
    for key in (
        "request.json",
        "plan.json",
        "selection.json",
        "prefill/raw_data.npz",
        "decode/raw_data.npz",
        "prefill_raw_data.json",
        "decode_raw_data.json",
        "report.html",
    ):
        assert key in keys, sorted(keys)
    assert any(k.startswith("profiles/tp") for k in keys) and any(k.startswith("plots/") for k in keys)
    assert not any(k.endswith(".part") for k in keys)
    obj = client.get_object("slaprof-runs", "qwen32b-run/selection.json")
    try:
        selection = Selection.model_validate_json(obj.read())
    finally:
        obj.close()
        obj.release_conn()
    assert res.stdout.strip().splitlines()[:-1] == selection.recommendation
    assert obj.headers.get("Content-Type") == "application/json"


def test_unreachable_s3_is_one_clear_line(tmp_path):
    res = slaprof(
        "profile",
        *QWEN32B_SLA,
        "--out",
        "s3://slaprof-runs/x",
        env={"SLAPROF_S3_ENDPOINT": "127.0.0.1:1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("slaprof: error: S3 endpoint 127.0.0.1:1 is unreachable")
    assert "Traceback" not in res.stderr


def _limit_file_size() -> None:
    # stands in for a full disk: writes past 1500 bytes fail (EFBIG) instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))


def test_failed_write_is_clear_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "run"
    res = slaprof("profile", *QWEN32B_SLA, "--out", str(out), preexec_fn=_limit_file_size)
    assert res.returncode == 2
    assert re.search(r"slaprof: error: cannot write .*plan\.json: File too large", res.stderr), res.stderr
    assert not (out / "plan.json").exists() and not list(out.rglob("*.part"))
    assert (out / "request.json").is_file()  # small enough to be written, and complete


def test_online_without_gpus_is_a_clear_error(tmp_path):
    res = slaprof(
        "profile", *QWEN32B_SLA, "--method", "online", "--out", str(tmp_path / "run"), env={"CUDA_VISIBLE_DEVICES": ""}
    )
    assert res.returncode == 2
    assert "--method online needs local GPUs and none are visible" in res.stderr
    assert (tmp_path / "run" / "plan.json").is_file()


def test_failed_candidates_are_reported_and_exit_1_when_nothing_is_left(tmp_path, tiny_tokenizer):
    """Online on a machine with one (claimed) GPU and no vLLM: tp1's engine cannot start, tp2 needs
    more GPUs than there are. Both are recorded with reasons; with nothing measured, exit code 1."""
    out = tmp_path / "run"
    res = slaprof(
        "profile",
        "--model",
        str(MODELS / "Qwen3-0.6B"),
        "--method",
        "online",
        "--max-num-gpus-per-engine",
        "2",
        "--out",
        str(out),
        env={"CUDA_VISIBLE_DEVICES": "0", "SLAPROF_TOKENIZER": str(tiny_tokenizer)},
    )
    assert res.returncode == 1, res.stderr
    assert "bench tp1: started (GPUs 0)" in res.stderr
    assert "bench tp2: failed: needs 2 GPUs; this machine has 1 visible (0)" in res.stderr
    assert "bench agg-tp2: failed: needs 2 GPUs; this machine has 1 visible (0)" in res.stderr
    assert "slaprof: no recommendation could be made" in res.stderr and "Traceback" not in res.stderr
    tp1 = CandidateProfile.model_validate_json((out / "profiles" / "tp1.json").read_text())
    tp2 = CandidateProfile.model_validate_json((out / "profiles" / "tp2.json").read_text())
    assert tp1.status == "failed" and "vllm" in tp1.reason and tp1.provenance.method == "online"
    assert tp2.status == "failed" and "needs 2 GPUs" in tp2.reason
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert selection.recommendation == [] and {v.candidate_id: v.status for v in selection.verdicts} == {
        "tp1": "failed",
        "tp2": "failed",
        "agg-tp1": "failed",
        "agg-tp2": "failed",
    }
    assert res.stdout.strip() == f"Report: {out / 'report.html'}"


def test_bad_parallel_value(tmp_path):
    res = slaprof("profile", *QWEN32B_SLA, "--out", str(tmp_path / "run"), "--parallel", "0")
    assert res.returncode == 2 and "--parallel 0: must be at least 1" in res.stderr


def test_dry_run_estimates_instead_of_measuring(tmp_path):
    """--dry-run with --method online starts no engine and needs no GPU: every candidate is
    estimated offline, and the run still ends in a selection and a DGD, flagged as a dry run."""
    out = tmp_path / "dry"
    res = slaprof(
        "profile", *QWEN32B_SLA, "--method", "online", "--dry-run", "--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("Suggested ") and "Dry run" in res.stderr
    selection = Selection.model_validate_json((out / "selection.json").read_text())
    assert any(w.startswith("Dry run") for w in selection.warnings)
    profile = CandidateProfile.model_validate_json(next((out / "profiles").glob("*.json")).read_text())
    assert profile.provenance.method == "offline"
    assert (out / "dgd.yaml").is_file()
