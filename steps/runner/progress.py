"""Progress display of the local runner (`slaprof profile`).

The runner reports events (a step started or finished, a candidate's phase advanced, a
candidate finished); a reporter shows them. On a terminal, `RichProgress` draws one live row
per candidate and phase; elsewhere (CI logs, pods, pipes) `PlainProgress` writes one log line
per event, throttled so a long sweep does not flood the log. Both write to stderr: stdout
carries only the answer (the recommendation lines and the report path).
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID

ProgressMode = Literal["auto", "rich", "plain", "none"]


class ProgressReporter(Protocol):
    def step(self, name: str, message: str) -> None:
        """A runner step (plan, fit, render) finished or has news."""

    def candidate_started(self, candidate_id: str, detail: str = "") -> None: ...

    def phase(self, candidate_id: str, phase: str, done: int, total: int) -> None:
        """`done` of `total` points of `phase` (prefill, decode, ...) are measured."""

    def candidate_finished(self, candidate_id: str, status: str, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def close(self) -> None: ...


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f}s]"


class PlainProgress:
    """One line per event, for logs. Phase updates are throttled: the first and last point of a
    phase always print, others at most every `interval_s` per candidate."""

    def __init__(self, stream: IO[str] | None = None, interval_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.clock = _Clock()
        self._last: dict[str, float] = {}

    def _line(self, text: str) -> None:
        print(f"{self.clock.stamp()} {text}", file=self.stream, flush=True)

    def step(self, name: str, message: str) -> None:
        self._line(f"{name}: {message}")

    def candidate_started(self, candidate_id: str, detail: str = "") -> None:
        self._line(f"bench {candidate_id}: started{f' ({detail})' if detail else ''}")

    def phase(self, candidate_id: str, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        key = f"{candidate_id}/{phase}"
        first = key not in self._last
        if not (first or done >= total) and now - self._last[key] < self.interval_s:
            return
        self._last[key] = now
        self._line(f"bench {candidate_id}: {phase} {done}/{total}")

    def candidate_finished(self, candidate_id: str, status: str, message: str) -> None:
        self._line(f"bench {candidate_id}: {status}{f': {message}' if message else ''}")

    def warn(self, message: str) -> None:
        self._line(f"warning: {message}")

    def close(self) -> None:
        pass


class SilentProgress:
    def step(self, name: str, message: str) -> None:
        pass

    def candidate_started(self, candidate_id: str, detail: str = "") -> None:
        pass

    def phase(self, candidate_id: str, phase: str, done: int, total: int) -> None:
        pass

    def candidate_finished(self, candidate_id: str, status: str, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """Live rows on a terminal: one per candidate and phase, with a bar, counts and elapsed time.
    Finished steps and candidates are printed above the live rows and stay in the scrollback."""

    _STATUS_STYLE = {"ok": "green", "reused": "cyan", "infeasible": "yellow", "failed": "red"}

    def __init__(self, stream: IO[str] | None = None, force_terminal: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream or sys.stderr, force_terminal=force_terminal)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[candidate]:>6}[/] {task.fields[phase]:<8}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self.progress.start()

    def step(self, name: str, message: str) -> None:
        self.console.print(f"[bold]{name}[/]: {message}", highlight=False)

    def candidate_started(self, candidate_id: str, detail: str = "") -> None:
        self._task(candidate_id, "starting", 1)

    def _task(self, candidate_id: str, phase: str, total: int) -> TaskID:
        key = (candidate_id, phase)
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task("", total=max(total, 1), candidate=candidate_id, phase=phase)
        return self._tasks[key]

    def phase(self, candidate_id: str, phase: str, done: int, total: int) -> None:
        start = self._tasks.pop((candidate_id, "starting"), None)
        if start is not None:  # the engine is up: the start-up row has done its job
            self.progress.remove_task(start)
        task = self._task(candidate_id, phase, total)
        self.progress.update(task, completed=done, total=max(total, 1))

    def candidate_finished(self, candidate_id: str, status: str, message: str) -> None:
        for key in [k for k in self._tasks if k[0] == candidate_id]:
            self.progress.remove_task(self._tasks.pop(key))
        style = self._STATUS_STYLE.get(status, "white")
        text = f"bench [bold]{candidate_id}[/]: [{style}]{status}[/]"
        self.console.print(f"{text}: {message}" if message else text, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {message}", highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_progress(mode: ProgressMode = "auto", stream: IO[str] | None = None) -> ProgressReporter:
    """`auto`: live rows when stderr is a terminal, log lines otherwise."""
    stream = stream or sys.stderr
    if mode == "none":
        return SilentProgress()
    if mode == "rich" or (mode == "auto" and stream.isatty()):
        return RichProgress(stream, force_terminal=True if mode == "rich" else None)
    return PlainProgress(stream)
