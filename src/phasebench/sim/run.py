"""Simulated runs: the measurement core's workload and schedule, served by the replica simulator, written as
the same run folder a measured run writes (``manifest.simulated = true``), so show / report / compare / the
database treat both alike."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import env as envmod
from ..analysis import RunAnalysis, Simulated, analyse, write_run
from ..metrics import RunContext
from ..model.phases import Setup
from ..results import Run, RunFolder
from ..schedule import make_schedule
from ..spec import LengthDist, RunSpec, Scenario, SpecError
from .columns import concat, db_rows, from_result, to_records, write_jsonl
from .profile import AnalyticProfile, Profile
from .replica import SchedulerConfig, SimResult, gc_paused, simulate


def _lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> list[int]:
    """:func:`~phasebench.workload.synthetic.sample_lengths` in numpy: the same draws, the same rounding
    (half to even, at least 1), so a simulated run sees the lengths a measured one with this seed sends."""
    if dist.stddev <= 0:
        return [dist.mean] * n
    return np.maximum(np.rint(rng.normal(dist.mean, dist.stddev, size=n)), 1).astype(np.int64).tolist()


def scheduler_for(setup: Setup | None, max_seqs: int = 256, max_batched_tokens: int = 8192, chunked: bool = True,
                  block_size: int = 16, kv_blocks: int | None = None, static: bool = False) -> SchedulerConfig:
    """The scheduler of a replica of ``setup``: its batching, and (unless given) the KV blocks that device
    memory leaves after the weights (what the engine's allocator uses of it: ``memory_use`` in data/engines.yaml; an
    SRAM machine's SRAM after the weights)."""
    from ..model.errors import ModelError
    from ..model.phases import kv_heads_per_rank, predict
    from .replica import blocks_for_memory

    cfg = SchedulerConfig(max_seqs=max_seqs, max_batched_tokens=max_batched_tokens, chunked_prefill=chunked,
                          block_size=block_size, static=static)
    if setup is not None:
        setup = setup.resolved()
        cfg.batching = setup.hardware.batching
        if kv_blocks is None:
            p = predict(setup, 1, 1, 1)
            if not p.fits:
                raise ModelError(f"{setup.model.name} does not fit on {setup.devices}× {setup.hardware.key}")
            free = (p.memory.capacity - p.memory.per_device_weights) * setup.devices
            if setup.hardware.kind == "sram-dataflow" and setup.hardware.memory_gb * 1000 <= setup.hardware.sram_mb:
                free = setup.hardware.sram_mb * 1e6 * setup.devices - p.memory.weights_bytes  # SRAM left after weights
            # KV bytes per token across the replica: each TP rank holds its heads (copies when tp > n_kv)
            replication = kv_heads_per_rank(setup.model, setup.tp) * setup.tp / setup.model.kv_heads
            cfg.kv_blocks = blocks_for_memory(free, setup.model.kv_bytes_per_token(setup.precision.kv) * replication,
                                              block_size)
    if kv_blocks is not None:
        cfg.kv_blocks = kv_blocks
    return cfg


def analytic_profile(setup: Setup, engine: str | None = None) -> AnalyticProfile:
    """The phase model's profile of ``setup`` under ``engine`` (its efficiency profile; None = the default)."""
    return AnalyticProfile(setup, engine=engine)


def workload(spec: RunSpec, n: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(spec.seed)
    return _lengths(spec.input_tokens, n, rng), _lengths(spec.output_tokens, n, rng)


def load_trace(path: Path, speed: float = 1.0, window: str | None = None) -> tuple[list[float], list[int], list[int]]:
    """A trace in any format :mod:`phasebench.workload.traces` reads (Mooncake, Azure CSV, plain JSONL): arrival
    times (s, from the first kept row, scaled by ``speed``), input and output lengths."""
    from ..workload.traces import load_trace as read_trace
    from ..workload.traces import parse_window

    tr = read_trace(path, speed, parse_window(window))
    return (tr.offsets_ns / 1e9).tolist(), [r.input_tokens for r in tr.rows], [r.output_tokens for r in tr.rows]


def trace_block_keys(path: Path, speed: float, window: str | None, block_size: int) -> list[list[int]]:
    """Each trace row's prompt block keys (for the simulator's prefix cache): shared Mooncake blocks, plain
    ``prefix_id``s and conversations share keys where the replayed prompts share text."""
    from ..workload.traces import block_keys, parse_window, prompt_segments
    from ..workload.traces import load_trace as read_trace

    tr = read_trace(path, speed, parse_window(window))
    return [block_keys(s, block_size) for s in prompt_segments(tr)]


def _requests(spec: RunSpec, trace: Path | None, speed: float = 1.0, window: str | None = None,
              ) -> tuple[np.ndarray | None, list[int], list[int], int | None, float | None]:
    """(arrival times, input lengths, output lengths, closed-loop concurrency, target rate)."""
    if trace:
        a, i, o = load_trace(trace, speed, window)
        return np.array(a), i, o, None, None
    if spec.scenario == Scenario.server and (not spec.rate or spec.rate[0] <= 0):
        raise SpecError("the server scenario needs a rate > 0")
    sched = make_schedule(spec)
    if sched.kind == "open":
        arr = sched.offsets_ns / 1e9
        ins, outs = workload(spec, len(arr))
        return arr, ins, outs, None, sched.target_rate
    n = spec.requests
    if not n:
        raise SpecError("a simulated closed-loop run needs --requests")
    ins, outs = workload(spec, n)
    return None, ins, outs, sched.concurrency, None


def simulate_run(spec: RunSpec, profile: Profile, cfg: SchedulerConfig, replicas: int = 1,
                 trace: Path | None = None, extra_manifest: dict[str, Any] | None = None,
                 summary_only: bool = False, record: bool = True, keep_records: bool = True,
                 trace_speed: float = 1.0, trace_window: str | None = None) -> Run:
    """Simulate ``spec`` (any scenario but sweep) on ``replicas`` identical replicas; write the run folder.

    The requests go from the simulator to arrays (:mod:`.columns`); the summary is computed from those and
    ``requests.jsonl`` is written from them. ``summary_only``: no ``requests.jsonl`` and no records in the
    returned run (manifest and summary are still written when ``spec.out`` is set). ``record``: also record
    the run in the results database (its request rows made from the arrays, ``columns.db_rows``).
    ``keep_records``: put the ``RequestRecord``s in the returned run."""
    with gc_paused():   # see replica.gc_paused
        return _simulate_run(spec, profile, cfg, replicas, trace, extra_manifest, summary_only, record, keep_records,
                             trace_speed, trace_window)


def _simulate_run(spec: RunSpec, profile: Profile, cfg: SchedulerConfig, replicas: int = 1,
                 trace: Path | None = None, extra_manifest: dict[str, Any] | None = None,
                 summary_only: bool = False, record: bool = True, keep_records: bool = True,
                 trace_speed: float = 1.0, trace_window: str | None = None) -> Run:
    if spec.scenario == Scenario.sweep:
        raise SpecError("simulate one point at a time (a sweep scenario is not simulated)")
    if replicas < 1:
        raise SpecError("replicas must be ≥ 1")
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    convs = None
    if spec.turns is not None:  # multi-turn conversations: a turn arrives after the previous turn's answer
        from .conversations import conversation_requests

        if trace:
            raise SpecError("--trace and --turns do not combine (a trace's conversations are in the trace)")

        arr, conc, rate, convs = conversation_requests(spec)
        ins, outs = convs.n_in, convs.n_out
        keys = convs.keys(cfg.block_size) if cfg.prefix_cache else None
    else:
        arr, ins, outs, conc, rate = _requests(spec, trace, trace_speed, trace_window)
        keys = trace_block_keys(trace, trace_speed, trace_window, cfg.block_size) if trace and cfg.prefix_cache else None
    n = len(ins)
    results: list[SimResult] = []
    parts = []
    for k in range(replicas):  # requests (conversations) go round-robin to replicas
        idx, follow = (list(range(k, n, replicas)), None) if convs is None else \
            convs.subset(np.arange(k, len(convs.firsts), replicas))
        if not len(idx):
            continue
        sub_conc = None if conc is None else max(1, conc // replicas + (1 if k < conc % replicas else 0))
        whole = replicas == 1 and convs is None    # all of them, in order: no copies
        res = simulate(None if arr is None else arr if whole else arr[idx], ins if whole else [ins[i] for i in idx],
                       outs if whole else [outs[i] for i in idx], profile, cfg, closed_concurrency=sub_conc,
                       prefix_keys=None if keys is None else keys if whole else [keys[i] for i in idx],
                       follow=follow, think=None if convs is None else [convs.think[i] for i in idx])
        results.append(res)
        parts.append(from_result(res, idx))
    cols = concat(parts)
    if convs is not None:
        cols.conversation, cols.turn = convs.conversation[cols.index], convs.turn[cols.index]
    over = any(r.over_capacity for r in results)
    notes = [x for r in results for x in r.notes]
    if forced := profile.forced_note():
        notes.insert(0, forced)
    ctx = RunContext(scenario=spec.scenario.value, slo=spec.slo, warmup_s=spec.warmup, cooldown_s=spec.cooldown,
                     target_rate=rate, burstiness=spec.burstiness if spec.scenario == Scenario.server else None,
                     concurrency=conc, exact_output=True, mlperf=spec.mlperf, extra_warnings=list(notes))
    d = profile.describe()
    sim_block = {
        "profile": d, "scheduler": asdict(cfg), "replicas": replicas,
        "iterations": sum(r.iterations for r in results), "preemptions": sum(r.preemptions for r in results),
        "over_capacity": over, "simulated_seconds": max((r.sim_seconds for r in results), default=0.0),
        "requests": n, "trace": str(trace) if trace else None,
        "conversations": None if convs is None else len(convs.firsts),
        "trace_speed": trace_speed if trace else None, "trace_window": trace_window if trace else None, "summary_only": summary_only,
        "hardware": d.get("hardware"), "devices": d.get("devices", 1) * replicas,
    }
    from .. import __version__

    manifest = {
        "kind": "run", "simulated": True, "schema_version": 1, "phasebench_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "spec": spec.public_dict(),
        "target": {"model": d.get("model") or "simulated", "url": None},
        "simulation": sim_block, "environment": envmod.environment(), "t0_monotonic_ns": 0, **(extra_manifest or {}),
    }
    # the summary: the same analysis steps as a measured run's (analysis.STEPS), from the arrays
    facts = Simulated(columns=cols, over_capacity=over, hardware=sim_block["hardware"], devices=sim_block["devices"])
    summary = analyse(RunAnalysis(manifest, [], spec, ctx, simulated=facts))
    path = None
    if spec.out:
        folder = RunFolder(spec.out)
        if not summary_only:
            write_jsonl(cols, folder.requests_path)   # all at once: nothing is in flight
        path = folder.path
    sim_block["wall_s"] = time.perf_counter() - t_wall
    sim_block["cpu_s"] = time.process_time() - cpu0
    if path:
        write_run(folder, manifest, summary)
    records = to_records(cols) if not summary_only and keep_records else []
    run = Run(path, manifest, summary, records)
    if path and record:
        from ..store import record_run

        # the request rows straight from the arrays (no RequestRecord per request); none in summary-only mode
        _, warning = record_run(run, request_rows=iter(()) if summary_only else db_rows(cols))
        if warning:
            summary["phasebench"]["warnings"].append(warning)
    return run
