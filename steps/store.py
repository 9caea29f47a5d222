"""Artifact store: where every step reads its inputs and writes its outputs.

A run is a key prefix; the layout below is the same for the local runner (a folder) and
the Argo workflow (an S3 prefix `{{workflow.name}}/`), so a step never knows who called it.
Local writes go to a temporary file first and are renamed, so no partial file is ever
presented as complete.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel

from steps.errors import UserError

T = TypeVar("T", bound=BaseModel)


class Layout:
    """Keys of a run's artifacts, relative to the run prefix."""

    REQUEST = "request.json"
    PLAN = "plan.json"
    PROFILES = "profiles/"
    SELECTION = "selection.json"
    PREFILL_NPZ = "prefill/raw_data.npz"
    DECODE_NPZ = "decode/raw_data.npz"
    PREFILL_JSON = "prefill_raw_data.json"
    DECODE_JSON = "decode_raw_data.json"
    PLOTS = "plots/"
    REPORT = "report.html"
    DGD = "dgd.yaml"

    @staticmethod
    def profile(candidate_id: str) -> str:
        return f"profiles/{candidate_id}.json"

    @staticmethod
    def partial(candidate_id: str) -> str:
        """The points measured so far while `bench` runs (what an interrupted run resumes from)."""
        return f"partial/{candidate_id}.json"


class ArtifactStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def uri(self, key: str = "") -> str: ...


_CONTENT_TYPES = {
    ".json": "application/json",
    ".html": "text/html",
    ".png": "image/png",
    ".yaml": "application/yaml",
    ".npz": "application/octet-stream",
    ".txt": "text/plain",
}


def content_type_for(key: str) -> str:
    return _CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")


class MissingArtifact(UserError):
    pass


@dataclass
class LocalStore:
    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            if "tmp" in locals() and os.path.exists(tmp):
                os.unlink(tmp)
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingArtifact(f"missing artifact {self._path(key)}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix.endswith("/") or not prefix else self._path(prefix).parent
        if not base.exists():
            return []
        keys = (str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.endswith(".part"))
        return sorted(k for k in keys if k.startswith(prefix))

    def uri(self, key: str = "") -> str:
        return str(self._path(key))


class S3Store:
    """An S3 prefix through the minio SDK (MinIO, SeaweedFS, AWS S3 ...)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        from minio import Minio

        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix.strip("/")
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError, MaxRetryError

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise MissingArtifact(
                    f"missing artifact s3://{self.bucket}/{args[1] if len(args) > 1 else ''}"
                ) from None
            raise UserError(
                f"S3 {what} on {self.endpoint} bucket {self.bucket!r} failed: {exc.code}: {exc.message}"
            ) from None
        except (MaxRetryError, HTTPError, OSError) as exc:
            raise UserError(
                f"S3 endpoint {self.endpoint} is unreachable ({type(exc).__name__}); "
                "check SLAPROF_S3_ENDPOINT and the network"
            ) from None

    def ensure_bucket(self) -> None:
        if not self._call("bucket check", self.client.bucket_exists, self.bucket):
            self._call("bucket create", self.client.make_bucket, self.bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self._call(
            "upload",
            self.client.put_object,
            self.bucket,
            self._key(key),
            io.BytesIO(data),
            len(data),
            content_type=content_type or content_type_for(key),
        )

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("download", self.client.get_object, self.bucket, self._key(key))
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error:
            return False

    def list(self, prefix: str = "") -> list[str]:
        objs = self._call("list", self.client.list_objects, self.bucket, prefix=self._key(prefix), recursive=True)
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(o.object_name[strip:] for o in objs)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(location: str, create: bool = True) -> ArtifactStore:
    """A folder path, file://PATH, or s3://bucket/prefix (endpoint and keys from the environment:
    SLAPROF_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SLAPROF_S3_SECURE=1 for TLS)."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        endpoint = os.environ.get("SLAPROF_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL", "")
        endpoint = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
        if not endpoint:
            raise UserError(f"{location}: set SLAPROF_S3_ENDPOINT (host:port of the S3 server) to use an s3:// output")
        if not parsed.netloc or len(parsed.netloc) < 3:
            raise UserError(f"{location}: bucket name must have at least 3 characters")
        store = S3Store(
            endpoint,
            parsed.netloc,
            parsed.path,
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            secure=os.environ.get("SLAPROF_S3_SECURE", "0") in ("1", "true"),
            region=os.environ.get("AWS_REGION"),
        )
        if create:
            store.ensure_bucket()
        return store
    if parsed.scheme not in ("", "file"):
        raise UserError(f"unsupported output location {location!r}: use a folder or s3://bucket/prefix")
    root = Path(parsed.path if parsed.scheme == "file" else location).expanduser()
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {root}: {exc.strerror}") from None
    return LocalStore(root)


# ---------------------------------------------------------------------------
# typed helpers
# ---------------------------------------------------------------------------
def write_model(store: ArtifactStore, key: str, model: BaseModel) -> None:
    store.put_bytes(key, model.model_dump_json(indent=2).encode(), "application/json")


def read_model(store: ArtifactStore, key: str, cls: type[T]) -> T:
    return cls.model_validate_json(store.get_bytes(key))


def write_json(store: ArtifactStore, key: str, data: object) -> None:
    store.put_bytes(key, json.dumps(data, indent=2).encode(), "application/json")


def delete(store: ArtifactStore, key: str) -> None:
    """Remove one artifact if it exists (the store protocol has no delete; the runner and the bench
    step need one for superseded files)."""
    if isinstance(store, LocalStore):
        path = store._path(key)
        path.unlink(missing_ok=True)
        if path.parent != store._path(""):
            try:
                path.parent.rmdir()  # a folder the last file left (partial/), as on S3 where none remain
            except OSError:
                pass  # not empty
    elif isinstance(store, S3Store):
        store._call("delete", store.client.remove_object, store.bucket, store._key(key))


def read_json(store: ArtifactStore, key: str) -> object:
    return json.loads(store.get_bytes(key))
