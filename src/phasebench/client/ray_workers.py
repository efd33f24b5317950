"""Beyond one machine: the client workers as Ray actors on a cluster's nodes (extra ``phasebench[ray]``).

Each actor runs the same worker as a local process (``workers.work``: warm up, wait for t0, ``execute`` its
shard) on a thread with its own event loop, and buffers its finished records; the driver drains them every
50 ms and writes them to the run folder as they come. Latencies are always differences on one worker's own
clock. Schedule alignment across nodes uses a start barrier (every actor reports ready before any is told to
go) and a measured clock offset per actor (the best of several round trips: offset = actor clock − midpoint
of the driver's send and receive, uncertainty = half the round trip), recorded per worker in the manifest.

``--ray auto`` joins a running cluster (``RAY_ADDRESS``) or starts a local instance; ``--ray ADDRESS`` joins
that one. A local instance is started with its node address on 127.0.0.1 and no dashboard; Ray's own daemons
(GCS, raylet, object store) still listen on ports of their choosing, on every interface, by Ray's design: see
docs/scale.md.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from typing import Any

import orjson

from ..records import RequestRecord
from .openai import Prompt
from .transport import ClientConfig
from .workers import GO_MARGIN_NS, Collector, WorkerJob, WorkerStats

now_ns = time.perf_counter_ns

POLL_S = 0.05
PING_ROUNDS = 7
RAY_GO_MARGIN_NS = 200_000_000 + GO_MARGIN_NS  # Ray calls take milliseconds: give every actor time to hear "go"


class _Actor:
    """The Ray actor body (wrapped with ``ray.remote`` at run time, so Ray is imported only when used)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out: list[bytes] = []
        self._go = threading.Event()
        self._t0 = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopper: Any = None
        self._thread: threading.Thread | None = None

    def now(self) -> int:
        return now_ns()

    def _send(self, msg: bytes) -> None:
        with self._lock:
            self._out.append(msg)

    def start(self, job: WorkerJob) -> None:
        from ..stops import STOPPER, run_main
        from .workers import work

        async def wait_go() -> int:
            while not self._go.is_set():
                await asyncio.sleep(0.002)
            return self._t0

        async def main() -> dict[str, Any]:
            self._loop = asyncio.get_running_loop()
            self._stopper = STOPPER.get()
            return await work(job, self._send, wait_go)

        def body() -> None:
            import os

            try:
                stats = run_main(main())
            except BaseException as e:  # noqa: BLE001 - the driver must hear why
                stats = {"worker": job.worker, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}"[:300]}
            self._send(b"F" + orjson.dumps(stats))

        self._thread = threading.Thread(target=body, name=f"phasebench-ray-worker-{job.worker}", daemon=True)
        self._thread.start()

    def go(self, t0_local: int) -> None:
        self._t0 = t0_local
        self._go.set()

    def drain(self) -> list[bytes]:
        with self._lock:
            out, self._out = self._out, []
        return out

    def stop(self) -> None:
        if self._loop is not None and self._stopper is not None:
            self._loop.call_soon_threadsafe(self._stopper.on_signal, signal.SIGTERM)
        self._go.set()


def _init_ray(address: str) -> bool:
    """Connect to (or start) Ray; True when this call started a local instance (to be shut down after)."""
    try:
        import ray
    except ImportError:
        from ..stops import RunError

        raise RunError("--ray needs Ray: pip install 'phasebench[ray]'") from None
    if ray.is_initialized():
        return False
    if address != "auto":
        ray.init(address=address, log_to_driver=False)
        return False
    import os

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        return False
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             num_cpus=os.cpu_count() or 1)
    return True


def _clock_offset(ray: Any, actor: Any) -> tuple[int, int]:
    best: tuple[int, int] | None = None
    for _ in range(PING_ROUNDS):
        t1 = now_ns()
        theirs = ray.get(actor.now.remote())
        t2 = now_ns()
        half = (t2 - t1) // 2
        sample = (theirs - (t1 + half), half)
        if best is None or sample[1] < best[1]:
            best = sample
    assert best is not None
    return best


async def run_on_ray(
    address: str,
    cfg: ClientConfig,
    schedule: Any,
    prompts: list[Prompt],
    warm_prompts: list[Prompt],
    warm_n: int,
    n_workers: int,
    writer: Any,
    progress: Any,
) -> tuple[list[RequestRecord], bool, str | None, list[WorkerStats], int]:
    """``run_sharded``'s twin on Ray actors: returns (records, interrupted, gone, per-worker stats, t0)."""
    from ..stops import STOPPER, RunError

    started = await asyncio.to_thread(_init_ray, address)
    import ray

    Actor = ray.remote(num_cpus=0)(_Actor)
    actors = [Actor.remote() for _ in range(n_workers)]
    stats = [WorkerStats(w, None) for w in range(n_workers)]
    collect = Collector(stats, writer, progress)
    records, finished = collect.records, collect.finished
    stopper = STOPPER.get()
    interrupted = False
    per_warm = max(1, math.ceil(warm_n / n_workers)) if warm_n else 0
    t0 = now_ns()
    try:
        for w, a in enumerate(actors):
            stats[w].offset_ns, stats[w].offset_uncertainty_ns = await asyncio.to_thread(_clock_offset, ray, a)
            job = WorkerJob(w, cfg, schedule.shard(w, n_workers), prompts, warm_prompts, per_warm)
            await asyncio.to_thread(ray.get, a.start.remote(job))
        if stopper is not None:
            stopper.phase = "executing"
        ready = collect.ready

        def take(w: int, msgs: list[bytes]) -> None:
            for msg in msgs:
                collect.take(w, msg)

        async def drain() -> None:
            refs = {w: a.drain.remote() for w, a in enumerate(actors) if w not in finished}
            for w, ref in refs.items():
                try:
                    take(w, await asyncio.to_thread(ray.get, ref))
                except ray.exceptions.RayError as e:
                    stats[w].died = f"worker {w} (Ray actor) died: {type(e).__name__}"
                    finished.add(w)

        deadline = time.monotonic() + 120
        while len(ready | finished) < n_workers:
            if time.monotonic() > deadline:
                raise RunError("the Ray workers did not start within 120 s")
            await drain()
            await asyncio.sleep(POLL_S)
        t0 = now_ns() + RAY_GO_MARGIN_NS
        for w, a in enumerate(actors):
            a.go.remote(t0 + stats[w].offset_ns)
        while len(finished) < n_workers:
            if stopper is not None and stopper.event.is_set() and not interrupted:
                interrupted = True
                for a in actors:
                    a.stop.remote()
            await drain()
            await asyncio.sleep(POLL_S)
    except asyncio.CancelledError:
        interrupted = True
        for a in actors:
            a.stop.remote()
        raise
    finally:
        if stopper is not None:
            stopper.phase = "finishing"
        for a in actors:
            ray.kill(a)
        if started:
            await asyncio.to_thread(ray.shutdown)
    interrupted = interrupted or any(s.interrupted for s in stats)
    gone = next((s.gone for s in stats if s.gone), None)
    return records, interrupted, gone, stats, t0
