"""A live progress bar for runs (rich), updated from the completion path only, refreshed 4 times a second."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .records import RequestRecord


class RichProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._p: Progress | None = None
        self._task = None
        self._errors = 0
        self._duration: float | None = None
        self._t0 = 0.0

    def start(self, label: str, total: int | None, duration: float | None) -> None:
        self._errors = 0
        self._duration = duration
        self._t0 = time.monotonic()
        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            refresh_per_second=4,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self._p.start()
        self._task = self._p.add_task(label, total=total, errors=0)

    def advance(self, rec: RequestRecord) -> None:
        if self._p is None:
            return
        if rec.error:
            self._errors += 1
        self._p.update(self._task, advance=1, errors=self._errors)

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
