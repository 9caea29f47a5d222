"""The generated Argo manifests: CRD schema (strict), DAG wiring, pod shapes, golden files, chart copies."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from slaprof.workflows.params import (
    CONTROL_PARAMS,
    PICK_SLOTS,
    REQUEST_PARAMS,
    RUN_LABEL,
    TEMPLATE_NAME,
    duration_seconds,
)
from slaprof.workflows.render import CRON_WORKFLOW_FILE, WORKFLOW_TEMPLATE_FILE, manifests, to_yaml
from tests.conftest import ROOT
from tests.plugins.argo_schema import argo_errors, assert_valid_argo

CHART_FILES = ROOT / "charts" / "slaprof" / "files"

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("SLAPROF_UPDATE_GOLDEN") == "1"
BENCHES = ("bench", "bench-online", "bench-online-main")


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return manifests()


@pytest.fixture(scope="module")
def wt(docs) -> dict:
    return docs[WORKFLOW_TEMPLATE_FILE]


def _templates(wt: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def _tasks(wt: dict) -> dict[str, dict]:
    return {t["name"]: t for t in _templates(wt)["profile"]["dag"]["tasks"]}


def _args(task: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in (task.get("arguments") or {}).get("parameters", [])}


def _inputs(template: dict) -> dict[str, dict]:
    return {p["name"]: p for p in (template.get("inputs") or {}).get("parameters", [])}


def _outputs(template: dict) -> dict[str, dict]:
    return {p["name"]: p for p in (template.get("outputs") or {}).get("parameters", [])}


# ---------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [WORKFLOW_TEMPLATE_FILE, CRON_WORKFLOW_FILE])
def test_manifest_validates_against_argo_crd_strictly(docs, name):
    assert_valid_argo(docs[name])


def test_strict_schema_catches_typos_and_bad_enums(wt):
    broken = json.loads(json.dumps(wt))
    broken["spec"]["serviceAcountName"] = "x"
    broken["spec"]["templates"][0]["retryStrategy"]["retryPolicy"] = "Sometimes"
    errors = argo_errors(broken)
    assert any("serviceAcountName" in e for e in errors), errors
    assert any("retryPolicy" in e and "Sometimes" in e for e in errors), errors


# ---------------------------------------------------------------------------
# DAG wiring
# ---------------------------------------------------------------------------
def test_every_reference_resolves(wt):
    """Each {{workflow.parameters.X}}, {{tasks.T.outputs.parameters.Y}} and {{inputs.parameters.Z}} names something that exists."""
    templates, tasks = _templates(wt), _tasks(wt)
    workflow_params = {p["name"] for p in wt["spec"]["arguments"]["parameters"]}
    text = json.dumps(wt)
    for name in re.findall(r"\{\{workflow\.parameters\.([\w-]+)\}\}", text):
        assert name in workflow_params, name
    for task_name, task in tasks.items():
        template = templates[task["template"]]
        for arg, value in _args(task).items():
            assert arg in _inputs(template), f"{task_name}: argument {arg} is not an input of {template['name']}"
            for ref_task, out in re.findall(r"\{\{tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)\}\}", value):
                assert out in _outputs(templates[tasks[ref_task]["template"]]), (
                    f"{task_name}: {ref_task} has no output {out}"
                )
        for name, param in _inputs(template).items():
            assert "default" in param or name in _args(task), f"{task_name}: input {name} is never supplied"
    for template in templates.values():
        for name in re.findall(r"\{\{inputs\.parameters\.([\w-]+)\}\}", json.dumps(template)):
            assert name in _inputs(template), f"{template['name']} uses undeclared input {name}"


def test_bench_fans_out_over_plan_candidates_and_tolerates_failures(wt):
    tasks = _tasks(wt)
    for name in BENCHES:
        task = tasks[name]
        assert task["withParam"] == "{{tasks.plan.outputs.parameters.candidates}}"
        assert task["depends"] == "plan.Succeeded"
        assert _args(task)["candidate"] == "{{item.id}}" and _args(task)["gpus"] == "{{item.gpus}}"
        assert _args(task)["deadline-seconds"] == "{{tasks.plan.outputs.parameters.bench-deadline-seconds}}"
        assert task["continueOn"] == {"failed": True, "error": True}
    assert "!= 'online'" in tasks["bench"]["when"]
    assert "== 'online'" in tasks["bench-online"]["when"] and "== 'online'" in tasks["bench-online-main"]["when"]
    fit = tasks["fit"]
    for name in BENCHES:  # fit waits for every bench group and runs even when candidates failed
        assert f"{name}.Failed" in fit["depends"] and f"{name}.Succeeded" in fit["depends"]
        assert f"{name}.Skipped" in fit["depends"]
    assert "when" not in fit  # a dry run is estimated offline, so fit always has profiles


def test_pick_render_apply_record_order(wt):
    tasks = _tasks(wt)
    assert tasks["choose"]["depends"] == "fit.Succeeded" and "'manual'" in tasks["choose"]["when"]
    assert tasks["pick"]["depends"] == "choose.Succeeded"
    assert _args(tasks["pick"])["choice"] == "{{tasks.choose.outputs.parameters.choice}}"
    for name in ("render", "record"):
        assert tasks[name]["depends"] == "fit.Succeeded && (pick.Succeeded || pick.Skipped || pick.Omitted)"
    assert tasks["apply"]["depends"] == "render.Succeeded"
    assert tasks["apply"]["when"] == "'{{tasks.plan.outputs.parameters.auto-apply}}' == 'true'"
    assert _args(tasks["record"]) == {
        "run": "{{workflow.name}}",
        "drift-threshold": "{{workflow.parameters.drift-threshold}}",
    }


def test_suspend_node_offers_fit_choices_as_an_enum(wt):
    choose = _templates(wt)["choose"]
    slots = [f"{{{{inputs.parameters.choice-{i}}}}}" for i in range(1, PICK_SLOTS + 1)]
    assert _inputs(choose)["choice"]["enum"] == slots
    assert _outputs(choose)["choice"]["valueFrom"]["supplied"] == {}
    args = _args(_tasks(wt)["choose"])
    assert args["choice"] == "{{tasks.fit.outputs.parameters.choice-1}}"  # the recommendation, preselected
    fit_outputs = _outputs(_templates(wt)["fit"])
    for i in range(1, PICK_SLOTS + 1):
        assert f"choice-{i}" in fit_outputs


def test_the_pick_waits_pick_timeout_then_takes_fits_recommendation(wt):
    """A suspend without a duration waits until the run's deadline kills it; with one, Argo resumes it
    with the output's default (auto), which `pick` treats as fit's own choice."""
    from slaprof.steps.fitting.pick import parse_choice

    choose = _templates(wt)["choose"]
    params = {p["name"]: p for p in wt["spec"]["arguments"]["parameters"]}
    assert choose["suspend"]["duration"] == "{{workflow.parameters.pick-timeout}}"
    wait = duration_seconds(params["pick-timeout"]["value"], "pick-timeout")
    assert 0 < wait < wt["spec"]["activeDeadlineSeconds"]
    default = _outputs(choose)["choice"]["valueFrom"]["default"]
    assert parse_choice(default) is None  # `pick` keeps fit's selection


def test_fit_exposes_the_recommendation_as_described_output_parameters(wt):
    outputs = _outputs(_templates(wt)["fit"])
    for name in (
        "prefill",
        "decode",
        "ttft-ms",
        "itl-ms",
        "prefill-thpt-per-gpu",
        "decode-thpt-per-gpu",
        "meets-sla",
        "recommendation",
        "choices",
    ):
        assert outputs[name]["description"], name
        assert outputs[name]["valueFrom"]["path"] == f"/tmp/hera-outputs/parameters/{name}"


# ---------------------------------------------------------------------------
# pods
# ---------------------------------------------------------------------------
def _patched(template: dict, gpus: str = "4") -> dict:
    """The podSpecPatch as Argo would see it after substituting the default parameter values."""
    text = template["podSpecPatch"].replace("{{inputs.parameters.gpus}}", gpus)
    defaults = {c.name: c.value for c in CONTROL_PARAMS}
    for name, value in defaults.items():
        text = text.replace(f"{{{{workflow.parameters.{name}}}}}", value)
    assert "{{" not in text, text
    return json.loads(text)


def test_gpu_count_comes_through_pod_spec_patch(wt):
    templates = _templates(wt)
    sidecar = _patched(templates["bench-online"])
    assert sidecar["containers"] == [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    assert sidecar["tolerations"][0]["key"] == "nvidia.com/gpu" and sidecar["nodeSelector"] == {}
    assert templates["bench-online"]["sidecars"][0]["name"] == "engine"
    assert templates["bench-online"]["sidecars"][0]["image"] == "{{inputs.parameters.engine-image}}"
    main = _patched(templates["bench-online-main"], "8")
    assert main["containers"][0] == {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "8"}}}
    assert templates["bench-online-main"]["script"]["image"] == "{{inputs.parameters.engine-image}}"
    offline = templates["bench"]
    assert "podSpecPatch" not in offline and "sidecars" not in offline
    assert "limits" not in offline["script"]["resources"]  # no GPU for estimates and simulated engines


def _attempt_seconds(template: dict, defaults: dict[str, str]) -> int:
    """The most one attempt of a pod template may take: its timeout, or its activeDeadlineSeconds
    resolved as Argo would (bench: plan turns the bench-timeout parameter into seconds)."""
    if template.get("timeout"):
        return duration_seconds(template["timeout"], "timeout")
    deadline = str(template["activeDeadlineSeconds"])
    if deadline == "{{inputs.parameters.deadline-seconds}}":
        return duration_seconds(defaults["bench-timeout"], "bench-timeout")
    return int(deadline)


def _retry_window(retry: dict, attempt_s: int) -> int:
    """Seconds the attempts and the waits between them can take: (limit + 1) attempts."""
    backoff = retry.get("backoff") or {}
    base = duration_seconds(str(backoff.get("duration", "0s")), "duration") if backoff.get("duration") else 0
    cap = duration_seconds(backoff["cap"], "cap") if backoff.get("cap") else None
    waits = [base * int(backoff.get("factor", 1)) ** i for i in range(int(retry["limit"]))]
    return (int(retry["limit"]) + 1) * attempt_s + sum(min(w, cap) if cap else w for w in waits)


def test_retries_are_never_cut_short_by_a_deadline_shorter_than_the_attempts(wt):
    """Argo counts backoff.maxDuration from the first attempt's start and gives later attempts that
    deadline: any maxDuration shorter than the attempts may take stops retries of long steps (and
    kills a retry) early. Every pod template retries transient errors, the exit handler included."""
    defaults = {c.name: c.value for c in CONTROL_PARAMS}
    pods = {name: t for name, t in _templates(wt).items() if "script" in t or "container" in t}
    assert {"plan", *BENCHES, "fit", "apply", "cleanup"} <= set(pods)
    for name, template in pods.items():
        retry = template.get("retryStrategy")
        assert retry, f"{name} has no retryStrategy"
        assert retry["expression"] == "lastRetry.status == 'Error' || lastRetry.exitCode == '75'", name
        assert int(retry["limit"]) >= 1, name
        attempt = _attempt_seconds(template, defaults)
        assert attempt > 0, name
        max_duration = (retry.get("backoff") or {}).get("maxDuration")
        if max_duration is not None:
            window = _retry_window(retry, attempt)
            assert duration_seconds(max_duration, "maxDuration") >= window, (
                f"{name}: maxDuration {max_duration} ends retries before {retry['limit']} retries of "
                f"{attempt} s each can run ({window} s)"
            )


def test_bench_deadlines_count_running_time_only(wt):
    """`timeout` (and pendingTimeout) count time a node waits, for a semaphore or for GPUs; a bench
    pod's deadline is activeDeadlineSeconds, which counts from the pod's start on a node."""
    templates = _templates(wt)
    for name in BENCHES:
        assert "timeout" not in templates[name] and "pendingTimeout" not in templates[name], name
        assert templates[name]["activeDeadlineSeconds"] == "{{inputs.parameters.deadline-seconds}}"
    assert _outputs(templates["plan"])["bench-deadline-seconds"]
    assert _args(_tasks(wt)["plan"])["bench-timeout"] == "{{workflow.parameters.bench-timeout}}"
    for name, template in templates.items():
        if name not in BENCHES and "script" in template:
            assert template.get("timeout"), name
    assert wt["spec"]["activeDeadlineSeconds"] > 0


def _held_semaphores(wt: dict, template: str) -> list[dict]:
    """Semaphores held while a node of `template` runs: the workflow's own (held for the whole run),
    those of the DAG template it runs in, and its own."""
    spec, templates = wt["spec"], _templates(wt)
    held = []
    for source in (spec, templates["profile"], templates[template]):
        held += [s["configMapKeyRef"] for s in (source.get("synchronization") or {}).get("semaphores", [])]
    return held


def test_gpu_semaphores_are_held_by_online_bench_pods_only(wt):
    """A run waiting at the pick, applying or fitting holds no GPU semaphore; offline and simulate
    runs (the `bench` template) take none; an online bench pod takes one slot for its engine size."""
    templates = _templates(wt)
    for name in templates:
        held = _held_semaphores(wt, name)
        if name in ("bench-online", "bench-online-main"):
            assert held == [{"name": "slaprof-semaphores", "key": "gpus-{{inputs.parameters.gpus}}"}], name
            assert "gpus" in _inputs(templates[name])
        else:
            assert held == [], f"{name} holds {held}"
    assert "synchronization" not in wt["spec"]


def test_exit_handler_and_artifact_repository(wt):
    spec = wt["spec"]
    assert spec["onExit"] == "cleanup"
    cleanup = _inputs(_templates(wt)["cleanup"])
    assert cleanup["status"]["default"] == "{{workflow.status}}" and cleanup["run"]["default"] == "{{workflow.name}}"
    assert spec["artifactRepositoryRef"]["configMap"] and spec["artifactRepositoryRef"]["key"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_online_bench_pods_request_resources_cache_models_and_read_the_hub_with_a_token(wt):
    templates = _templates(wt)
    sidecar = templates["bench-online"]["sidecars"][0]
    for name, engine in (("bench-online", sidecar), ("bench-online-main", templates["bench-online-main"]["script"])):
        requests = engine["resources"]["requests"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(requests), name
        assert _env(engine)["HF_HOME"]["value"] == "/opt/model-cache"
        assert any(m["mountPath"] == "/opt/model-cache" and m["name"] == "model-cache" for m in engine["volumeMounts"])
        assert any(v["name"] == "model-cache" for v in templates[name]["volumes"])
    readers = [templates[n]["script"] for n in ("plan", *BENCHES)] + [sidecar]
    for container in readers:
        token = _env(container)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token == {"name": "hf-token-secret", "key": "HF_TOKEN", "optional": True}
    for name in ("fit", "render", "apply", "record", "cleanup"):  # nothing there reads the Hub
        assert "HF_TOKEN" not in _env(templates[name]["script"]), name


def test_only_apply_and_cleanup_get_a_kubernetes_api_token(wt):
    from tests.plugins.pod_security import restricted_violations, workflow_pods

    spec = wt["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["executor"]["serviceAccountName"] == spec["serviceAccountName"] == "slaprof"
    pods = workflow_pods(wt)
    with_token = {name: pod["serviceAccountName"] for name, pod in pods.items() if pod["automountServiceAccountToken"]}
    assert with_token == {"apply": "slaprof-deployer", "cleanup": "slaprof-deployer"}
    problems = {name: restricted_violations(pod) for name, pod in pods.items()}
    assert not any(problems.values()), problems


def test_runner_scripts_point_at_importable_functions(wt):
    for template in _templates(wt).values():
        script = template.get("script")
        if not script:
            continue
        assert script["source"] == "{{inputs.parameters}}"
        assert script["args"][:3] == ["-m", "hera.workflows.runner", "-e"]
        module, function = script["args"][3].split(":")
        fn = getattr(importlib.import_module(module), function)
        assert inspect.isfunction(fn), script["args"][3]
        assert {"configMapRef": {"name": "slaprof-s3"}} in script["envFrom"]
        assert template["metadata"]["labels"][RUN_LABEL] == "{{workflow.name}}"


def test_artifacts_are_previewable_and_keyed_by_run(wt):
    keys = []
    for template in _templates(wt).values():
        for art in (template.get("outputs") or {}).get("artifacts", []):
            assert art["archive"] == {"none": {}}, art["name"]
            assert art["s3"]["key"].startswith("{{workflow.name}}/"), art
            assert art["optional"] is True
            keys.append(art["s3"]["key"])
    assert "{{workflow.name}}/profiles/{{inputs.parameters.candidate}}.json" in keys
    for key in ("plan.json", "selection.json", "report.html", "dgd.yaml", "drift.json", "plots"):
        assert "{{workflow.name}}/" + key in keys, key
    assert all(re.search(r"\.(json|html|yaml)$", k) for k in keys if not k.endswith("/plots"))


def test_parameters_are_described_with_enums_where_values_are_fixed(wt):
    params = {p["name"]: p for p in wt["spec"]["arguments"]["parameters"]}
    expected = {"request"} | {p.name for p in REQUEST_PARAMS} | {c.name for c in CONTROL_PARAMS}
    assert set(params) == expected
    for p in params.values():
        assert len(p["description"]) > 15, p["name"]
    assert params["backend"]["enum"] == ["", "vllm", "sglang", "trtllm"]
    assert params["method"]["enum"] == ["", "offline", "simulate", "online"]
    assert params["pick"]["enum"] == ["auto", "manual"] and params["pick"]["value"] == "auto"
    assert "h200_sxm" in params["gpu"]["enum"]
    meta = wt["spec"]["workflowMetadata"]
    assert meta["annotations"]["workflows.argoproj.io/title"]
    assert {"slaprof.io/model", "slaprof.io/backend"} <= set(meta["labelsFrom"])


def test_cron_workflow(docs):
    cron = docs[CRON_WORKFLOW_FILE]
    spec = cron["spec"]
    assert cron["metadata"]["name"] == "slaprof-reprofile"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedules"] and spec["timezone"]
    assert spec["suspend"] is True and "suspend" not in spec["workflowSpec"]
    assert spec["successfulJobsHistoryLimit"] and spec["failedJobsHistoryLimit"]
    assert spec["workflowSpec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}
    args = {p["name"]: p["value"] for p in spec["workflowSpec"]["arguments"]["parameters"]}
    assert args["pick"] == "auto" and float(args["drift-threshold"]) > 0


# ---------------------------------------------------------------------------
# golden files and the chart's copies
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [WORKFLOW_TEMPLATE_FILE, CRON_WORKFLOW_FILE])
def test_golden_yaml(docs, name):
    """Regenerate with SLAPROF_UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    text = to_yaml(docs[name])
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run SLAPROF_UPDATE_GOLDEN=1 pytest {__file__}"
    assert path.read_text() == text, (
        f"{name} differs from {path}; if the change is intended, run SLAPROF_UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
    )
    assert yaml.safe_load(text) == docs[name]


@pytest.mark.parametrize("name", [WORKFLOW_TEMPLATE_FILE, CRON_WORKFLOW_FILE])
def test_chart_files_are_current(docs, name):
    path = CHART_FILES / name
    assert path.is_file(), f"{path} is missing: run `slaprof workflow render --out charts/slaprof/files`"
    assert path.read_text() == to_yaml(docs[name]), (
        f"{path} is stale: run `slaprof workflow render --out charts/slaprof/files`"
    )


def test_cli_render_writes_only_under_out(tmp_path, capsys):
    """`slaprof workflow render --out DIR` writes its two files into DIR and touches nothing else,
    not even the chart's copies in this checkout."""
    from slaprof.steps.cli.main import main

    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in CHART_FILES.iterdir()}
    out = tmp_path / "cli"
    assert main(["workflow", "render", "--out", str(out), "--image", "registry.local/slaprof:dev"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / WORKFLOW_TEMPLATE_FILE), str(out / CRON_WORKFLOW_FILE)]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [WORKFLOW_TEMPLATE_FILE, CRON_WORKFLOW_FILE]
    )
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in CHART_FILES.iterdir()} == before
    doc = yaml.safe_load((out / WORKFLOW_TEMPLATE_FILE).read_text())
    images = {t["script"]["image"] for t in doc["spec"]["templates"] if "script" in t}
    assert images == {"registry.local/slaprof:dev", "{{inputs.parameters.engine-image}}"}
