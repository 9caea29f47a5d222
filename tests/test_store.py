from __future__ import annotations

import pytest

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import LocalStore, MissingArtifact, open_store


def test_local_store_roundtrip_and_atomic(tmp_path):
    store = open_store(str(tmp_path / "run"))
    assert isinstance(store, LocalStore)
    store.put_bytes("profiles/tp1.json", b"{}")
    store.put_bytes("plan.json", b"[]")
    assert store.list("profiles/") == ["profiles/tp1.json"]
    assert store.get_bytes("plan.json") == b"[]"
    assert not list((tmp_path / "run").rglob("*.part"))
    with pytest.raises(MissingArtifact):
        store.get_bytes("nope.json")


def test_s3_store_roundtrip(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = open_store("s3://slaprof-test/run-1")
    store.put_bytes("profiles/tp2.json", b'{"a": 1}')
    store.put_bytes("selection.json", b"{}")
    assert store.list("profiles/") == ["profiles/tp2.json"]
    assert store.get_bytes("profiles/tp2.json") == b'{"a": 1}'
    assert store.exists("selection.json") and not store.exists("x.json")
    assert store.uri("selection.json") == "s3://slaprof-test/run-1/selection.json"


def test_s3_wrong_key_is_refused(s3_server, monkeypatch):
    monkeypatch.setenv("SLAPROF_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(UserError, match="S3"):
        open_store("s3://slaprof-test/run-2")


def test_s3_unreachable_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SLAPROF_S3_ENDPOINT", "127.0.0.1:1")
    monkeypatch.setenv("SLAPROF_S3_RETRY_S", "0")  # no retries (tests/test_store_outage.py covers them)
    with pytest.raises(UserError, match="unreachable"):
        open_store("s3://slaprof-test/run")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_local_files_honour_the_umask(tmp_path, umask):
    """Outputs get 0666 & ~umask like any file the user writes (a temp-file helper once made them 0600)."""
    import os
    import stat

    old = os.umask(umask)
    try:
        store = open_store(str(tmp_path / "run"))
        store.put_bytes("plots/a.png", b"x")
        store.put_bytes("report.html", b"<html>")
    finally:
        os.umask(old)
    for name in ("plots/a.png", "report.html"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


class _FakeSts:
    """An STS endpoint answering AssumeRoleWithWebIdentity with the S3 server's keys, as AWS STS
    answers a pod's IRSA token with the role's temporary keys."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls.append(self.path)
                body = (
                    '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                    "<AssumeRoleWithWebIdentityResult><Credentials>"
                    f"<AccessKeyId>{access_key}</AccessKeyId><SecretAccessKey>{secret_key}</SecretAccessKey>"
                    "<SessionToken></SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
                    "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sdk_credentials_come_from_the_pods_web_identity(s3_server, monkeypatch, tmp_path):
    """useSDKCreds: no keys in the environment; the store exchanges the pod's web identity token
    (IRSA) for keys through STS instead of going anonymous, which the server refuses."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.pod-identity.signature")
    monkeypatch.setenv("SLAPROF_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("SLAPROF_S3_RETRY_S", "0")
    with pytest.raises(UserError, match="AccessDenied|SignatureDoesNotMatch|InvalidAccessKeyId"):
        open_store("s3://slaprof-irsa/run")  # anonymous: refused
    sts = _FakeSts(s3_server.access_key, s3_server.secret_key)
    try:
        monkeypatch.setenv("SLAPROF_S3_USE_SDK_CREDS", "1")
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
        monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/slaprof")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        store = open_store("s3://slaprof-irsa/run")
        store.put_bytes("plan.json", b"{}")
        assert store.list() == ["plan.json"] and store.get_bytes("plan.json") == b"{}"
    finally:
        sts.close()
    assert sts.calls and "Action=AssumeRoleWithWebIdentity" in sts.calls[0]
    assert "WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.pod-identity.signature" in sts.calls[0]
