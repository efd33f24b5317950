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
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from . import env as envmod
from .analysis import Measured, RunAnalysis, analyse, write_run
from .client.raw import choose_transport, make_client
from .client.transport import ClientConfig
from .client.workers import auto_workers
from .conversation import build_conversations, completions_template, run_conversations
from .dispatch import NoProgress, Progress, execute, sleep_until, warm_up  # noqa: F401 - re-exported
from .metrics import RunContext
from .monitor import HostLoad, LoopLag, server_pids
from .records import RecordWriter, RequestRecord
from .results import MANIFEST, Run, RunFolder
from .schedule import Schedule, make_schedule, trace_schedule
from .serverview.session import open_scraper
from .spec import LengthDist, RunSpec, Scenario, SpecError, url_hint
from .stops import (  # noqa: F401 - re-exported: the public names live on phasebench.runner too
    STOP_SIGNALS,
    STOPPER,
    Interrupted,
    RunError,
    RunStopped,
    ServerGone,
    Stopper,
    TargetUnreachable,
    run_main,
)
from .workload import ApproxTokenizer, HFTokenizer, ServerTokenizer, Tokenizer, build_prompts
from .workload.synthetic import new_nonce
from .workload.templates import describe as describe_template
from .workload.templates import warnings_for as template_warnings
from .workload.tokens import server_root
from .workload.traces import load_spec_trace, trace_prompts

now_ns = time.perf_counter_ns


@dataclass
class Target:
    """What ``discover`` learned about the server."""

    base_url: str
    model: str
    models_answer: Any
    extra_manifest: dict[str, Any] = field(default_factory=dict)


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
            raise RunError(f"{_safe(base)}/models lists no model; pass --model" + url_hint(base))
        model = served[0]
    elif served and model not in served:
        raise RunError(f"model {model!r} is not served by {_safe(base)}; it serves: {', '.join(map(str, served))}")
    from .client.engines import detect_engine  # which engine (manifest; its exact-length knobs)
    from .engine.process import managed_manifest  # started by `phasebench engine start`: version, flags, log

    engine = await detect_engine(session, server_root(base), answer, headers)
    managed = managed_manifest(base)
    return Target(base, model, _scrubbed(answer, spec, key), {"server_engine": engine.to_dict(), **({"engine": managed} if managed else {})})


def _scrubbed(answer: Any, spec: RunSpec, key: str | None) -> Any:
    """The /v1/models answer as stored in the manifest: any secret it echoes (the API key, a URL password)
    replaced by ***."""
    from .client.transport import ClientConfig, scrub, secrets_of

    secrets = secrets_of(ClientConfig(base_url=spec.url or "", model="", api_key=key, headers=spec.headers))
    if not secrets or answer is None:
        return answer
    import orjson

    text = orjson.dumps(answer).decode()
    clean = scrub(text, secrets)
    return answer if clean == text else orjson.loads(clean)


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


WARM_CONNECTIONS_MAX = 256
WARM_CONNECTIONS_OPEN_LOOP = 16


def warmup_plan(spec: RunSpec, schedule: Schedule) -> tuple[int, RunSpec]:
    """What to send before the window. ``--warmup-requests N``: N requests of the run's own shape (they warm the
    server too). Default: one short request per connection the run will hold (closed loop: its concurrency;
    open loop: up to 16), all at once, so the first measured wave finds its connections open and measures the
    server rather than the client's connection set-up."""
    if spec.warmup_requests is not None:
        return spec.warmup_requests, spec
    conns = schedule.concurrency or WARM_CONNECTIONS_OPEN_LOOP
    n = max(1, min(conns, WARM_CONNECTIONS_MAX, spec.max_connections))
    short = spec.model_copy(update={"input_tokens": LengthDist(mean=8), "output_tokens": LengthDist(mean=2),
                                    "dataset": None, "preset": None})
    return n, short


def request_count(schedule: Schedule) -> int:
    """How many distinct prompts to prepare (duration-bounded closed loops cycle through a pool)."""
    if schedule.offsets_ns is not None:
        return len(schedule.offsets_ns)
    return schedule.count if schedule.count else 512


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
    stopper = STOPPER.get()
    if stopper is not None:
        stopper.phase = "idle"
    key = api_key(spec)
    if spec.url is None:
        raise SpecError("no --url given (phasebench run without --url starts the embedded engine)")
    trace = load_spec_trace(spec) if spec.trace is not None else None
    schedule = trace_schedule(trace.offsets_ns) if trace is not None else make_schedule(spec)
    if spec.nonce is None:  # fresh prompts each run unless a seed was given (no accidental prefix-cache hits)
        spec = spec.model_copy(update={"nonce": new_nonce()})
    check_roofline_inputs(spec, extra_manifest or {})
    from .quality import options_for  # --quality: the probe set (and reference) read before any traffic

    quality = options_for(spec)
    if spec.out and (Path(spec.out) / MANIFEST).exists():
        raise FileExistsError(f"{spec.out} already holds a run; choose another --out")
    async with aiohttp.ClientSession(headers=spec.headers) as meta_session:  # --header on /models, /tokenize too
        target = await discover(spec, meta_session, key)
        tok = await make_tokenizer(spec, meta_session, target)
        conversations = template = None
        if trace is not None:
            prompts = await trace_prompts(trace, tok, spec.seed, spec.nonce or "")
        elif spec.turns is not None:  # multi-turn: the conversation driver sends them (conversation.py)
            template = await completions_template(spec, meta_session, target.base_url, key)
            conversations = await build_conversations(spec, tok, request_count(schedule), template, meta_session)
            prompts = [c.first_prompt() for c in conversations]
        else:
            prompts = await build_prompts(spec, tok, request_count(schedule))
        n_warm, warm_spec = warmup_plan(spec, schedule)
        warm_prompts = await build_prompts(warm_spec, tok, min(n_warm, 8), seed_offset=10_000) if n_warm else []
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
        extra_body=spec.extra_body,
        headers=spec.headers,
        timeout=spec.timeout,
        stall_timeout=spec.stall_timeout,
        max_connections=max_conn,
        transport=_transport(spec, target),
        max_event_bytes=spec.max_event_bytes,
        engine=(target.extra_manifest.get("server_engine") or {}).get("name") or "unknown",
        collect_text=conversations is not None,  # the next turn carries the server's real answer
    )
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    manifest = manifest_for(spec, target, tok, created, extra_manifest or {})
    if trace is not None:
        manifest["trace"] = trace.manifest()
    if template is not None:
        manifest["chat_template"] = describe_template(template)
    proc = psutil.Process()
    host = HostLoad(exclude=_serving_pids(target))
    lag = LoopLag()
    n_workers = spec.workers or auto_workers(schedule.concurrency or min(len(prompts), max_conn))
    if conversations is not None:
        if spec.ray or (spec.workers or 1) > 1:
            raise SpecError("--turns runs in one client process (a conversation's turns depend on each other); "
                            "drop --workers/--ray")
        n_workers = 1
    async with make_client(cfg) as client:
        if n_workers == 1 and not spec.ray:  # workers warm their own connections
            await warm_up(client, warm_prompts, n_warm, n_warm if spec.warmup_requests is None else (schedule.concurrency or 4))
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
        scraper = await open_scraper(spec, target.base_url, path, key)  # the engine's /metrics, before
        cpu0 = sum(proc.cpu_times()[:2])
        host.start()
        lag.start()
        t0 = now_ns()
        client.t0 = t0
        if scraper:
            scraper.start(t0)
        progress.start(label or spec.scenario.value, schedule.count, schedule.duration_s)
        workers: list[Any] = []
        worker_died: str | None = None
        try:
            if spec.ray or n_workers > 1:
                from .client.ray_workers import run_on_ray
                from .client.workers import run_sharded

                shard = (lambda *a: run_on_ray(spec.ray, *a)) if spec.ray else run_sharded
                records, interrupted, gone, workers, t0 = await shard(
                    cfg, schedule, prompts, warm_prompts, n_warm, n_workers, writer, progress)
                client.t0 = t0
                died = [w.died for w in workers if w.died]
                if died:
                    worker_died = "; ".join(died) + " (its finished records are on disk)"
            elif conversations is not None:
                records, interrupted, gone = await run_conversations(client, schedule, conversations, spec, writer,
                                                                     progress, t0, template)
            else:
                records, interrupted, gone = await execute(client, schedule, prompts, writer, progress, t0)
        finally:
            progress.stop()
            wall = (now_ns() - t0) / 1e9
            workers_cpu = sum(w.cpu_s for w in workers)
            cpu = sum(proc.cpu_times()[:2]) - cpu0 + workers_cpu
            lag_ms = lag.stop() + [x for w in workers for x in w.lag_ms]
            host_load = host.stop(client_extra_cpu_s=workers_cpu)
            writer.close()
            if scraper:
                await asyncio.to_thread(scraper.finish)  # and after
        alone = None
        if quality and quality.alone and not interrupted and gone is None:
            from .quality.mix import alone as send_alone

            alone = await send_alone(client, quality.probe_set, path)
    manifest["transport"] = {
        "name": cfg.transport,
        "timestamps": ("kernel receive time (SO_TIMESTAMPNS), converted to CLOCK_MONOTONIC" if cfg.transport == "raw"
                       else "perf_counter_ns when the event loop reads the bytes"),
    }
    if workers:
        manifest["client_workers"] = {
            "count": len(workers), "ray": spec.ray,
            "clock": ("each Ray worker's own CLOCK_MONOTONIC, aligned by a measured offset" if spec.ray
                      else "CLOCK_MONOTONIC (system-wide)"),
            "workers": [w.manifest() for w in workers]}
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
        partial=interrupted or gone is not None or worker_died is not None,
        stopped=gone or worker_died,
        exact_output=spec.exact_output,
        mlperf=spec.mlperf,
        loop_lag_ms=lag_ms,
        host=host_load,
        transport=cfg.transport,
        extra_warnings=([] if tok.exact else ["no exact tokenizer: prompt lengths are approximate (see prompt_tokens)"])
        + template_warnings(template),
    )
    records.sort(key=lambda r: r.index)
    probe_records: list[RequestRecord] = []
    if quality:
        from .quality.mix import split

        records, probe_records = split(records)
    manifest["t0_monotonic_ns"] = t0
    facts = Measured(prompts=prompts, tokenizer=tok.name, models_answer=target.models_answer, model=target.model,
                     warmup_requests=n_warm, warmup_kind="connections" if spec.warmup_requests is None else "requests",
                     scraper=scraper, quality=quality, probe_records=probe_records, alone=alone)
    # the summary: the analysis steps in order (analysis.STEPS), in a thread (the server view's last scrape blocks)
    summary = await asyncio.to_thread(analyse, RunAnalysis(manifest, records, spec, ctx, measured=facts))
    if folder:
        write_run(folder, manifest, summary)
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


def _transport(spec: RunSpec, target: Target) -> str:
    try:
        return choose_transport(spec.transport, target.base_url)
    except ValueError as e:
        raise SpecError(str(e)) from None


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
