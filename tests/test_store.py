from __future__ import annotations

import pytest

from steps.errors import UserError
from steps.store import LocalStore, MissingArtifact, open_store


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
