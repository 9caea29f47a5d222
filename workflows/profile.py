"""The `slaprof-profile` WorkflowTemplate: the profiling DAG.

Argo concepts: WorkflowTemplate and DAG (https://argo-workflows.readthedocs.io/en/latest/workflow-templates/,
https://argo-workflows.readthedocs.io/en/latest/walk-through/dag/).

    plan ─▶ bench ×N (withParam over plan's candidates; one of three pod shapes by method)
         ─▶ fit ─▶ [choose (suspend) ─▶ pick]   (pick=manual only)
                ─▶ render ─▶ apply              (auto-apply only)
                ─▶ record (history + drift)
    onExit: cleanup (undoes what a failed run applied)

The DAG is built from the step declaration `slaprof.steps.dag.pipeline.STEPS`, which the local runner walks
too: one Hera task per step (per pod shape for bench), wired with `Task.next` by each step's `after`.
Every task is a runner script of `slaprof.workflows.tasks` calling the same step functions as
`slaprof profile`. A failed candidate does not stop the DAG (continueOn); fit reports it.
GPUs are admitted per online bench pod (slaprof.workflows.bench), not per run; every pod meets Pod
Security "restricted" and runs without a Kubernetes API token except apply and cleanup
(slaprof.workflows.security).
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, NoneArchiveStrategy, Parameter, S3Artifact, Script, Suspend, Task, WorkflowTemplate
from hera.workflows.models import (
    ArtifactRepositoryRef,
    ContinueOn,
    LabelValueFrom,
    PodGC,
    TTLStrategy,
    WorkflowMetadata,
)
from hera.workflows.task import TaskResult

from slaprof.steps.dag import pipeline
from slaprof.workflows import security, tasks
from slaprof.workflows.bench import DEADLINE_INPUT, offline_bench, online_bench_main, online_bench_sidecar
from slaprof.workflows.params import (
    ARTIFACT_REPOSITORY_CONFIGMAP,
    ARTIFACT_REPOSITORY_KEY,
    CONTROL_PARAMS,
    PICK_SLOTS,
    REQUEST_DOC_DESCRIPTION,
    REQUEST_PARAMS,
    TEMPLATE_NAME,
    VERSION,
    WorkflowSettings,
)
from slaprof.workflows.scripts import runner_script
from slaprof.workflows.suspend import CHOICE, choose_template

RUN = "{{workflow.name}}"
TITLE = "slaprof profile"
DESCRIPTION = (
    "SLA-driven profile of an LLM deployment: **plan** candidate parallel mappings, **bench** each one, "
    "**fit** the best prefill and decode mappings under the SLA, **render** the DynamoGraphDeployment "
    "(and apply it when `auto-apply` is true)."
)
BENCH_DEADLINE = "bench-deadline-seconds"


def _wp(name: str) -> str:
    return f"{{{{workflow.parameters.{name}}}}}"


def workflow_parameters() -> list[Parameter]:
    """Every workflow parameter, with its description and enum (the UI's submit form)."""
    params = [Parameter(name="request", value="", description=REQUEST_DOC_DESCRIPTION)]
    params += [
        Parameter(name=p.name, value="", description=p.description, enum=list(p.enum) if p.enum else None)
        for p in REQUEST_PARAMS
    ]
    params += [
        Parameter(name=c.name, value=c.value, description=c.description, enum=list(c.enum) if c.enum else None)
        for c in CONTROL_PARAMS
    ]
    return params


def _label_expression(param: str) -> LabelValueFrom:
    """A workflow label from a parameter, made a valid label value (no `/`, at most 63 characters)."""
    raw = f"workflow.parameters['{param}']"
    return LabelValueFrom(
        expression=(f"sprig.trimAll('-_.', sprig.trunc(63, sprig.regexReplaceAll('[^A-Za-z0-9_.-]+', {raw}, '-')))")
    )


# How a task waits for the step before it, by that step's kind (Argo's enhanced depends logic)
AFTER_FAN_OUT = TaskResult.succeeded | TaskResult.failed | TaskResult.errored | TaskResult.skipped  # any outcome
AFTER_SWITCHED = TaskResult.succeeded | TaskResult.skipped | TaskResult.omitted  # ran, or was off
AFTER = TaskResult.succeeded


def _templates(settings: WorkflowSettings) -> dict[str, list[Any]]:
    """Each declared step's templates (bench has one per pod shape, chosen by `when`) and the suspend node."""
    fit_plots = S3Artifact(
        name="plots",
        path=f"{tasks.DEFAULT_OUTPUTS}/artifacts/plots",
        key=RUN + "/plots",
        archive=NoneArchiveStrategy(),
        optional=True,
    )
    return {
        "plan": [runner_script("plan", tasks.plan, settings, timeout="15m", reads_hub=True)],
        "bench": [offline_bench(settings), online_bench_sidecar(settings), online_bench_main(settings)],
        "fit": [runner_script("fit", tasks.fit, settings, cpu="1", memory="2Gi", timeout="1h", outputs=[fit_plots])],
        "choose": [choose_template()],  # made here, so the manifest lists templates in the DAG's order
        "pick": [runner_script("pick", tasks.pick, settings, timeout="10m")],
        "render": [runner_script("render", tasks.render, settings, timeout="15m")],
        "apply": [runner_script("apply", tasks.apply, settings, timeout="2h", deployer=True)],
        "record": [runner_script("record", tasks.record, settings, timeout="15m")],
    }


def _task_settings(name: str, template: Script, done: dict[str, list[Task]]) -> dict[str, Any]:
    """The Argo side of a declared step: its arguments beyond `run`, fan-out and switch."""
    if name == "plan":
        params = ["request", "bench-timeout", *(p.name for p in REQUEST_PARAMS)]
        return {"arguments": {p: _wp(p) for p in params}}
    plan = done["plan"][0] if "plan" in done else None
    if name == "bench":
        assert plan is not None
        method = f"'{plan.get_parameter('method').value}'"
        in_main = f"'{_wp('engine-in-main')}' == 'true'"
        online = template.name != "bench"
        args = {"candidate": "{{item.id}}", "gpus": "{{item.gpus}}", DEADLINE_INPUT: plan.get_parameter(BENCH_DEADLINE)}
        if online:
            args["engine-image"] = plan.get_parameter("engine-image")
        when = {
            "bench": f"{method} != 'online'",
            "bench-online": f"{method} == 'online' && !({in_main})",
            "bench-online-main": f"{method} == 'online' && {in_main}",
        }[template.name or ""]
        return {
            "arguments": args,
            "with_param": plan.get_parameter("candidates"),
            "when": when,
            "continue_on": ContinueOn(failed=True, error=True),
        }
    if name == "pick":
        return {"arguments": {CHOICE: done["choose"][0].get_parameter(CHOICE)}}
    if name == "record":
        return {"arguments": {"drift-threshold": _wp("drift-threshold")}}
    if name == "apply":
        return {"arguments": {"timeout": _wp("apply-timeout")}}
    return {}


def _switch(step: pipeline.Step, done: dict[str, list[Task]]) -> str:
    """A declared switch as an Argo `when`: pick=manual, or the request's auto-apply (plan's output)."""
    if step.when == "pick":
        return f"'{_wp('pick')}' == 'manual'"
    return f"'{done['plan'][0].get_parameter('auto-apply').value}' == 'true'"


def _choose(choose_t: Suspend, fit: Task, when: str) -> Task:
    """The suspend node a person resumes with a choice, before a step that asks one."""
    return Task(
        name="choose",
        template=choose_t,
        when=when,
        arguments={CHOICE: fit.get_parameter(f"{CHOICE}-1")}
        | {f"{CHOICE}-{i}": fit.get_parameter(f"{CHOICE}-{i}") for i in range(1, PICK_SLOTS + 1)},
    )


def _dag(templates: dict[str, list[Any]]) -> None:
    """One task per declared step (per pod shape for bench), wired by the steps' `after`."""
    done: dict[str, list[Task]] = {}
    for step in pipeline.STEPS:
        if step.asks_person:  # the switch goes on the suspend node: without it the step is Omitted
            done["choose"] = [_choose(templates["choose"][0], done["fit"][0], _switch(step, done))]
        made = []
        for template in templates[step.name]:
            settings = _task_settings(step.name, template, done)
            arguments = {"run": RUN, **settings.pop("arguments", {})}
            if step.when and not step.asks_person:
                settings["when"] = _switch(step, done)
            made.append(Task(name=template.name or step.name, template=template, arguments=arguments, **settings))
        firsts = done["choose"] if step.asks_person else made
        for before in step.after:
            kind = pipeline.step(before)
            on = AFTER_FAN_OUT if kind.fans_out else AFTER_SWITCHED if kind.when else AFTER
            for task in firsts:
                for pred in done[before]:
                    pred.next(task, on=on)
        if step.asks_person:
            for task in made:
                done["choose"][0].next(task, on=AFTER)
        done[step.name] = made


def profile_template(settings: WorkflowSettings | None = None) -> WorkflowTemplate:
    settings = settings or WorkflowSettings()
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        labels={"app.kubernetes.io/name": "slaprof", "app.kubernetes.io/version": VERSION},
        annotations={"workflows.argoproj.io/title": TITLE, "workflows.argoproj.io/description": DESCRIPTION},
        entrypoint="profile",
        on_exit="cleanup",
        arguments=workflow_parameters(),
        service_account_name=settings.service_account,
        automount_service_account_token=False,
        executor=security.executor(settings),
        security_context=security.pod_security_context(),
        active_deadline_seconds=settings.active_deadline_seconds,
        artifact_repository_ref=ArtifactRepositoryRef(
            config_map=ARTIFACT_REPOSITORY_CONFIGMAP, key=ARTIFACT_REPOSITORY_KEY
        ),
        workflow_metadata=WorkflowMetadata(
            annotations={"workflows.argoproj.io/title": TITLE, "workflows.argoproj.io/description": DESCRIPTION},
            labels={"app.kubernetes.io/name": "slaprof"},
            labels_from={
                "slaprof.io/model": _label_expression("model"),
                "slaprof.io/backend": _label_expression("backend"),
                "slaprof.io/method": _label_expression("method"),
            },
        ),
        pod_gc=PodGC(strategy="OnPodSuccess", delete_delay_duration="10m"),
        ttl_strategy=TTLStrategy(seconds_after_success=7 * 86400, seconds_after_failure=14 * 86400),
        archive_logs=True,
    ) as template:
        templates = _templates(settings)
        runner_script("cleanup", tasks.cleanup, settings, timeout="10m", deployer=True)
        with DAG(name="profile"):
            _dag(templates)
    return template
