"""What the client watches about itself while a run goes on: its event loop's lag and the host's CPU load.

Both answer one question: did the *client* or the *machine*, rather than the server, set a figure?

- ``LoopLag``: a heartbeat every 5 ms asks the event loop to run a callback "as soon as possible" and measures
  how long it waited. That wait is what a chunk that just arrived waits before the client reads and stamps it
  (other streams' work queued ahead of it, or a callback hogging the loop), so its tail bounds the error the
  client adds to TTFT and ITL. It measures queueing, not timer resolution (the call-later firing time is not used).
- ``HostLoad``: system-wide CPU time during the run, minus this process and the processes that serve the
  target (an embedded engine it started, or whatever listens on a loopback target's port, with its children):
  what *other* programs used. On a shared 2-core machine a busy neighbour alone can halve a measured throughput.
"""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from dataclasses import dataclass, field

import psutil

now_ns = time.perf_counter_ns

HEARTBEAT_S = 0.005


class LoopLag:
    """Samples event-loop queueing delay (ns) while running; ``start()`` inside the loop, ``stop()`` after."""

    def __init__(self, period_s: float = HEARTBEAT_S) -> None:
        self.period_s = period_s
        self.samples = array("q")
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._handle = self._loop.call_later(self.period_s, self._beat)

    def _beat(self) -> None:
        if not self._running or self._loop is None:
            return
        self._loop.call_soon(self._land, now_ns())

    def _land(self, t1: int) -> None:
        self.samples.append(now_ns() - t1)
        if self._running and self._loop is not None:
            self._handle = self._loop.call_later(self.period_s, self._beat)

    def stop(self) -> list[float]:
        """Stop sampling; the samples in milliseconds."""
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
        return [s / 1e6 for s in self.samples]


def _proc_cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0


def _busy(t: object) -> float:
    """Non-idle CPU seconds of a psutil system ``cpu_times()`` (iowait and idle excluded)."""
    total = sum(t)  # type: ignore[arg-type]
    idle = getattr(t, "idle", 0.0) + getattr(t, "iowait", 0.0)
    # guest time is already counted in user on Linux
    return total - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def server_pids(host: str | None, port: int | None) -> list[int]:
    """Processes listening on a loopback target's port (the server under test), with their children."""
    if not host or port is None or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return []
    pids: set[int] = set()
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pids.add(c.pid)
    except (psutil.AccessDenied, OSError):
        return []
    return sorted(pids)


@dataclass
class HostLoad:
    """CPU seconds used on the whole host between ``start`` and ``stop``, split by who used them."""

    exclude: list[int] = field(default_factory=list)  # pids serving the target (their children are added)
    _procs: list[psutil.Process] = field(default_factory=list)
    _t0: float = 0.0
    _sys0: float = 0.0
    _self0: float = 0.0
    _ex0: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        me = psutil.Process()
        self._procs = []
        for pid in set(self.exclude):
            if pid == me.pid:
                continue
            try:
                p = psutil.Process(pid)
                self._procs.append(p)
                self._procs.extend(p.children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self._t0 = time.monotonic()
        self._sys0 = _busy(psutil.cpu_times())
        self._self0 = _proc_cpu(me)
        self._ex0 = {p.pid: _proc_cpu(p) for p in self._procs}

    def stop(self, client_extra_cpu_s: float = 0.0) -> dict[str, float | int | None]:
        """``client_extra_cpu_s``: CPU of the client's own worker processes (counted as the client's)."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        me = psutil.Process()
        sys_busy = _busy(psutil.cpu_times()) - self._sys0
        own = _proc_cpu(me) - self._self0 + client_extra_cpu_s
        served = sum(max(_proc_cpu(p) - self._ex0.get(p.pid, 0.0), 0.0) for p in self._procs)
        other = max(sys_busy - own - served, 0.0)
        return {
            "cores": psutil.cpu_count() or os.cpu_count() or 1,
            "wall_s": wall,
            "host_busy_cores": sys_busy / wall,
            "client_cores": own / wall,
            "server_cores": served / wall if self._procs else None,
            "other_cores": other / wall,
            "server_pids": [p.pid for p in self._procs],
        }

