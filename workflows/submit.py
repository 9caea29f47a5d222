"""Submitting a run: a Workflow that references the `slaprof-profile` WorkflowTemplate.

Argo concept: `workflowTemplateRef` (https://argo-workflows.readthedocs.io/en/latest/workflow-templates/#create-workflow-from-workflowtemplate-spec),
created through the Argo Server API (`POST /api/v1/workflows/{namespace}`) with Hera's
WorkflowsService. The request travels whole in the `request` parameter (validated here first, so
a typo fails on the laptop, not in a pod) and its common fields as separate parameters, which the
UI shows in the run's summary.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hera.workflows.models import (
    Arguments,
    ObjectMeta,
    Parameter,
    Workflow,
    WorkflowCreateRequest,
    WorkflowSpec,
    WorkflowTemplateRef,
)

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.request import ProfileRequest
from slaprof.workflows.params import AUTO_CHOICE, TEMPLATE_NAME, parameter_values


@dataclass
class ArgoServer:
    url: str  # scheme://host:port[/base-href]
    token: str | None = None
    namespace: str = "argo"
    verify_ssl: bool = True

    @classmethod
    def from_env(cls, url: str | None, namespace: str | None, insecure: bool | None) -> ArgoServer:
        """Flags first, then the argo CLI's environment (ARGO_SERVER, ARGO_NAMESPACE, ARGO_SECURE,
        ARGO_INSECURE_SKIP_VERIFY, ARGO_BASE_HREF). The token comes from ARGO_TOKEN only: a token
        on the command line would be visible to every user of the machine (ps) and in shell history."""
        url = url or os.environ.get("ARGO_SERVER", "")
        if not url:
            raise UserError("no Argo Server given: pass --argo-server https://HOST:2746 or set ARGO_SERVER")
        if "://" not in url:
            secure = os.environ.get("ARGO_SECURE", "true").lower() != "false"
            url = ("https://" if secure else "http://") + url
            base = os.environ.get("ARGO_BASE_HREF", "").strip("/")
            url = f"{url.rstrip('/')}/{base}" if base else url
        if not re.match(r"^https?://[^/]+", url):
            raise UserError(f"--argo-server {url!r} is not an http(s) URL; expected e.g. https://argo.example.com:2746")
        if insecure is None:
            insecure = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "false").lower() == "true"
        return cls(
            url=url.rstrip("/"),
            token=os.environ.get("ARGO_TOKEN") or None,
            namespace=namespace or os.environ.get("ARGO_NAMESPACE") or "argo",
            verify_ssl=not insecure,
        )

    def ui_link(self, name: str) -> str:
        return f"{self.url}/workflows/{quote(self.namespace)}/{quote(name)}"


def _name_prefix(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-")[:40].strip("-")
    return f"slaprof-{slug}-" if slug else "slaprof-"


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")


def workflow_for(
    request: ProfileRequest,
    pick: str = AUTO_CHOICE,
    drift_threshold: float | None = None,
    labels: dict[str, str] | None = None,
) -> Workflow:
    """The Workflow object `slaprof submit` creates for `request`."""
    if pick not in (AUTO_CHOICE, "manual"):
        raise UserError(f"--pick {pick!r} is not allowed; use auto or manual")
    params: dict[str, str] = {
        "request": request.model_dump_json(exclude_none=True),
        **parameter_values(request),
        "pick": pick,
    }
    if drift_threshold is not None:
        params["drift-threshold"] = f"{drift_threshold:g}"
    title = f"{request.model} on {request.hardware.gpu} ({request.backend}, {request.method})"
    sla = request.sla
    return Workflow(
        api_version="argoproj.io/v1alpha1",
        kind="Workflow",
        metadata=ObjectMeta(
            generate_name=_name_prefix(request.model),
            labels={
                "app.kubernetes.io/name": "slaprof",
                "slaprof.io/model": _label(request.model),
                "slaprof.io/backend": request.backend,
                "slaprof.io/method": request.method,
                **(labels or {}),
            },
            annotations={
                "workflows.argoproj.io/title": title,
                "workflows.argoproj.io/description": f"ISL {sla.isl}, OSL {sla.osl}, TTFT ≤ {sla.ttft_ms:g} ms, ITL ≤ {sla.itl_ms:g} ms",
            },
        ),
        spec=WorkflowSpec(
            workflow_template_ref=WorkflowTemplateRef(name=TEMPLATE_NAME),
            arguments=Arguments(parameters=[Parameter(name=k, value=v) for k, v in params.items()]),
        ),
    )


def submit(workflow: Workflow, server: ArgoServer) -> str:
    """Create `workflow` on the Argo Server; returns the name the server gave it."""
    from hera.exceptions import HeraException
    from hera.workflows.service import WorkflowsService
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import SSLError, Timeout

    service = WorkflowsService(
        host=server.url + "/", token=server.token, verify_ssl=server.verify_ssl, namespace=server.namespace
    )
    try:
        created = service.create_workflow(WorkflowCreateRequest(workflow=workflow), namespace=server.namespace)
    except SSLError:
        raise UserError(
            f"TLS verification of {server.url} failed; pass --insecure-skip-verify for a self-signed certificate"
        ) from None
    except (RequestsConnectionError, Timeout) as exc:
        raise UserError(
            f"cannot reach the Argo Server at {server.url} ({type(exc).__name__}); check --argo-server "
            "and that the server is port-forwarded or exposed"
        ) from None
    except HeraException as exc:
        raise UserError(_explain(exc, server)) from None
    name = created.metadata.name if created.metadata else None
    if not name:
        raise UserError(f"the Argo Server at {server.url} accepted the workflow but returned no name")
    return name


def _explain(exc: Exception, server: ArgoServer) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    kind = type(exc).__name__
    if kind == "Unauthorized":
        return f"the Argo Server at {server.url} refused the token ({text}); set ARGO_TOKEN to a valid one"
    if kind == "Forbidden":
        return (
            f"not allowed to create workflows in namespace {server.namespace!r} ({text}); "
            "use --workflow-namespace or ask for RBAC on workflows.argoproj.io"
        )
    if kind == "NotFound":
        return (
            f"{server.url}: not found ({text}); is the slaprof-profile WorkflowTemplate installed in "
            f"{server.namespace!r} (helm install slaprof charts/slaprof)?"
        )
    return f"the Argo Server at {server.url} rejected the workflow: {text}"


def describe(workflow: Workflow) -> dict[str, Any]:
    return workflow.model_dump(by_alias=True, exclude_none=True, mode="json")
