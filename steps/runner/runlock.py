"""The run lock: one `slaprof profile` at a time writes into a run folder or S3 prefix.

The lock is the artifact `.slaprof-lock.json` of the run's store. It names its holder (host, pid,
start time) and carries a lease the holder renews every `ttl_s / 4` seconds while it runs. A second
run that finds it exits 2 naming the holder, unless the holder is gone:
- a process on this host that no longer runs (or whose pid now belongs to another process) is
  taken over at once, with a warning;
- a lease nobody renewed for `ttl_s` seconds (its holder, maybe on another host, died or lost the
  store) is taken over, with a warning. Hosts compare their own clocks with the holder's renewal
  time, so their clocks must agree to well within `ttl_s`.

Creating the lock is atomic: a hard link onto the name for a folder (atomic on local disks and NFS),
a conditional write (`If-None-Match: *`) for S3. Renewing and taking over replace only the version
that was read (a flock on the folder; `If-Match` on S3), so two runs never both believe they hold
it; a run whose lock was taken over finds out at its next renewal and stops before writing results.

The Argo workflow's tasks do not take the lock: each workflow writes under its own prefix (the
workflow's unique name) and its bench tasks run in parallel. They refuse, through `ensure_free`, a
prefix that a live local run holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from slaprof.steps.core.errors import UserError
from slaprof.steps.core.store import (
    ArtifactStore,
    Layout,
    LocalStore,
    MissingArtifact,
    S3Store,
    temp_file,
    write_file_atomic,
)

LOCK_KEY = Layout.LOCK
LEASE_TTL_S = 120.0  # a holder that has not renewed for this long is presumed gone
RENEW_EVERY_S = LEASE_TTL_S / 4
_PRECONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict")

Clock = Callable[[], float]


class RunInUse(UserError):
    """Another live run holds the lock of this run folder or prefix."""


class Holder(BaseModel):
    """What the lock artifact says about the run that holds it."""

    host: str
    pid: int
    pid_start: str | None = None  # the process's start time in clock ticks (/proc), to tell a reused pid apart
    command: str = "slaprof profile"
    started_at: float  # seconds since the epoch
    renewed_at: float
    ttl_s: float
    token: str  # unique per run: the holder recognises its own lock by it

    def who(self) -> str:
        started = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.command} on host {self.host}, pid {self.pid}, started {started}"


# ---------------------------------------------------------------------------
# where the lock lives: a file in a folder, or an object under an S3 prefix
# ---------------------------------------------------------------------------
class _Slot(Protocol):
    def read(self) -> tuple[bytes, str] | None:
        """(content, version) of the lock, or None when there is none."""

    def create(self, data: bytes) -> str | None:
        """Write the lock if there is none; its version, or None when one exists."""

    def replace(self, data: bytes, version: str) -> str | None:
        """Overwrite the lock if it is still at `version`; the new version, or None."""

    def delete(self, version: str) -> None:
        """Remove the lock if it is still at `version`."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _FileSlot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LOCK_KEY

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise read-compare-write among the runs of this host (a flock on the run folder)."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"cannot read the run lock {self.path}: {exc.strerror}") from None
        return data, _digest(data)

    def create(self, data: bytes) -> str | None:
        tmp: str | None = None
        try:
            fd, tmp = temp_file(self.root, LOCK_KEY)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.link(tmp, self.path)  # fails if the lock exists: never overwrites it
        except FileExistsError:
            return None
        except OSError as exc:
            raise UserError(f"cannot write the run lock {self.path}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return _digest(data)

    def replace(self, data: bytes, version: str) -> str | None:
        with self._guard():
            current = self.read()
            if current is None or current[1] != version:
                return None
            write_file_atomic(self.path, data)
        return _digest(data)

    def delete(self, version: str) -> None:
        with self._guard():
            current = self.read()
            if current is not None and current[1] == version:
                self.path.unlink(missing_ok=True)


class _S3Slot:
    """Conditional writes (If-None-Match / If-Match), which AWS S3, MinIO and SeaweedFS honour."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.key = store._key(LOCK_KEY)

    def read(self) -> tuple[bytes, str] | None:
        try:
            resp = self.store._call("lock read", self.store.client.get_object, self.store.bucket, self.key)
        except MissingArtifact:
            return None
        try:
            return resp.read(), str(resp.headers.get("ETag", "")).strip('"')
        finally:
            resp.close()
            resp.release_conn()

    def _put(self, data: bytes, condition: dict[str, str]) -> str | None:
        from minio.error import S3Error

        def put() -> str | None:
            headers: dict[str, str | list[str] | tuple[str]] = {**condition, "Content-Type": "application/json"}
            try:
                # the public put_object turns unknown headers into user metadata: the conditional
                # headers go through the SDK's PutObject call as they are
                result = self.store.client._put_object(self.store.bucket, self.key, data, headers=headers)
            except S3Error as exc:
                if exc.code in _PRECONDITION_FAILED:
                    return None
                raise
            return str(result.etag).strip('"')

        version: str | None = self.store._call("lock write", put)
        return version

    def create(self, data: bytes) -> str | None:
        return self._put(data, {"If-None-Match": "*"})

    def replace(self, data: bytes, version: str) -> str | None:
        return self._put(data, {"If-Match": f'"{version}"'})

    def delete(self, version: str) -> None:
        current = self.read()
        if current is not None and current[1] == version:
            self.store._call("lock delete", self.store.client.remove_object, self.store.bucket, self.key)


def _slot_for(store: ArtifactStore) -> _Slot:
    if isinstance(store, LocalStore):
        return _FileSlot(store.root)
    if isinstance(store, S3Store):
        return _S3Slot(store)
    raise TypeError(f"no run lock for a {type(store).__name__}")


# ---------------------------------------------------------------------------
# is the holder still there?
# ---------------------------------------------------------------------------
def process_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot (Linux /proc), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; the first two precede ")"


def _alive(pid: int, pid_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    start = process_start(pid)
    return not (pid_start and start and start != pid_start)


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder.model_validate_json(data)
    except ValidationError:
        return None


# Tokens of the locks this process holds now: a lock naming this very process with another token
# was left by an earlier run in it that could not release it (its store was unreachable then).
_HELD_HERE: set[str] = set()


def _stale_reason(holder: Holder, host: str, now: float) -> str | None:
    """Why `holder` no longer holds its lock, or None while it does."""
    if holder.host == host and not _alive(holder.pid, holder.pid_start):
        return "it is no longer running"
    if holder.host == host and holder.pid == os.getpid() and holder.token not in _HELD_HERE:
        return "an earlier run of this process ended without releasing it"
    idle = now - holder.renewed_at
    if idle > holder.ttl_s:
        return f"it stopped renewing its lease {idle:.0f} s ago (a lease lasts {holder.ttl_s:.0f} s)"
    return None


def _where(store: ArtifactStore) -> str:
    return store.uri().rstrip("/")


def _in_use(where: str, holder: Holder, now: float) -> RunInUse:
    return RunInUse(
        f"{where} is in use by another run: {holder.who()} (lease renewed {max(0.0, now - holder.renewed_at):.0f} s "
        "ago); wait for it to finish, or write to another output"
    )


def _unreadable(where: str) -> RunInUse:
    return RunInUse(
        f"{where}: its run lock {LOCK_KEY} is unreadable; if no slaprof run is writing there, delete that file"
    )


def current_holder(store: ArtifactStore) -> Holder | None:
    """The holder the lock names, or None when there is no (readable) lock."""
    current = _slot_for(store).read()
    return _parse(current[0]) if current else None


def ensure_free(store: ArtifactStore, clock: Clock = time.time) -> None:
    """Raise RunInUse when a live run holds `store` (for steps that write without taking the lock)."""
    current = _slot_for(store).read()
    if current is None:
        return
    holder = _parse(current[0])
    if holder is None:
        raise _unreadable(_where(store))
    now = clock()
    if _stale_reason(holder, socket.gethostname(), now) is None:
        raise _in_use(_where(store), holder, now)


# ---------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------
class RunLock:
    """This run's claim on a store: `acquire`, `renew` (periodically), `check`, `release`."""

    def __init__(
        self,
        store: ArtifactStore,
        command: str = "slaprof profile",
        ttl_s: float = LEASE_TTL_S,
        clock: Clock = time.time,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.slot = _slot_for(store)
        self.where = _where(store)
        self.command = command
        self.ttl_s = ttl_s
        self.clock = clock
        self.host = host or socket.gethostname()
        self.pid = pid or os.getpid()
        self.token = uuid.uuid4().hex
        self.started_at = 0.0
        self.version: str | None = None  # the version of the lock this run last wrote
        self.lost_to: str | None = None  # who took the lock over, once this run has lost it

    def _record(self, now: float) -> bytes:
        holder = Holder(
            host=self.host,
            pid=self.pid,
            pid_start=process_start(self.pid),
            command=self.command,
            started_at=self.started_at,
            renewed_at=now,
            ttl_s=self.ttl_s,
            token=self.token,
        )
        return holder.model_dump_json().encode()

    def _confirm(self) -> bool:
        """Whether the lock now names this run (S3 servers that ignore conditions: the last writer wins)."""
        current = self.slot.read()
        if current is None or (holder := _parse(current[0])) is None or holder.token != self.token:
            return False
        self.version = current[1]
        return True

    def acquire(self) -> str | None:
        """Take the lock; returns a warning when a stale holder's lock was taken over.
        Raises RunInUse naming the holder when a live run holds it."""
        now = self.clock()
        self.started_at = now
        for _attempt in range(5):  # another run changed the lock between our read and write: look again
            if self.slot.create(self._record(now)) is not None:
                if self._confirm():
                    _HELD_HERE.add(self.token)
                    return None
                continue
            current = self.slot.read()
            if current is None:
                continue  # released in the meantime
            holder = _parse(current[0])
            if holder is None:
                raise _unreadable(self.where)
            if holder.token == self.token:  # our own write, whose answer was lost
                self.version = current[1]
                _HELD_HERE.add(self.token)
                return None
            why = _stale_reason(holder, self.host, now)
            if why is None:
                raise _in_use(self.where, holder, now)
            if self.slot.replace(self._record(now), current[1]) is not None and self._confirm():
                _HELD_HERE.add(self.token)
                return f"took over the lock of {self.where} from {holder.who()}: {why}"
        raise RunInUse(f"{self.where}: could not take the run lock; other runs keep changing it")

    def renew(self) -> bool:
        """Extend the lease; False (and `check` raises from now on) when another run took the lock."""
        if self.version is None or self.lost_to is not None:
            return False
        version = self.slot.replace(self._record(self.clock()), self.version)
        if version is not None:
            self.version = version
            return True
        if self._confirm():  # written, but the answer was lost on the way back
            return True
        current = self.slot.read()
        holder = _parse(current[0]) if current else None
        self.lost_to = holder.who() if holder else "nobody (the lock was removed)"
        return False

    def check(self) -> None:
        """Raise when this run lost its lock: its results could mix with another run's."""
        if self.lost_to is not None:
            raise UserError(
                f"lost the lock of {self.where} to {self.lost_to} while this run was stopped or could not "
                "reach the store; the outputs there may now mix both runs: run again"
            )

    def release(self) -> None:
        _HELD_HERE.discard(self.token)
        if self.version is not None and self.lost_to is None:
            self.slot.delete(self.version)
        self.version = None


def _renew_until(lock: RunLock, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        try:
            lock.renew()
        except UserError:
            pass  # the store is out of reach for a moment: the next renewal tries again
        if lock.lost_to is not None:
            return


@contextmanager
def hold(
    store: ArtifactStore,
    warn: Callable[[str], Any],
    command: str = "slaprof profile",
    ttl_s: float = LEASE_TTL_S,
    clock: Clock = time.time,
    renew_every_s: float | None = RENEW_EVERY_S,
) -> Iterator[RunLock]:
    """Hold the run lock of `store` for the `with` block, renewing its lease in a background thread
    (every `renew_every_s`; None: only when the caller renews); released however the block ends."""
    lock = RunLock(store, command=command, ttl_s=ttl_s, clock=clock)
    warning = lock.acquire()
    if warning:
        warn(warning)
    stop = threading.Event()
    renewer = None
    if renew_every_s is not None:
        renewer = threading.Thread(
            target=_renew_until, args=(lock, stop, renew_every_s), name="slaprof-lease", daemon=True
        )
        renewer.start()
    try:
        yield lock
    finally:
        stop.set()
        if renewer is not None:
            renewer.join(timeout=2 * RENEW_EVERY_S)
        lock.release()
