"""All cores of one machine: the schedule sharded across worker processes, records streamed to the parent.

Each worker is a separate process (multiprocessing ``spawn``: a clean interpreter, no inherited event loop)
with its own event loop, connection pool and loop-lag heartbeat. It runs ``runner.execute`` on its shard of
the schedule (``Schedule.shard``: every n-th request, at the same absolute send times for an open loop), and
sends each finished record to the parent the moment it ends; the parent writes it to the run's one
``requests.jsonl`` (so nothing a worker finished is lost if it dies later). One clock for all: on Linux
``perf_counter_ns`` is ``CLOCK_MONOTONIC``, which is system-wide, so the parent's ``t0`` is every worker's ``t0``.

Protocol on each worker's pipe (bytes): worker → parent ``b"W"`` ready (warm-up done), ``b"R" + record JSON``
per finished request, ``b"F" + stats JSON`` at the end; parent → worker ``b"G" + t0`` go, ``b"S"`` stop.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable

import orjson
import psutil

from ..records import RequestRecord
from .openai import Prompt
from .transport import ClientConfig

now_ns = time.perf_counter_ns

STREAMS_PER_WORKER = 128  # `--workers auto`: a worker per this many concurrent streams, one per spare core
READY_TIMEOUT_S = 120.0
GO_MARGIN_NS = 20_000_000  # t0 is set this far ahead of "go", so every worker is waiting when it comes


def auto_workers(streams: int, cores: int | None = None) -> int:
    """One worker per spare core when the load needs it: a worker per ``STREAMS_PER_WORKER`` streams, at most
    cores − 1 (one core is left to the parent and, often, the server)."""
    cores = cores or os.cpu_count() or 1
    if streams <= STREAMS_PER_WORKER or cores < 3:
        return 1
    return max(1, min(cores - 1, math.ceil(streams / STREAMS_PER_WORKER)))


@dataclass
class WorkerJob:
    worker: int
    cfg: ClientConfig
    schedule: Any  # schedule.Schedule (its shard)
    prompts: list[Prompt]
    warm_prompts: list[Prompt]
    warm_n: int


@dataclass
class WorkerStats:
    worker: int
    pid: int | None
    records: int = 0
    cpu_s: float = 0.0
    lag_ms: list[float] = field(default_factory=list)
    interrupted: bool = False
    gone: str | None = None
    died: str | None = None  # why the worker ended without its final message
    offset_ns: int = 0  # its clock minus the driver's (Ray workers on other nodes; 0 on one machine)
    offset_uncertainty_ns: int = 0

    def manifest(self) -> dict[str, Any]:
        return {"worker": self.worker, "pid": self.pid, "records": self.records, "cpu_s": round(self.cpu_s, 3),
                "died": self.died, "clock_offset_ns": self.offset_ns,
                "clock_offset_uncertainty_ns": self.offset_uncertainty_ns}


# ---- inside a worker --------------------------------------------------------------------------------------


class _Sink:
    """The ``writer`` that ``execute`` writes to: each record goes out as soon as it ends."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self.count = 0

    def write(self, rec: RequestRecord) -> None:
        self._send(b"R" + rec.to_json())
        self.count += 1

    def close(self) -> None:
        pass


async def work(job: WorkerJob, send: Callable[[bytes], None], wait_go: Callable[[], Any]) -> dict[str, Any]:
    """Run one worker's shard: warm up, report ready, wait for t0, execute, return its stats."""
    from ..dispatch import NoProgress, execute, sleep_until, warm_up
    from ..monitor import LoopLag
    from .raw import make_client

    proc = psutil.Process()
    async with make_client(job.cfg) as client:
        await warm_up(client, job.warm_prompts, job.warm_n, max(job.warm_n, 1))
        send(b"W")
        t0 = await wait_go()
        client.t0 = t0
        cpu0 = sum(proc.cpu_times()[:2])
        lag = LoopLag()
        lag.start()
        await sleep_until(t0)
        sink = _Sink(send)
        try:
            records, interrupted, gone = await execute(client, job.schedule, job.prompts, sink, NoProgress(), t0)
        finally:
            lag_ms = lag.stop()
    return {"worker": job.worker, "pid": os.getpid(), "records": sink.count, "interrupted": interrupted,
            "gone": gone, "cpu_s": sum(proc.cpu_times()[:2]) - cpu0, "lag_ms": lag_ms}


def _process_main(job: WorkerJob, conn: Connection) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends b"S" to stop
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: do not outlive the parent
    except (OSError, AttributeError):
        pass
    from ..stops import STOPPER, run_main

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        go: asyncio.Future[int] = loop.create_future()

        def on_message() -> None:
            try:
                msg = conn.recv_bytes()
            except (EOFError, OSError):  # the parent is gone: stop
                msg = b"S"
            if msg[:1] == b"G" and not go.done():
                go.set_result(int(msg[1:]))
            elif msg[:1] == b"S":
                stopper = STOPPER.get()
                if not go.done():
                    go.cancel()
                if stopper is not None:
                    stopper.on_signal(signal.SIGTERM)

        loop.add_reader(conn.fileno(), on_message)
        try:
            return await work(job, conn.send_bytes, lambda: go)
        finally:
            loop.remove_reader(conn.fileno())

    try:
        stats = run_main(main())
    except BaseException as e:  # noqa: BLE001 - the parent must hear why, whatever it was
        stats = {"worker": job.worker, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}"[:300]}
    try:
        conn.send_bytes(b"F" + orjson.dumps(stats))
    except (BrokenPipeError, OSError):
        pass


# ---- in the parent -------------------------------------------------------------------------------------------


@dataclass
class Collector:
    """The parent's side of the protocol, for local and Ray workers alike: each record to the writer as it comes,
    the workers that are ready and those that have finished (with their final stats)."""

    stats: list[WorkerStats]
    writer: Any
    progress: Any
    records: list[RequestRecord] = field(default_factory=list)
    ready: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)

    def take(self, w: int, msg: bytes) -> bytes:
        """Apply one message from worker ``w``; returns its kind (``b"R"``, ``b"W"``, ``b"F"``)."""
        kind = msg[:1]
        if kind == b"R":
            rec = RequestRecord.from_dict(orjson.loads(msg[1:]))
            self.records.append(rec)
            self.writer.write(rec)
            self.progress.advance(rec)
            self.stats[w].records += 1
        elif kind == b"W":
            self.ready.add(w)
        elif kind == b"F":
            fin = orjson.loads(msg[1:])
            st = self.stats[w]
            st.pid = fin.get("pid", st.pid)
            st.cpu_s, st.lag_ms = fin.get("cpu_s", 0.0), fin.get("lag_ms", [])
            st.interrupted, st.gone = bool(fin.get("interrupted")), fin.get("gone")
            if fin.get("error"):
                st.died = f"worker {w} failed: {fin['error']}"
            self.finished.add(w)
        return kind


async def run_sharded(
    cfg: ClientConfig,
    schedule: Any,
    prompts: list[Prompt],
    warm_prompts: list[Prompt],
    warm_n: int,
    n_workers: int,
    writer: Any,
    progress: Any,
) -> tuple[list[RequestRecord], bool, str | None, list[WorkerStats], int]:
    """Run the schedule on ``n_workers`` processes; returns (records, interrupted, gone, per-worker stats, t0)."""
    from ..stops import STOPPER, RunError

    ctx = mp.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    stats = [WorkerStats(w, None) for w in range(n_workers)]
    per_warm = max(1, math.ceil(warm_n / n_workers)) if warm_n else 0
    for w in range(n_workers):
        parent, child = ctx.Pipe(duplex=True)
        job = WorkerJob(w, cfg, schedule.shard(w, n_workers), prompts, warm_prompts, per_warm)
        p = ctx.Process(target=_process_main, args=(job, child), name=f"phasebench-worker-{w}", daemon=True)
        p.start()
        child.close()
        conns.append(parent)
        procs.append(p)
        stats[w].pid = p.pid
    loop = asyncio.get_running_loop()
    all_ready = loop.create_future()
    all_done = loop.create_future()

    collect = Collector(stats, writer, progress)
    records, ready, finished = collect.records, collect.ready, collect.finished

    def on_readable(w: int) -> None:
        conn = conns[w]
        try:
            while conn.poll():
                if collect.take(w, conn.recv_bytes()) == b"F":
                    loop.remove_reader(conn.fileno())
                    break
        except (EOFError, OSError):
            stats[w].died = stats[w].died or f"worker {w} (pid {stats[w].pid}) died before it finished"
            finished.add(w)
            loop.remove_reader(conn.fileno())
        if len(ready | finished) == n_workers and not all_ready.done():
            all_ready.set_result(None)
        if len(finished) == n_workers and not all_done.done():
            all_done.set_result(None)

    for w, c in enumerate(conns):
        loop.add_reader(c.fileno(), on_readable, w)

    def broadcast(msg: bytes) -> None:
        for w, c in enumerate(conns):
            if w not in finished:
                try:
                    c.send_bytes(msg)
                except (BrokenPipeError, OSError):
                    pass

    stopper = STOPPER.get()
    if stopper is not None:
        stopper.phase = "executing"
    interrupted = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(all_ready), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            broadcast(b"S")
            raise RunError(f"the client workers did not start within {READY_TIMEOUT_S:.0f} s") from None
        t0 = now_ns() + GO_MARGIN_NS
        broadcast(b"G%d" % t0)
        stop_wait = asyncio.ensure_future(stopper.event.wait()) if stopper is not None else None
        waits = [all_done] + ([stop_wait] if stop_wait else [])
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not all_done.done():  # a signal: tell the workers, then collect what they finish
            interrupted = True
            broadcast(b"S")
            await all_done
        if stop_wait is not None:
            stop_wait.cancel()
    except asyncio.CancelledError:
        interrupted = True
        broadcast(b"S")
        await asyncio.shield(all_done)
        t0 = locals().get("t0", now_ns())
    finally:
        for c in conns:
            try:
                loop.remove_reader(c.fileno())
            except (ValueError, OSError):
                pass
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        for c in conns:
            c.close()
        if stopper is not None:
            stopper.phase = "finishing"
    interrupted = interrupted or any(s.interrupted for s in stats)
    gone = next((s.gone for s in stats if s.gone), None)
    return records, interrupted, gone, stats, t0
