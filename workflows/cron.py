"""The `slaprof-reprofile` CronWorkflow: re-profile on a schedule and report drift.

Argo concept: CronWorkflow (https://argo-workflows.readthedocs.io/en/latest/cron-workflows/).
Each run is a `slaprof-profile` run with pick=auto; its `record` task compares the result with
the previous one of the same model, backend and GPU and fails the run when the change exceeds
`drift-threshold` percent. `concurrencyPolicy: Forbid` skips a tick while a run is still going
(the template's semaphore also queues it behind manual runs). Shipped suspended: set at least
`model` (or `request`) first.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow
from hera.workflows.models import WorkflowMetadata, WorkflowTemplateRef

from slaprof.workflows.params import CRON_NAME, TEMPLATE_NAME, VERSION, WorkflowSettings

DEFAULT_DRIFT_THRESHOLD = "10"


def reprofile_cron(settings: WorkflowSettings | None = None) -> CronWorkflow:
    settings = settings or WorkflowSettings()
    return CronWorkflow(
        name=CRON_NAME,
        labels={"app.kubernetes.io/name": "slaprof", "app.kubernetes.io/version": VERSION},
        annotations={
            "workflows.argoproj.io/title": "slaprof re-profile",
            "workflows.argoproj.io/description": "Scheduled re-profile; fails when results drift beyond `drift-threshold` percent.",
        },
        schedules=list(settings.cron_schedules),
        timezone=settings.cron_timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=3600,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=5,
        cron_suspend=settings.cron_suspend,
        workflow_template_ref=WorkflowTemplateRef(name=TEMPLATE_NAME),
        workflow_metadata=WorkflowMetadata(labels={"slaprof.io/trigger": "cron"}),
        arguments={"model": "", "request": "", "pick": "auto", "drift-threshold": DEFAULT_DRIFT_THRESHOLD},
    )
