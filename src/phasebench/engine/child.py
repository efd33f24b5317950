"""What every engine process phasebench starts shares: a free loopback port, the parent-death signal, the
wait for its health endpoint (failing early when the process exits) and the tail of its log for errors."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import EngineError


class ChildProcess:
    """What both engine starters share once their process runs: ``proc`` and ``log_path``."""

    proc: subprocess.Popen | None
    log_path: Path
    LOG_TAIL = 15

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int | None = None) -> str:
        return log_tail(self.log_path, n or self.LOG_TAIL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def pdeathsig() -> None:  # runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log_tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  | " + line for line in lines[-n:])


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, name: str, log: Path, *, tail: int = 15,
                 poll_s: float = 0.2, tick: Callable[[float], None] | None = None) -> None:
    """Poll ``url`` until it answers 200; an exit of ``proc`` or ``timeout`` seconds is an ``EngineError`` with
    the log's tail. ``tick(elapsed_s)`` is called between polls (a progress line)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise EngineError(f"{name} exited with code {proc.returncode} while starting (log {log}):\n"
                              f"{log_tail(log, tail)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if tick is not None:
            tick(time.monotonic() - t0)
        time.sleep(poll_s)
    raise EngineError(f"{name} not healthy after {timeout:.0f} s (log {log}):\n{log_tail(log, tail)}")
