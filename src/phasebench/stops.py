"""How a run stops, and who stops it.

The exceptions for each way a run can end early (``RunError`` before it starts, ``RunStopped`` with the partial
result after it started: ``Interrupted`` by a signal, ``ServerGone`` when the server stopped answering), and
the signal handling every entry point runs under (``run_main``): SIGINT, SIGTERM and SIGHUP stop a run the
same way, according to where it is (``Stopper``).
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
from dataclasses import dataclass, field

from .results import Run


class RunError(RuntimeError):
    """Something stopped the whole run (unreachable server, unknown model): one clear line."""


class TargetUnreachable(RunError):
    """The server could not be reached at all (exit code 4, as for a server that goes away mid-run)."""


class RunStopped(Exception):
    """A run that ended before its schedule did; carries the partial result, already valid on disk."""

    exit_code = 1

    def __init__(self, run: Run | None, message: str) -> None:
        super().__init__(message)
        self.run = run


class Interrupted(RunStopped):
    """Ctrl-C, SIGTERM or SIGHUP during a run."""

    def __init__(self, run: Run | None, signum: int | None = None) -> None:
        super().__init__(run, "interrupted")
        self.signum = signum

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        from . import exitcodes

        return exitcodes.for_signal(self.signum or signal.SIGINT)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum or signal.SIGINT).name
        except ValueError:
            return f"signal {self.signum}"


class ServerGone(RunStopped):
    """The server stopped answering during the run: it was stopped early, with what was finished kept."""

    exit_code = 4


def _loop_factory():  # noqa: ANN202
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


# Termination signals that end a run the way Ctrl-C does: in-flight requests recorded as cancelled, a partial
# summary written, the run recorded in the database, exit code 128 + signal number.
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


@dataclass
class Stopper:
    """What a termination signal does depends on where the run is. While requests are in flight (``executing``)
    it stops the schedule and cancels them, so they are recorded as cancelled and a partial summary is written;
    while results are being written (``finishing``) it lets them be written; before any request is sent it
    cancels the whole task (nothing to keep). A second signal always cancels at once."""

    task: asyncio.Task | None
    event: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = "idle"  # idle | executing | finishing
    signals: list[int] = field(default_factory=list)

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if len(self.signals) == 1 and self.phase in ("executing", "finishing"):
            self.event.set()
        elif self.task is not None:
            self.task.cancel()

    @property
    def signum(self) -> int | None:
        return self.signals[0] if self.signals else None


STOPPER: contextvars.ContextVar[Stopper | None] = contextvars.ContextVar("phasebench_stopper", default=None)


def run_main(coro):  # noqa: ANN001, ANN201
    """Run ``coro`` to completion on a fresh event loop (uvloop when installed, without changing the process's
    event-loop policy). SIGINT, SIGTERM and SIGHUP stop it (``Stopper``); a run that was stopped raises
    ``Interrupted`` carrying the signal's number and the partial result, already on disk."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_guarded(coro))


async def _guarded(coro):  # noqa: ANN001, ANN202
    loop = asyncio.get_running_loop()
    stopper = Stopper(asyncio.current_task())
    STOPPER.set(stopper)
    installed = []
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        try:
            loop.add_signal_handler(sig, stopper.on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not POSIX
            pass
    try:
        return await coro
    except Interrupted as e:
        e.signum = stopper.signum or int(signal.SIGINT)
        raise
    except asyncio.CancelledError:
        if stopper.signum:  # a signal before any request was sent: nothing to keep
            raise Interrupted(None, stopper.signum) from None
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
