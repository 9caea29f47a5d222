"""Artifact store: where every step reads its inputs and writes its outputs.

A run is a key prefix; the layout below is the same for the local runner (a folder) and
the Argo workflow (an S3 prefix `{{workflow.name}}/`), so a step never knows who called it.
Local writes go to a temporary file first and are renamed, so no partial file is ever
presented as complete; the temporary file is created with the usual 0666 & ~umask mode (not
mkstemp's 0600), so outputs are as readable as any other file the user writes.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ValidationError

from slaprof.steps.core.errors import Unreachable, UserError

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


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
    LOCK = ".slaprof-lock.json"  # the run lock (steps/runner/runlock.py); present only while a run writes here

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


class BadArtifact(UserError):
    """An artifact that exists but does not hold what its key promises (edited, truncated, another format)."""


class StoreWriteError(UserError):
    """The output cannot be written (disk full, read-only, no permission): the run stops here."""


def temp_file(folder: Path, name: str) -> tuple[int, str]:
    """A new hidden temporary file next to `folder/name`, open for writing: (fd, path).

    O_EXCL on a random name, like mkstemp, but with mode 0666 so the umask decides (mkstemp's 0600
    would make every output private to its writer)."""
    for _ in range(100):
        path = folder / f".{name}.{secrets.token_hex(4)}.part"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {folder / name}")


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file and a rename, so a reader never sees half a file and a
    failed write (a full disk) leaves the previous content; errors are one StoreWriteError line."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path.parent, path.name)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        hint = "; free some space or write elsewhere" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}{hint}") from None


@dataclass
class LocalStore:
    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        write_file_atomic(self._path(key), data)

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


class StoreUnavailable(Unreachable):
    """The S3 endpoint kept failing with transient errors (no connection, 5xx) for the whole retry
    budget. What was written before is kept; a run started again resumes from it."""


S3_RETRY_ENV = "SLAPROF_S3_RETRY_S"  # seconds a store call keeps retrying transient errors
DEFAULT_S3_RETRY_S = 120.0
# S3 error codes that mean "try again", whatever the HTTP status says
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted"}


def _transient(exc: BaseException) -> bool:
    """An error that another attempt may not get: no connection, a reset, a 5xx answer."""
    from minio.error import InvalidResponseError, S3Error, ServerError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in _TRANSIENT_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return int(getattr(exc, "_code", 0) or 0) >= 500
    return isinstance(exc, (HTTPError, OSError))


class S3Store:
    """An S3 prefix through the minio SDK (MinIO, SeaweedFS, AWS S3 ...).

    Every call retries transient errors (see `_transient`) with exponential back-off for
    `retry_s` seconds, then raises StoreUnavailable; other errors are UserErrors at once.
    Credentials: the given keys, else the SDK's chain of cloud identities when `sdk_credentials`
    (IRSA / web identity, ECS, EC2; what `artifacts.s3.useSDKCreds` asks for), else anonymous."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = False,
        region: str | None = None,
        *,
        sdk_credentials: bool = False,
        retry_s: float = DEFAULT_S3_RETRY_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix.strip("/")
        self.retry_s, self._sleep, self._clock = retry_s, sleep, clock
        # no retries below ours, and bounded waits: a dead or hanging endpoint surfaces to `_call`
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=120), retries=False, maxsize=10)
        credentials = _sdk_credentials() if sdk_credentials and not access_key else None
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
            credentials=credentials,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        from minio.error import S3Error

        waited, delay = 0.0, 0.5
        started = self._clock()
        while True:
            try:
                return fn(*args, **kwargs)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise MissingArtifact(
                        f"missing artifact s3://{self.bucket}/{args[1] if len(args) > 1 else ''}"
                    ) from None
                if not _transient(exc):
                    raise UserError(
                        f"S3 {what} on {self.endpoint} bucket {self.bucket!r} failed: {exc.code}: {exc.message}"
                    ) from None
                error = f"{exc.code}"
            except Exception as exc:
                if not _transient(exc):
                    raise
                error = type(exc).__name__
            waited = self._clock() - started
            if waited >= self.retry_s:
                raise StoreUnavailable(
                    f"S3 endpoint {self.endpoint} is unreachable ({error}; {what} retried for {waited:.0f} s): "
                    f"what was written is kept; check SLAPROF_S3_ENDPOINT and the network, then run again "
                    f"to resume ({S3_RETRY_ENV} sets how long to retry)"
                )
            self._sleep(min(delay, self.retry_s - waited))
            delay = min(delay * 2, 15.0)

    def ensure_bucket(self) -> None:
        if not self._call("bucket check", self.client.bucket_exists, self.bucket):
            self._call("bucket create", self.client.make_bucket, self.bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        # a fresh stream per attempt; an object appears whole or not at all
        self._call(
            "upload",
            lambda bucket, name: self.client.put_object(
                bucket, name, io.BytesIO(data), len(data), content_type=content_type or content_type_for(key)
            ),
            self.bucket,
            self._key(key),
        )

    def _read(self, bucket: str, name: str) -> bytes:
        resp = self.client.get_object(bucket, name)
        try:
            return resp.read()  # a connection lost while reading is retried whole
        finally:
            resp.close()
            resp.release_conn()

    def get_bytes(self, key: str) -> bytes:
        return self._call("download", self._read, self.bucket, self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", self.client.stat_object, self.bucket, self._key(key))
        except MissingArtifact:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        def names(bucket: str, name_prefix: str) -> list[str]:  # the listing is paged: read it all here
            return [o.object_name for o in self.client.list_objects(bucket, prefix=name_prefix, recursive=True)]

        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(name[strip:] for name in self._call("list", names, self.bucket, self._key(prefix)))

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _sdk_credentials() -> Any:
    """The SDK's chain of cloud identities: AWS keys in the environment, then IamAwsProvider (IRSA /
    web identity via AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, ECS task roles, EC2 instance
    roles). AWS_ENDPOINT_URL_STS points the web-identity exchange at another STS endpoint."""
    from minio.credentials import ChainedProvider, EnvAWSProvider, IamAwsProvider

    return ChainedProvider([EnvAWSProvider(), IamAwsProvider(custom_endpoint=os.environ.get("AWS_ENDPOINT_URL_STS"))])


def _retry_seconds() -> float:
    text = os.environ.get(S3_RETRY_ENV, "").strip()
    if not text:
        return DEFAULT_S3_RETRY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise UserError(f"{S3_RETRY_ENV}={text!r} must be a number of seconds (0 = no retries)")
    return value


def open_store(location: str, create: bool = True) -> ArtifactStore:
    """A folder path, file://PATH, or s3://bucket/prefix (endpoint and keys from the environment:
    SLAPROF_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SLAPROF_S3_SECURE=1 for TLS;
    SLAPROF_S3_USE_SDK_CREDS=1 for the pod's cloud identity instead of keys; SLAPROF_S3_RETRY_S)."""
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
            sdk_credentials=os.environ.get("SLAPROF_S3_USE_SDK_CREDS", "0") in ("1", "true"),
            retry_s=_retry_seconds(),
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
    """The artifact at `key` as a `cls`; one of another shape is a BadArtifact naming it."""
    try:
        return cls.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadArtifact(
            f"{store.uri(key)} is not a valid {cls.__name__} ({where + ': ' if where else ''}{err['msg']}); "
            "it was edited or written by another slaprof version: rerun the step that writes it"
        ) from None


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
