"""`slaprof submit` against a local HTTP server standing in for the Argo Server API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from slaprof.steps.cli.main import main
from slaprof.steps.core.request import ProfileRequest
from tests.conftest import MODELS


class FakeArgoServer:
    """Records every request; answers POST /api/v1/workflows/<ns> like Argo Server (the created Workflow)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if outer.status != 200:
                    reply = {"code": 16, "message": "token not valid"}
                else:
                    reply = body["workflow"]
                    reply["metadata"]["name"] = reply["metadata"]["generateName"] + "x7k2p"
                    reply["metadata"]["namespace"] = self.path.rsplit("/", 1)[-1]
                data = json.dumps(reply).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeArgoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


MODEL = str(MODELS / "Qwen3-0.6B")


def test_submit_posts_a_workflow_from_the_template(capsys, monkeypatch):
    monkeypatch.setenv("ARGO_TOKEN", "s3cr3t")  # the token never appears on the command line
    with FakeArgoServer() as server:
        code = main(
            [
                "submit",
                "--model",
                MODEL,
                "--backend",
                "sglang",
                "--isl",
                "2000",
                "--ttft",
                "120",
                "--gpu",
                "h100_sxm",
                "--argo-server",
                server.url,
                "--workflow-namespace",
                "profiling",
                "--pick",
                "manual",
                "--drift-threshold",
                "7.5",
            ]
        )
    assert code == 0
    [req] = server.requests
    assert req["path"] == "/api/v1/workflows/profiling"
    assert req["headers"]["Authorization"] == "Bearer s3cr3t"
    wf = req["body"]["workflow"]
    assert wf["spec"]["workflowTemplateRef"] == {"name": "slaprof-profile"}
    assert wf["metadata"]["generateName"] == "slaprof-qwen3-0-6b-"
    assert wf["metadata"]["labels"]["slaprof.io/backend"] == "sglang"
    assert "h100_sxm" in wf["metadata"]["annotations"]["workflows.argoproj.io/title"]
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    request = ProfileRequest.model_validate_json(params["request"])
    assert (request.model, request.backend, request.sla.isl, request.sla.ttft_ms) == (MODEL, "sglang", 2000, 120.0)
    assert params["backend"] == "sglang" and params["isl"] == "2000" and params["gpu"] == "h100_sxm"
    assert params["pick"] == "manual" and params["drift-threshold"] == "7.5"
    assert params["auto-apply"] == "false"
    out = capsys.readouterr().out
    assert "submitted slaprof-qwen3-0-6b-x7k2p in namespace profiling" in out
    assert f"{server.url}/workflows/profiling/slaprof-qwen3-0-6b-x7k2p" in out


def test_parameters_match_the_template(capsys):
    """Every parameter submit sends is declared by the WorkflowTemplate."""
    from slaprof.workflows.render import WORKFLOW_TEMPLATE_FILE, manifests

    declared = {p["name"] for p in manifests()[WORKFLOW_TEMPLATE_FILE]["spec"]["arguments"]["parameters"]}
    assert main(["submit", "--model", MODEL, "--print"]) == 0
    wf = yaml.safe_load(capsys.readouterr().out)
    sent = {p["name"] for p in wf["spec"]["arguments"]["parameters"]}
    assert sent <= declared and {"request", "model", "backend", "method", "pick"} <= sent


def test_refused_token_is_one_actionable_line(capsys, monkeypatch):
    monkeypatch.setenv("ARGO_TOKEN", "Bearer wrong")
    with FakeArgoServer(status=401) as server:
        code = main(["submit", "--model", MODEL, "--argo-server", server.url])
    assert code == 2
    assert server.requests[0]["headers"]["Authorization"] == "Bearer wrong"
    assert server.requests[0]["path"] == "/api/v1/workflows/argo"
    err = capsys.readouterr().err.strip()
    assert "refused the token" in err and "ARGO_TOKEN" in err and len(err.splitlines()) == 1


def test_invalid_request_never_reaches_the_server(capsys):
    with FakeArgoServer() as server:
        code = main(["submit", "--model", MODEL, "--backend", "tgi", "--argo-server", server.url])
    assert code == 2 and server.requests == []
    assert "backend" in capsys.readouterr().err


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"ARGO_SERVER": "argo.example:2746"}, "https://argo.example:2746"),
        ({"ARGO_SERVER": "argo:2746", "ARGO_SECURE": "false", "ARGO_BASE_HREF": "/argo/"}, "http://argo:2746/argo"),
    ],
)
def test_server_from_argo_cli_environment(monkeypatch, env, expected):
    from slaprof.workflows.submit import ArgoServer

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server = ArgoServer.from_env(None, None, None)
    assert server.url == expected and server.namespace == "argo"
    assert server.ui_link("wf-1") == f"{expected}/workflows/argo/wf-1"


def test_a_token_on_the_command_line_is_refused(capsys):
    with FakeArgoServer() as server, pytest.raises(SystemExit) as info:
        main(["submit", "--model", MODEL, "--argo-server", server.url, "--token", "s3cr3t"])
    assert info.value.code == 2 and server.requests == []
    assert "--token" in capsys.readouterr().err
