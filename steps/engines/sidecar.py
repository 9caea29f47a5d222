"""The engine-sidecar contract of the Argo `bench-online` pod: the files both containers share.

The pod has two containers sharing one folder (`SLAPROF_ENGINE_SIDECAR`, an emptyDir) and the
network: `main` runs the bench step (CPUs only), `engine` runs the engine image with the GPUs.
The `engine` container's command (`slaprof.workflows.bench.engine_boot`) waits for DIR/launch.sh and
runs it, or exits when DIR/done appears first. Files in DIR:

  launch.sh    written (atomically) by the bench: starts the engine, see `launch_script`
  started      written by launch.sh when it begins (its shell's pid)
  engine.log   the engine's output, teed by launch.sh (also on the `engine` container's log)
  engine.pid   the engine's pid (its own session when `setsid` exists in the image)
  engine.exit  the engine's exit status, once it is gone (128 + N: killed by signal N)
  stop         written by the bench: stop the engine (SIGTERM, SIGKILL after the grace period)
  done         written by the bench when its work is over: the sidecar exits (the pod completes)
  finished     written by launch.sh as its last act: nothing of the engine is left

Readiness, KV capacity (metrics, else DIR/engine.log) and profiling go over localhost as usual.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path

SIDECAR_ENV = "SLAPROF_ENGINE_SIDECAR"
SCRIPT = "launch.sh"
STARTED, LOG, PID, EXIT, STOP, DONE, FINISHED = (
    "started",
    "engine.log",
    "engine.pid",
    "engine.exit",
    "stop",
    "done",
    "finished",
)


def sidecar_dir() -> Path | None:
    """The shared folder when the engine runs in a sidecar container, else None."""
    value = os.environ.get(SIDECAR_ENV, "").strip()
    return Path(value) if value else None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # the sidecar polls for the name: it must never see half a file


def launch_script(folder: Path, argv: list[str], env: dict[str, str], grace_s: float) -> str:
    """POSIX sh that runs `argv` in `folder`, tees its output to engine.log, and stops it on `stop`/`done`.

    Only sh, cat, mv, rm, sleep, mkfifo and tee are needed (every engine image has them); `setsid`
    is used when present so the engine's whole process group can be signalled."""
    d = shlex.quote(str(folder))
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    command = " ".join(shlex.quote(a) for a in argv)
    ticks = max(1, round(grace_s / 0.2))
    return f"""#!/bin/sh
# Written by slaprof's bench step (steps/engines/sidecar.py); run by the pod's engine container.
d={d}
cd "$d" || exit 1
echo $$ > "$d/{STARTED}"
{exports}nap() {{ sleep 0.2 2>/dev/null || sleep 1; }}
rm -f "$d/engine.pipe" && mkfifo "$d/engine.pipe" || exit 1
tee "$d/{LOG}" < "$d/engine.pipe" &
tee_pid=$!
(
  if command -v setsid >/dev/null 2>&1; then setsid {command} & else {command} & fi
  echo $! > "$d/.{PID}.tmp" && mv "$d/.{PID}.tmp" "$d/{PID}"
  wait $!
  echo $? > "$d/.{EXIT}.tmp" && mv "$d/.{EXIT}.tmp" "$d/{EXIT}"
) > "$d/engine.pipe" 2>&1 &
runner_pid=$!
trap 'touch "$d/{STOP}"' TERM INT
while [ ! -f "$d/{PID}" ]; do nap; done
pid=$(cat "$d/{PID}")
signal_engine() {{ kill -"$1" -"$pid" 2>/dev/null || kill -"$1" "$pid" 2>/dev/null; }}
while [ ! -f "$d/{EXIT}" ] && [ ! -f "$d/{STOP}" ] && [ ! -f "$d/{DONE}" ]; do nap; done
if [ ! -f "$d/{EXIT}" ]; then
  signal_engine TERM
  n=0
  while [ ! -f "$d/{EXIT}" ] && [ "$n" -lt {ticks} ]; do nap; n=$((n + 1)); done
  [ -f "$d/{EXIT}" ] || signal_engine KILL
fi
signal_engine KILL  # whatever of its process group outlived it
wait "$runner_pid"
nap  # tee drains what is left; an orphan still holding the pipe must not keep the sidecar up
kill "$tee_pid" 2>/dev/null
wait "$tee_pid"
rm -f "$d/engine.pipe"
echo "$(cat "$d/{EXIT}" 2>/dev/null)" > "$d/.{FINISHED}.tmp" && mv "$d/.{FINISHED}.tmp" "$d/{FINISHED}"
exit 0
"""


class SidecarFolder:
    """The bench's side of the shared folder."""

    def __init__(self, folder: Path | str) -> None:
        self.dir = Path(folder).resolve()
        self.script = self.dir / SCRIPT
        self.log = self.dir / LOG

    def launch(self, argv: list[str], env: dict[str, str], grace_s: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in (STARTED, LOG, PID, EXIT, STOP, DONE, FINISHED):
            (self.dir / stale).unlink(missing_ok=True)
        self.log.touch()  # readable from the first moment, as a subprocess's log file is
        _write_atomically(self.script, launch_script(self.dir, argv, env, grace_s))

    def picked_up(self) -> bool:
        return (self.dir / STARTED).is_file()

    def exit_code(self) -> int | None:
        """The engine's exit status once the sidecar saw it end, else None."""
        try:
            return int((self.dir / EXIT).read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, grace_s: float) -> bool:
        """Ask for the engine to stop; True once the sidecar reports everything of it gone."""
        _write_atomically(self.dir / STOP, "")
        if not self.picked_up() and not self.script.exists():
            return True
        # the script's own SIGTERM -> SIGKILL takes up to grace_s; a sidecar that never picked the
        # script up gets a moment only (it then finds `stop` and exits right after starting)
        deadline = time.monotonic() + (grace_s + 15.0 if self.picked_up() else 1.0)
        while time.monotonic() < deadline:
            if (self.dir / FINISHED).is_file():
                return True
            time.sleep(0.1)
        return False

    def copy_out(self, source: Path, target: Path) -> None:
        """Copy a file or folder the engine wrote into the bench's own folder (best effort)."""
        try:
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        except OSError:
            pass


def release() -> None:
    """Tell the sidecar the bench's work is over (DIR/done), so it exits and the pod can complete."""
    folder = sidecar_dir()
    if folder is not None and folder.is_dir():
        _write_atomically(folder / DONE, "")
