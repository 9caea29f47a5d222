"""The `slaprof-profile` WorkflowTemplate: the profiling DAG.

Argo concepts: WorkflowTemplate and DAG (https://argo-workflows.readthedocs.io/en/latest/workflow-templates/,
https://argo-workflows.readthedocs.io/en/latest/walk-through/dag/).

    plan ─▶ bench ×N (withParam over plan's candidates; one of three pod shapes by method)
         ─▶ fit ─▶ [choose (suspend) ─▶ pick]   (pick=manual only)
                ─▶ render ─▶ apply              (auto-apply only)
                ─▶ record (history + drift)
    onExit: cleanup (undoes what a failed run applied)

Every task is a runner script of `workflows.tasks` calling the same step functions as
`slaprof profile`. A failed candidate does not stop the DAG (continueOn); fit reports it.
GPUs are admitted per online bench pod (workflows.bench), not per run; every pod meets Pod
Security "restricted" and runs without a Kubernetes API token except apply and cleanup
(workflows.security).
"""

from __future__ import annotations

from hera.workflows import DAG, NoneArchiveStrategy, Parameter, S3Artifact, Task, WorkflowTemplate
from hera.workflows.models import (
    ArtifactRepositoryRef,
    ContinueOn,
    LabelValueFrom,
    PodGC,
    TTLStrategy,
    WorkflowMetadata,
)

from workflows import security, tasks
from workflows.bench import DEADLINE_INPUT, offline_bench, online_bench_main, online_bench_sidecar
from workflows.params import (
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
from workflows.scripts import runner_script
from workflows.suspend import choose_template

RUN = "{{workflow.name}}"
TITLE = "slaprof profile"
DESCRIPTION = (
    "SLA-driven profile of an LLM deployment: **plan** candidate parallel mappings, **bench** each one, "
    "**fit** the best prefill and decode mappings under the SLA, **render** the DynamoGraphDeployment "
    "(and apply it when `auto-apply` is true)."
)
BENCH_TASKS = ("bench", "bench-online", "bench-online-main")


def _wp(name: str) -> str:
    return f"{{{{workflow.parameters.{name}}}}}"


def _plan_out(name: str) -> str:
    return f"{{{{tasks.plan.outputs.parameters.{name}}}}}"


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


def _after_bench() -> str:
    """fit runs once every bench group is over, whatever happened to single candidates."""
    return " && ".join(f"({t}.Succeeded || {t}.Failed || {t}.Errored || {t}.Skipped)" for t in BENCH_TASKS)


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
        plan_t = runner_script("plan", tasks.plan, settings, timeout="15m", reads_hub=True)
        benches = {
            "bench": offline_bench(settings),
            "bench-online": online_bench_sidecar(settings),
            "bench-online-main": online_bench_main(settings),
        }
        fit_t = runner_script(
            "fit",
            tasks.fit,
            settings,
            cpu="1",
            memory="2Gi",
            timeout="1h",
            outputs=[
                S3Artifact(
                    name="plots",
                    path=f"{tasks.DEFAULT_OUTPUTS}/artifacts/plots",
                    key=RUN + "/plots",
                    archive=NoneArchiveStrategy(),
                    optional=True,
                )
            ],
        )
        choose_t = choose_template()
        pick_t = runner_script("pick", tasks.pick, settings, timeout="10m")
        render_t = runner_script("render", tasks.render, settings, timeout="15m")
        apply_t = runner_script("apply", tasks.apply, settings, timeout="2h", deployer=True)
        record_t = runner_script("record", tasks.record, settings, timeout="15m")
        runner_script("cleanup", tasks.cleanup, settings, timeout="10m", deployer=True)

        with DAG(name="profile"):
            Task(
                name="plan",
                template=plan_t,
                arguments={
                    "run": RUN,
                    "request": _wp("request"),
                    "bench-timeout": _wp("bench-timeout"),
                    **{p.name: _wp(p.name) for p in REQUEST_PARAMS},
                },
            )
            method = f"'{_plan_out('method')}'"
            in_main = f"'{_wp('engine-in-main')}' == 'true'"
            conditions = {
                "bench": f"{method} != 'online'",
                "bench-online": f"{method} == 'online' && !({in_main})",
                "bench-online-main": f"{method} == 'online' && {in_main}",
            }
            for name, script in benches.items():
                args = {
                    "run": RUN,
                    "candidate": "{{item.id}}",
                    "gpus": "{{item.gpus}}",
                    DEADLINE_INPUT: _plan_out("bench-deadline-seconds"),
                }
                if name != "bench":
                    args["engine-image"] = _plan_out("engine-image")
                Task(
                    name=name,
                    template=script,
                    arguments=args,
                    with_param=_plan_out("candidates"),
                    when=conditions[name],
                    continue_on=ContinueOn(failed=True, error=True),
                    depends="plan",
                )
            Task(name="fit", template=fit_t, arguments={"run": RUN}, depends=_after_bench())
            Task(
                name="choose",
                template=choose_t,
                depends="fit.Succeeded",
                when=f"'{_wp('pick')}' == 'manual'",
                arguments={
                    "choice": "{{tasks.fit.outputs.parameters.choice-1}}",
                    **{
                        f"choice-{i}": f"{{{{tasks.fit.outputs.parameters.choice-{i}}}}}"
                        for i in range(1, PICK_SLOTS + 1)
                    },
                },
            )
            Task(
                name="pick",
                template=pick_t,
                depends="choose.Succeeded",
                arguments={"run": RUN, "choice": "{{tasks.choose.outputs.parameters.choice}}"},
            )
            picked = "fit.Succeeded && (pick.Succeeded || pick.Skipped || pick.Omitted)"
            Task(name="render", template=render_t, arguments={"run": RUN}, depends=picked)
            Task(
                name="record",
                template=record_t,
                depends=picked,
                arguments={
                    "run": RUN,
                    "history-key": _plan_out("history-key"),
                    "drift-threshold": _wp("drift-threshold"),
                },
            )
            Task(
                name="apply",
                template=apply_t,
                depends="render.Succeeded",
                when=f"'{_plan_out('auto-apply')}' == 'true'",
                arguments={"run": RUN, "timeout": _wp("apply-timeout")},
            )
    return template
