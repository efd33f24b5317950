"""A live progress bar for runs (rich), updated from the completion path only, refreshed 4 times a second.

A run bounded by a count shows ``done/total``; a ``--duration`` run, whose count is not known in advance,
shows the time left and the live request rate instead (``duration_line``), its bar filling with time."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress_bar import ProgressBar
from rich.text import Text

from .records import RequestRecord

RATE_WINDOW_S = 5.0  # the live rate counts the completions of the last few seconds


@dataclass(frozen=True)
class DurationState:
    """What a duration-bounded run's progress line shows, at one instant."""

    elapsed_s: float
    duration_s: float
    done: int
    errors: int
    rate: float  # completions per second over the last RATE_WINDOW_S (or since the start, if shorter)
    total: int | None = None  # --requests as well: the run ends at whichever comes first


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def duration_line(st: DurationState) -> str:
    """``42 done · 8.4 req/s · 0:18 left`` (``42/100 done`` when a count bounds it too), errors when any."""
    left = max(0.0, st.duration_s - st.elapsed_s)
    done = f"{st.done}/{st.total}" if st.total else f"{st.done}"
    parts = [f"{done} done", f"{st.rate:.1f} req/s", f"{_clock(left)} left" if left > 0 else "finishing"]
    if st.errors:
        parts.insert(1, f"{st.errors} errors")
    return " · ".join(parts)


class RateMeter:
    """Completions per second over a sliding window, from their monotonic times."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def add(self, t: float) -> None:
        self.times.append(t)

    def rate(self, now: float, t0: float) -> float:
        while self.times and self.times[0] < now - self.window_s:
            self.times.popleft()
        span = min(self.window_s, now - t0)
        return len(self.times) / span if span > 0 else 0.0


class _DurationColumns(ProgressColumn):
    """The bar (filled by time) and the line, both computed at render time: they move between completions."""

    def __init__(self, progress: RichProgress, part: str) -> None:
        super().__init__()
        self.progress, self.part = progress, part

    def render(self, task: Task) -> ProgressBar | Text:
        st = self.progress.state(time.monotonic())
        if self.part == "bar":
            return ProgressBar(total=st.duration_s, completed=min(st.elapsed_s, st.duration_s), width=40)
        return Text(duration_line(st))


class RichProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._p: Progress | None = None
        self._task = None
        self._errors = 0
        self._done = 0
        self._total: int | None = None
        self._duration: float | None = None
        self._t0 = 0.0
        self._rate = RateMeter()

    def start(self, label: str, total: int | None, duration: float | None) -> None:
        self._errors = self._done = 0
        self._total = total
        self._duration = duration
        self._t0 = time.monotonic()
        self._rate = RateMeter()
        if duration:
            columns: tuple[ProgressColumn, ...] = (
                TextColumn("[bold]{task.description}"), _DurationColumns(self, "bar"), _DurationColumns(self, "line"))
        else:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self._p = Progress(*columns, console=self.console, refresh_per_second=4, transient=False,
                           disable=not self.console.is_terminal)
        self._p.start()
        self._task = self._p.add_task(label, total=total, errors=0)

    def state(self, now: float) -> DurationState:
        return DurationState(elapsed_s=now - self._t0, duration_s=self._duration or 0.0, done=self._done,
                             errors=self._errors, rate=self._rate.rate(now, self._t0), total=self._total)

    def advance(self, rec: RequestRecord) -> None:
        if self._p is None:
            return
        self._done += 1
        self._rate.add(time.monotonic())
        if rec.error:
            self._errors += 1
        self._p.update(self._task, advance=1, errors=self._errors)

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
