"""Runs a spec against a server: workload -> schedule -> client -> records -> metrics -> run folder.

One function per phase of a run, in the order they happen (``discover``, ``prepare``, ``warm_up``,
``execute``, ``finish``); ``run`` strings them together. Ctrl-C during ``execute`` cancels what is in flight,
records it as cancelled, and still writes a valid summary marked partial.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import psutil

from . import env as envmod
from .client.openai import Prompt
from .client.transport import Client, ClientConfig
from .metrics import RunContext, summarize
from .records import RecordWriter, RequestRecord
from .results import Run, RunFolder
from .schedule import Schedule, make_schedule
from .serverview.session import close_scraper, open_scraper
from .spec import RunSpec, Scenario, SpecError
from .workload import ApproxTokenizer, HFTokenizer, ServerTokenizer, Tokenizer, build_prompts
from .workload.synthetic import new_nonce
from .workload.tokens import server_root

now_ns = time.perf_counter_ns


class RunError(RuntimeError):
    """Something stopped the whole run (unreachable server, unknown model): one clear line."""


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
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return True
    except ImportError:
        return False


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
        raise RunError(f"cannot reach {_safe(base)}: {type(e).__name__} {e}".strip()) from None
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
    from .client.engines import detect_engine  # which engine (manifest; its exact-length knobs)

    from .engine.process import managed_manifest  # started by `phasebench engine start`: version, flags, log

    engine = await detect_engine(session, server_root(base), answer, headers)
    managed = managed_manifest(base)
    return Target(base, model, answer, {"server_engine": engine.to_dict(), **({"engine": managed} if managed else {})})


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


async def execute(
    client: Client,
    schedule: Schedule,
    prompts: list[Prompt],
    writer: RecordWriter,
    progress: Progress,
    t0: int,
) -> tuple[list[RequestRecord], bool]:
    """Send every request at its time; returns (records, interrupted). Records are on disk as each ends."""
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task] = set()
    deadline_ns = t0 + int(schedule.duration_s * 1e9) if schedule.duration_s else None

    async def one(i: int, scheduled_rel: int) -> None:
        p = prompts[i % len(prompts)]
        rec = client.new_record(i, scheduled_rel, p)
        try:
            await client.send(rec, p)
        finally:
            records.append(rec)
            writer.write(rec)
            progress.advance(rec)

    async def open_loop() -> None:
        assert schedule.offsets_ns is not None
        for i, off in enumerate(schedule.offsets_ns.tolist()):
            await sleep_until(t0 + off)
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
                if deadline_ns is not None and t >= deadline_ns:
                    return
                await one(i, t - t0)

        conc = schedule.concurrency or 1
        workers = [asyncio.create_task(worker()) for _ in range(conc)]
        tasks.update(workers)
        await asyncio.gather(*workers)

    try:
        await (open_loop() if schedule.kind == "open" else closed_loop())
        return records, False
    except asyncio.CancelledError:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*list(tasks), return_exceptions=True)
        return records, True


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
    key = api_key(spec)
    if spec.url is None:
        raise SpecError("no --url given (phasebench run without --url starts the embedded engine)")
    schedule = make_schedule(spec)
    if spec.nonce is None:  # fresh prompts each run unless a seed was given (no accidental prefix-cache hits)
        spec = spec.model_copy(update={"nonce": new_nonce()})
    check_roofline_inputs(spec, extra_manifest or {})
    folder = RunFolder(spec.out) if spec.out else None
    async with aiohttp.ClientSession() as meta_session:
        target = await discover(spec, meta_session, key)
        tok = await make_tokenizer(spec, meta_session, target)
        prompts = await build_prompts(spec, tok, request_count(schedule))
        warm_prompts = await build_prompts(spec, tok, min(spec.warmup_requests, 8), seed_offset=10_000) if spec.warmup_requests else []
    conc_hint = schedule.concurrency or min(len(prompts), spec.max_connections)
    cfg = ClientConfig(
        base_url=target.base_url,
        model=target.model,
        endpoint=spec.endpoint,
        api_key=key,
        exact_output=spec.exact_output,
        temperature=spec.temperature,
        timeout=spec.timeout,
        stall_timeout=spec.stall_timeout,
        max_connections=max(1, min(spec.max_connections, max(conc_hint, 1))),
    )
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest = manifest_for(spec, target, tok, created, extra_manifest or {})
    path = folder.path if folder else None
    if folder:
        folder.write_manifest(manifest)
    writer = RecordWriter(folder.requests_path) if folder else _NullWriter()
    proc = psutil.Process()
    async with Client(cfg) as client:
        await warm_up(client, warm_prompts, spec.warmup_requests, schedule.concurrency or 4)
        scraper = await open_scraper(spec, target.base_url, path, key)  # the engine's /metrics, before
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = now_ns()
        client.t0 = t0
        if scraper:
            scraper.start(t0)
        progress.start(label or spec.scenario.value, schedule.count, schedule.duration_s)
        try:
            records, interrupted = await execute(client, schedule, prompts, writer, progress, t0)
        finally:
            progress.stop()
            wall = (now_ns() - t0) / 1e9
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            writer.close()
            if scraper:
                await asyncio.to_thread(scraper.finish)  # and after
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
        partial=interrupted,
        exact_output=spec.exact_output,
        mlperf=spec.mlperf,
        extra_warnings=[] if tok.exact else ["no exact tokenizer: prompt lengths are approximate (see prompt_tokens)"],
    )
    records.sort(key=lambda r: r.index)
    summary = summarize(records, ctx)
    summary["phasebench"]["roofline"] = roofline_block(manifest, summary)
    summary["phasebench"]["server_view"] = await close_scraper(scraper, spec, records, summary)
    from .server_checks import server_saw  # did the server see what was asked (lengths, context, errors)

    summary["phasebench"]["warnings"] += server_saw(records, prompts, tok.name, target.models_answer, target.model)
    from .cost import cost_block

    hw = spec.hardware or ("local" if summary["phasebench"]["roofline"] else None)
    summary["phasebench"]["cost"] = cost_block(hw, spec.devices, summary, spec.price_per_hour)
    manifest["t0_monotonic_ns"] = t0
    if folder:
        folder.write_manifest(manifest)
        folder.write_summary(summary)
    result = Run(path, manifest, summary, records)
    if interrupted:
        raise Interrupted(result)
    return result


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


class Interrupted(Exception):
    """Ctrl-C during a run: carries the partial (but valid on disk) result."""

    def __init__(self, run: Run) -> None:
        super().__init__("interrupted")
        self.run = run


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
    except Interrupted as e:
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
    folder = RunFolder(spec.out) if spec.out else None
    children: list[Run] = []
    names: list[str] = []
    interrupted = False
    for i, p in enumerate(points):
        name = f"{i:02d}-" + (f"rate{p.rate[0]:g}" if p.scenario == Scenario.server else f"c{p.concurrency[0]}")
        sub = p.model_copy(update={"out": (folder.path / name) if folder else None, "seed": spec.seed + i})
        try:
            children.append(await run_one(sub, progress, extra_manifest, label=name))
        except Interrupted as e:
            children.append(e.run)
            interrupted = True
        names.append(name)
        if interrupted:
            break
    from . import __version__

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
    summary = sweep_summary(children, names, interrupted)
    if folder:
        folder.write_manifest(manifest)
        folder.write_summary(summary)
    result = Run(folder.path if folder else None, manifest, summary, [], children)
    if interrupted:
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


def sweep_summary(children: list[Run], names: list[str], interrupted: bool) -> dict[str, Any]:
    rows = []
    for name, c in zip(names, children):
        row = {"point": name, **{k: c.summary.get(k) for k in SWEEP_KEYS}}
        row["valid"] = c.valid
        rows.append(row)
    return {"points": rows, "phasebench": {"valid": all(r["valid"] for r in rows) and not interrupted,
                                            "partial": interrupted, "reasons": [], "warnings": []}}


def run(spec: RunSpec, progress: Progress | None = None) -> Run:
    """Python API: run a spec (or sweep) against ``spec.url``; returns the ``Run`` (also on disk if ``out``)."""
    install_uvloop()
    return asyncio.run(run_async(spec, progress))

