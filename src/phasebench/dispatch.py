"""Send every request at its time: the closed and open loops, the connection warm-up, a dead server's back-off.

``execute`` is the one place requests are dispatched, in the main process or in a client worker
(``client/workers.py``); each finished record goes to the writer at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

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


class Dispatcher:
    """What every way of sending a schedule shares (``execute``; conversations in ``conversation.py``): the
    records written as each ends, the server's health and its back-off, the stop event, the tasks in flight,
    and the watch that turns a stop (a signal, a server gone) into cancelled requests."""

    def __init__(self, client: Client, schedule: Schedule, writer: RecordWriter, progress: Progress, t0: int) -> None:
        self.client, self.writer, self.progress = client, writer, progress
        self.records: list[RequestRecord] = []
        self.tasks: set[asyncio.Task] = set()
        self.deadline_ns = t0 + int(schedule.duration_s * 1e9) if schedule.duration_s else None
        self.health = Health(now_ns())
        self.stop = asyncio.Event()
        self.stopper = STOPPER.get()

    def over(self) -> bool:
        """Stopped, or past the run's duration."""
        return self.stop.is_set() or (self.deadline_ns is not None and now_ns() >= self.deadline_ns)

    async def send(self, rec: RequestRecord, prompt: Prompt) -> RequestRecord:
        try:
            await self.client.send(rec, prompt)
        finally:
            self.records.append(rec)
            self.writer.write(rec)
            self.progress.advance(rec)
            self.health.note(rec)
            if self.health.gone:
                self.stop.set()
        return rec

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def back_off(self) -> None:
        pause = self.health.backoff_s()
        if pause:
            await asyncio.sleep(pause)

    async def slots(self, n: int, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """``n`` closed-loop slots each running ``body`` (cancelled together on a stop)."""
        workers = [asyncio.create_task(body()) for _ in range(n)]
        self.tasks.update(workers)
        await asyncio.gather(*workers)

    async def run(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> tuple[list[RequestRecord], bool, str | None]:
        """Run ``loop`` under the watch; returns (records, interrupted, gone)."""
        signalled = False
        stopper = self.stopper

        async def watch() -> None:
            nonlocal signalled
            waits = [asyncio.ensure_future(self.stop.wait())]
            if stopper is not None:
                waits.append(asyncio.ensure_future(stopper.event.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            signalled = stopper is not None and stopper.event.is_set()
            self.stop.set()
            for t in list(self.tasks):
                t.cancel()

        if stopper is not None:
            stopper.phase = "executing"
        watcher = asyncio.create_task(watch())
        try:
            try:
                await loop()
            except asyncio.CancelledError:
                if not self.stop.is_set():
                    raise
            if self.stop.is_set():  # wait for the cancelled requests to be recorded
                await asyncio.gather(*list(self.tasks), return_exceptions=True)
            return self.records, signalled, self.health.gone
        except asyncio.CancelledError:
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
            return self.records, True, self.health.gone
        finally:
            watcher.cancel()
            if stopper is not None:
                stopper.phase = "finishing"


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
    d = Dispatcher(client, schedule, writer, progress, t0)

    async def one(i: int, scheduled_rel: int) -> None:
        p = prompts[i % len(prompts)]
        await d.send(client.new_record(i, scheduled_rel, p), p)

    async def open_loop() -> None:
        assert schedule.offsets_ns is not None
        for k, off in enumerate(schedule.offsets_ns.tolist()):
            await sleep_until(t0 + off)
            if d.stop.is_set():
                break
            d.spawn(one(schedule.index(k), off))
        await d.drain()

    async def closed_loop() -> None:
        n = schedule.count
        counter = (schedule.index(k) for k in range(n if n is not None else 1 << 62))

        async def slot() -> None:
            for i in counter:
                t = now_ns()
                if d.over():
                    return
                await one(i, t - t0)
                await d.back_off()

        await d.slots(schedule.concurrency or 1, slot)

    return await d.run(open_loop if schedule.kind == "open" else closed_loop)


async def sleep_until(deadline_ns: int) -> None:
    """Never early: the event loop's timers have millisecond resolution and may fire before the deadline,
    so the last sub-millisecond is spent yielding to the loop (other streams keep being served)."""
    while True:
        left = deadline_ns - now_ns()
        if left <= 0:
            return
        await asyncio.sleep(left / 1e9 - 0.0005 if left > 1_000_000 else 0)
