"""Runs a spec against a server: workload -> schedule -> client -> records -> metrics -> run folder.

One function per phase of a run, in the order they happen (``discover``, ``prepare``, ``warm_up``,
``execute``, ``finish``); ``run`` strings them together. Ctrl-C during ``execute`` cancels what is in flight,
records it as cancelled, and still writes a valid summary marked partial.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import psutil

from . import env as envmod
from .monitor import HostLoad, LoopLag, server_pids
from .client.openai import Prompt
from .client.transport import Client, ClientConfig
from .metrics import RunContext, summarize
from .records import RecordWriter, RequestRecord
from .results import MANIFEST, Run, RunFolder
from .schedule import Schedule, make_schedule
from .spec import RunSpec, Scenario, SpecError
from .workload import ApproxTokenizer, HFTokenizer, ServerTokenizer, Tokenizer, build_prompts
from .workload.tokens import server_root

now_ns = time.perf_counter_ns


class RunError(RuntimeError):
    """Something stopped the whole run (unreachable server, unknown model): one clear line."""


class TargetUnreachable(RunError):
    """The server could not be reached at all (exit code 4, as for a server that goes away mid-run)."""


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


@dataclass
class Target:
    """What ``discover`` learned about the server."""

    base_url: str
    model: str
    models_answer: Any
    extra_manifest: dict[str, Any] = field(default_factory=dict)


def install_uvloop() -> bool:
    """Kept for callers that want uvloop process-wide; phasebench itself uses ``run_main`` (no policy change)."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return True
    except ImportError:
        return False


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


_STOPPER: contextvars.ContextVar[Stopper | None] = contextvars.ContextVar("phasebench_stopper", default=None)


def run_main(coro):  # noqa: ANN001, ANN201
    """Run ``coro`` to completion on a fresh event loop (uvloop when installed, without changing the process's
    event-loop policy). SIGINT, SIGTERM and SIGHUP stop it (``Stopper``); a run that was stopped raises
    ``Interrupted`` carrying the signal's number and the partial result, already on disk."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_guarded(coro))


async def _guarded(coro):  # noqa: ANN001, ANN202
    loop = asyncio.get_running_loop()
    stopper = Stopper(asyncio.current_task())
    _STOPPER.set(stopper)
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


def api_key(spec: RunSpec) -> str | None:
    if not spec.api_key_env:
        return None
    key = os.environ.get(spec.api_key_env)
    if key is None:
        raise SpecError(f"--api-key-env {spec.api_key_env}: that environment variable is not set")
    return key


# ---- phases of a run ----------------------------------------------------------------------------------


async def discover(spec: RunSpec, session: aiohttp.ClientSession, key: str | None) -> Target:
    """Ask ``/v1/models``: is the server there, and is the model one it serves?"""
    assert spec.url
    base = spec.url.rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with session.get(base + "/models", headers=headers, timeout=aiohttp.ClientTimeout(total=15)) as r:
            if r.status in (401, 403):
                raise RunError(f"{_safe(base)} refused the request (HTTP {r.status}): check --api-key-env")
            answer = await r.json(content_type=None) if r.status == 200 else None
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
        raise TargetUnreachable(f"cannot reach {_safe(base)}: {type(e).__name__} {e}".strip()) from None
    except aiohttp.ContentTypeError:
        answer = None
    served = [m.get("id") for m in (answer or {}).get("data", []) if isinstance(m, dict)] if isinstance(answer, dict) else []
    model = spec.model
    if model is None:
        if not served:
            raise RunError(f"{_safe(base)}/models lists no model; pass --model")
        model = served[0]
    elif served and model not in served:
        raise RunError(f"model {model!r} is not served by {_safe(base)}; it serves: {', '.join(map(str, served))}")
    return Target(base, model, answer)


def _safe(url: str) -> str:
    from .spec import redact_url

    return redact_url(url) or ""


async def make_tokenizer(spec: RunSpec, session: aiohttp.ClientSession, target: Target) -> Tokenizer:
    t = spec.tokenizer
    if t == "approx":
        return ApproxTokenizer()
    if t and t != "server":
        return HFTokenizer(t)
    st = ServerTokenizer(server_root(target.base_url), session, target.model)
    if await st.probe():
        return st
    if t == "server":
        raise RunError("--tokenizer server: the server has no working /tokenize endpoint")
    return ApproxTokenizer()


def request_count(schedule: Schedule) -> int:
    """How many distinct prompts to prepare (duration-bounded closed loops cycle through a pool)."""
    if schedule.offsets_ns is not None:
        return len(schedule.offsets_ns)
    return schedule.count if schedule.count else 512


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
    stopper = _STOPPER.get()
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
        for i, off in enumerate(schedule.offsets_ns.tolist()):
            await sleep_until(t0 + off)
            if stop.is_set():
                break
            task = asyncio.create_task(one(i, off))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)

    async def closed_loop() -> None:
        n = schedule.count
        counter = iter(range(n if n is not None else 1 << 62))

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


def target_rate(spec: RunSpec) -> float | None:
    return spec.rate[0] if spec.scenario == Scenario.server and spec.rate else None


def manifest_for(spec: RunSpec, target: Target, tok: Tokenizer, t0_wall: str, extra: dict[str, Any]) -> dict[str, Any]:
    from . import __version__

    return {
        "kind": "run",
        "simulated": False,
        "phasebench_version": __version__,
        "created": t0_wall,
        "spec": spec.public_dict(),
        "target": {"url": _safe(target.base_url), "model": target.model, "models": target.models_answer},
        "tokenizer": tok.name,
        "clock": "time.perf_counter_ns (CLOCK_MONOTONIC), ns relative to t0",
        "environment": envmod.environment(),
        **target.extra_manifest,
        **extra,
    }


async def run_one(
    spec: RunSpec,
    progress: Progress | None = None,
    extra_manifest: dict[str, Any] | None = None,
    label: str | None = None,
) -> Run:
    """One run (not a sweep) end to end."""
    progress = progress or NoProgress()
    stopper = _STOPPER.get()
    if stopper is not None:
        stopper.phase = "idle"
    key = api_key(spec)
    if spec.url is None:
        raise SpecError("no --url given (phasebench run without --url starts the embedded engine)")
    schedule = make_schedule(spec)
    check_roofline_inputs(spec, extra_manifest or {})
    from .quality import options_for  # --quality: the probe set (and reference) read before any traffic

    quality = options_for(spec)
    if spec.out and (Path(spec.out) / MANIFEST).exists():
        raise FileExistsError(f"{spec.out} already holds a run; choose another --out")
    async with aiohttp.ClientSession() as meta_session:
        target = await discover(spec, meta_session, key)
        tok = await make_tokenizer(spec, meta_session, target)
        prompts = await build_prompts(spec, tok, request_count(schedule))
        warm_prompts = await build_prompts(spec, tok, min(spec.warmup_requests, 8), seed_offset=10_000) if spec.warmup_requests else []
    if quality:  # the probes join the load at seeded places (phasebench.quality.mix)
        from .quality.mix import mix

        schedule, prompts = mix(schedule, prompts, quality.probe_set, spec.seed)
    conc_hint = schedule.concurrency or min(len(prompts), spec.max_connections)
    max_conn = max(1, min(spec.max_connections, max(conc_hint, 1)))
    ensure_open_files(max_conn, spec)
    cfg = ClientConfig(
        base_url=target.base_url,
        model=target.model,
        endpoint=spec.endpoint,
        api_key=key,
        exact_output=spec.exact_output,
        temperature=spec.temperature,
        timeout=spec.timeout,
        stall_timeout=spec.stall_timeout,
        max_connections=max_conn,
    )
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest = manifest_for(spec, target, tok, created, extra_manifest or {})
    proc = psutil.Process()
    host = HostLoad(exclude=_serving_pids(target))
    lag = LoopLag()
    async with Client(cfg) as client:
        await warm_up(client, warm_prompts, spec.warmup_requests, schedule.concurrency or 4)
        # the folder appears only now: a run that fails to start leaves no empty folder behind; from here on the
        # manifest is on disk before the first record, so even a SIGKILL leaves a readable folder
        folder = RunFolder(spec.out) if spec.out else None
        path = folder.path if folder else None
        if folder:
            folder.write_manifest(manifest)
        writer = RecordWriter(folder.requests_path) if folder else _NullWriter()
        if quality:  # probe records go to quality.jsonl, the load's to requests.jsonl
            from .quality.mix import ProbeWriter

            writer = ProbeWriter(writer, path)
        cpu0 = sum(proc.cpu_times()[:2])
        host.start()
        lag.start()
        t0 = now_ns()
        client.t0 = t0
        progress.start(label or spec.scenario.value, schedule.count, schedule.duration_s)
        try:
            records, interrupted, gone = await execute(client, schedule, prompts, writer, progress, t0)
        finally:
            progress.stop()
            wall = (now_ns() - t0) / 1e9
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            lag_ms = lag.stop()
            host_load = host.stop()
            writer.close()
        alone = None
        if quality and quality.alone and not interrupted and gone is None:
            from .quality.mix import alone as send_alone

            alone = await send_alone(client, quality.probe_set, path)
    ctx = RunContext(
        scenario=spec.scenario.value,
        slo=spec.slo,
        warmup_s=spec.warmup,
        cooldown_s=spec.cooldown,
        target_rate=target_rate(spec),
        burstiness=spec.burstiness if spec.scenario == Scenario.server else None,
        concurrency=schedule.concurrency,
        client_cpu_s=cpu,
        wall_s=wall,
        partial=interrupted or gone is not None,
        stopped=gone,
        exact_output=spec.exact_output,
        mlperf=spec.mlperf,
        loop_lag_ms=lag_ms,
        host=host_load,
        extra_warnings=[] if tok.exact else ["no exact tokenizer: prompt lengths are approximate (see prompt_tokens)"],
    )
    records.sort(key=lambda r: r.index)
    if quality:
        from .quality import apply_validity, quality_block
        from .quality.mix import split

        records, probe_records = split(records)
    summary = summarize(records, ctx)
    if quality:  # scored after the run; an invalid quality block makes the run invalid
        apply_validity(summary, quality_block(quality, probe_records, alone))
    summary["phasebench"]["roofline"] = roofline_block(manifest, summary)
    from .cost import cost_block

    hw = spec.hardware or ("local" if summary["phasebench"]["roofline"] else None)
    summary["phasebench"]["cost"] = cost_block(hw, spec.devices, summary, spec.price_per_hour)
    manifest["t0_monotonic_ns"] = t0
    if folder:
        folder.write_manifest(manifest)
        folder.write_summary(summary)
    result = Run(path, manifest, summary, records)
    if interrupted or (stopper is not None and stopper.signum is not None):  # a signal while results were written
        raise Interrupted(result)
    if gone:
        raise ServerGone(result, gone)
    return result


# Descriptors the client needs besides one per connection: the run folder, the event loop, the metadata session.
FD_MARGIN = 64


def ensure_open_files(connections: int, spec: RunSpec) -> None:
    """One socket per connection: raise the soft open-files limit if it is too low, or refuse before starting."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    need = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard == resource.RLIM_INFINITY or hard >= need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return
        except (ValueError, OSError):
            pass
    what = f"--concurrency {spec.concurrency[0]}" if spec.scenario != Scenario.server else f"{connections} connections"
    raise SpecError(
        f"{what} needs about {need} open files, but this process may open only {soft} (hard limit {hard}); "
        f"raise it (e.g. `ulimit -n {max(need, 4096)}`) or lower the load / --max-connections"
    )


def _serving_pids(target: Target) -> list[int]:
    """The processes serving a loopback target (the embedded engine, a local vLLM, the mock server)."""
    from yarl import URL

    try:
        u = URL(target.base_url)
    except (ValueError, TypeError):
        return []
    return server_pids(u.host, u.port)


def check_roofline_inputs(spec: RunSpec, extra: dict[str, Any]) -> None:
    """Before any traffic: the run's model and hardware (for MBU/MFU) must resolve; probe if 'local' is unknown."""
    from .model.errors import ModelError
    from .model.utilization import ensure_local_hardware, resolve

    if not (spec.model_spec or extra.get("model_file")):
        return
    try:
        if (spec.hardware or "local") == "local":
            ensure_local_hardware(quick=True)
        resolve({"spec": spec.public_dict(), **extra})
    except ModelError as e:
        raise SpecError(f"--model-spec/--hardware: {e}") from None


def roofline_block(manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any] | None:
    """MBU/MFU and the predicted phases; an error here is recorded, never allowed to lose the run."""
    from .model.errors import ModelError
    from .model.utilization import utilization

    try:
        return utilization(manifest, summary)
    except (ModelError, OSError, ValueError, ZeroDivisionError) as e:
        return {"error": f"roofline not computed: {e}"}


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


class _NullWriter:
    count = 0

    def write(self, rec: RequestRecord) -> None:
        self.count += 1

    def close(self) -> None:
        pass


async def run_async(spec: RunSpec, progress: Progress | None = None, extra_manifest: dict[str, Any] | None = None) -> Run:
    """A run or a sweep. A sweep writes one sub-folder per point and a summary table of the points."""
    try:
        result = await _run_or_sweep(spec, progress, extra_manifest)
    except RunStopped as e:
        if e.run is not None:
            _record(e.run)
        raise
    _record(result)
    return result


def _record(run: Run) -> None:
    """Add a finished (or interrupted) run to the results database; a failure there is a warning only."""
    if run.path is None:
        return
    from .store import record_run

    _, warning = record_run(run)
    if warning:
        sys.stderr.write(f"warning: {warning}\n")


async def _run_or_sweep(spec: RunSpec, progress: Progress | None, extra_manifest: dict[str, Any] | None) -> Run:
    points = spec.sweep_points()
    if len(points) == 1 and spec.scenario != Scenario.sweep:
        return await run_one(spec, progress, extra_manifest)
    from . import __version__

    folder = RunFolder(spec.out) if spec.out else None
    children: list[Run] = []
    names: list[str] = []
    manifest = {
        "kind": "sweep",
        "simulated": False,
        "phasebench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.public_dict(),
        "children": names,
        "environment": envmod.environment(),
        **(extra_manifest or {}),
    }
    stopped: RunStopped | None = None

    def save() -> dict[str, Any]:
        summary = sweep_summary(children, names, stopped is not None, str(stopped) if isinstance(stopped, ServerGone) else None)
        if folder:  # written after every point, so a killed sweep is still a readable folder
            folder.write_manifest(manifest)
            folder.write_summary(summary)
        return summary

    save()
    for i, p in enumerate(points):
        name = f"{i:02d}-" + (f"rate{p.rate[0]:g}" if p.scenario == Scenario.server else f"c{p.concurrency[0]}")
        sub = p.model_copy(update={"out": (folder.path / name) if folder else None, "seed": spec.seed + i})
        try:
            children.append(await run_one(sub, progress, extra_manifest, label=name))
        except RunStopped as e:
            stopped = e
            if e.run is not None:
                children.append(e.run)
        except asyncio.CancelledError:  # stopped before this point sent anything
            stopped = Interrupted(None)
        if len(children) > len(names):
            names.append(name)
        summary = save()
        if stopped is not None:
            break
    result = Run(folder.path if folder else None, manifest, summary, [], children)
    if isinstance(stopped, ServerGone):
        raise ServerGone(result, str(stopped))
    if stopped is not None:
        raise Interrupted(result)
    return result


SWEEP_KEYS = (
    "max_concurrency",
    "request_rate",
    "completed",
    "failed",
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_e2el_ms",
    "request_goodput",
)


def sweep_summary(children: list[Run], names: list[str], stopped: bool, reason: str | None = None) -> dict[str, Any]:
    rows = []
    for name, c in zip(names, children):
        row = {"point": name, **{k: c.summary.get(k) for k in SWEEP_KEYS}}
        row["valid"] = c.valid
        rows.append(row)
    reasons = [reason] if reason else (["partial: the sweep was stopped before its last point"] if stopped else [])
    return {"points": rows, "phasebench": {"valid": all(r["valid"] for r in rows) and not stopped and bool(rows),
                                            "partial": stopped, "reasons": reasons, "warnings": []}}


def run(spec: RunSpec, progress: Progress | None = None) -> Run:
    """Python API: run a spec (or sweep) against ``spec.url``; returns the ``Run`` (also on disk if ``out``).

    Works from plain code and from inside a running event loop (Jupyter): there it runs on a fresh loop in a
    worker thread. The process's event-loop policy is left alone. In async code, ``await arun(spec)``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_main(run_async(spec, progress))
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run_main, run_async(spec, progress)).result()


async def arun(spec: RunSpec, progress: Progress | None = None) -> Run:
    """Python API, async: run a spec (or sweep) in the caller's event loop."""
    return await run_async(spec, progress)
