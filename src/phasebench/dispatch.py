"""Send every request at its time: the closed and open loops, the connection warm-up, a dead server's back-off.

``execute`` is the one place requests are dispatched, in the main process or in a client worker
(``client/workers.py``); each finished record goes to the writer at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from .client.openai import Prompt
from .client.transport import Client
from .records import RecordWriter, RequestRecord
from .schedule import Schedule
from .stops import STOPPER

now_ns = time.perf_counter_ns


class Progress(Protocol):
    def start(self, label: str, total: int | None, duration: float | None) -> None: ...
    def advance(self, rec: RequestRecord) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, label: str, total: int | None, duration: float | None) -> None:
        pass

    def advance(self, rec: RequestRecord) -> None:
        pass

    def stop(self) -> None:
        pass


async def warm_up(client: Client, prompts: list[Prompt], n: int, concurrency: int) -> int:
    """Send ``n`` requests, discard them: opens connections and warms the server before the window."""
    if n <= 0:
        return 0
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int) -> None:
        async with sem:
            p = prompts[i % len(prompts)]
            rec = client.new_record(-1 - i, 0, p)
            await client.send(rec, p)

    await asyncio.gather(*(one(i) for i in range(n)))
    return n


# A server that stops answering: after this many requests in a row failed to connect (no byte came back), and
# no request has succeeded for this long, the run stops early instead of writing failures at full speed.
GONE_AFTER_FAILURES = 20
GONE_AFTER_S = 3.0
BACKOFF_MAX_S = 1.0
_NO_ANSWER = ("connection", "timeout")


@dataclass
class Health:
    """Consecutive connection failures, for back-off and for stopping a run whose server has gone."""

    t0: int
    failures: int = 0
    last_ok_ns: int = 0
    last_error: str | None = None
    gone: str | None = None

    def __post_init__(self) -> None:
        self.last_ok_ns = self.t0

    def note(self, rec: RequestRecord) -> None:
        if rec.headers_ns is not None or rec.error_type not in _NO_ANSWER:
            self.failures = 0
            self.last_ok_ns = now_ns()
            return
        self.failures += 1
        self.last_error = rec.error
        quiet_s = (now_ns() - self.last_ok_ns) / 1e9
        if self.failures >= GONE_AFTER_FAILURES and quiet_s >= GONE_AFTER_S and self.gone is None:
            self.gone = (
                f"the server stopped answering: {self.failures} requests in a row got no answer over "
                f"{quiet_s:.1f} s (last: {self.last_error}); stopped early"
            )

    def backoff_s(self) -> float:
        return 0.0 if self.failures == 0 else min(BACKOFF_MAX_S, 0.01 * 2 ** min(self.failures - 1, 10))


async def execute(
    client: Client,
    schedule: Schedule,
    prompts: list[Prompt],
    writer: RecordWriter,
    progress: Progress,
    t0: int,
) -> tuple[list[RequestRecord], bool, str | None]:
    """Send every request at its time; returns (records, interrupted, gone). Records are on disk as each ends.

    ``gone`` is the reason the run stopped early because the server stopped answering (``Health``); closed-loop
    slots back off exponentially after each failure to connect, so a dead server is not hammered."""
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task] = set()
    deadline_ns = t0 + int(schedule.duration_s * 1e9) if schedule.duration_s else None
    health = Health(now_ns())
    stop = asyncio.Event()
    stopper = STOPPER.get()
    signalled = False

    async def one(i: int, scheduled_rel: int) -> None:
        p = prompts[i % len(prompts)]
        rec = client.new_record(i, scheduled_rel, p)
        try:
            await client.send(rec, p)
        finally:
            records.append(rec)
            writer.write(rec)
            progress.advance(rec)
            health.note(rec)
            if health.gone:
                stop.set()

    async def open_loop() -> None:
        assert schedule.offsets_ns is not None
        for k, off in enumerate(schedule.offsets_ns.tolist()):
            await sleep_until(t0 + off)
            if stop.is_set():
                break
            task = asyncio.create_task(one(schedule.index(k), off))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)

    async def closed_loop() -> None:
        n = schedule.count
        counter = (schedule.index(k) for k in range(n if n is not None else 1 << 62))

        async def worker() -> None:
            for i in counter:
                t = now_ns()
                if stop.is_set() or (deadline_ns is not None and t >= deadline_ns):
                    return
                await one(i, t - t0)
                pause = health.backoff_s()
                if pause:
                    await asyncio.sleep(pause)

        conc = schedule.concurrency or 1
        workers = [asyncio.create_task(worker()) for _ in range(conc)]
        tasks.update(workers)
        await asyncio.gather(*workers)

    async def watch() -> None:
        nonlocal signalled
        waits = [asyncio.ensure_future(stop.wait())]
        if stopper is not None:
            waits.append(asyncio.ensure_future(stopper.event.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        signalled = stopper is not None and stopper.event.is_set()
        stop.set()
        for t in list(tasks):
            t.cancel()

    if stopper is not None:
        stopper.phase = "executing"
    watcher = asyncio.create_task(watch())
    try:
        try:
            await (open_loop() if schedule.kind == "open" else closed_loop())
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        if stop.is_set():  # wait for the cancelled requests to be recorded
            await asyncio.gather(*list(tasks), return_exceptions=True)
        return records, signalled, health.gone
    except asyncio.CancelledError:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*list(tasks), return_exceptions=True)
        return records, True, health.gone
    finally:
        watcher.cancel()
        if stopper is not None:
            stopper.phase = "finishing"


async def sleep_until(deadline_ns: int) -> None:
    """Never early: the event loop's timers have millisecond resolution and may fire before the deadline,
    so the last sub-millisecond is spent yielding to the loop (other streams keep being served)."""
    while True:
        left = deadline_ns - now_ns()
        if left <= 0:
            return
        await asyncio.sleep(left / 1e9 - 0.0005 if left > 1_000_000 else 0)
