"""Simulated runs: the measurement core's workload and schedule, served by the replica simulator, written as
the same run folder a measured run writes (``manifest.simulated = true``), so show / report / compare / the
database treat both alike."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import env as envmod
from ..metrics import RunContext, summarize
from ..records import RequestRecord
from ..results import Run, RunFolder
from ..schedule import make_schedule
from ..spec import RunSpec, Scenario, SpecError
from ..workload.synthetic import sample_lengths
from .profile import Profile
from .replica import SchedulerConfig, SimResult, simulate, token_times


def workload(spec: RunSpec, n: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(spec.seed)
    return sample_lengths(spec.input_tokens, n, rng), sample_lengths(spec.output_tokens, n, rng)


def load_trace(path: Path) -> tuple[list[float], list[int], list[int]]:
    """A JSONL trace: one request per line with ``arrival_s`` (or ``timestamp``), ``input_tokens``, ``output_tokens``."""
    arr, ins, outs = [], [], []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise SpecError(f"cannot read trace {path}: {e}") from None
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            arr.append(float(d.get("arrival_s", d.get("timestamp"))))
            ins.append(int(d["input_tokens"]))
            outs.append(int(d["output_tokens"]))
        except (ValueError, KeyError, TypeError) as e:
            raise SpecError(f"{path}:{k}: a trace line needs arrival_s, input_tokens, output_tokens ({e})") from None
    if not arr:
        raise SpecError(f"{path}: empty trace")
    t0 = min(arr)
    return [a - t0 for a in arr], ins, outs


def _requests(spec: RunSpec, trace: Path | None) -> tuple[np.ndarray | None, list[int], list[int], int | None, float | None]:
    """(arrival times, input lengths, output lengths, closed-loop concurrency, target rate)."""
    if trace:
        a, i, o = load_trace(trace)
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


def records_from(res: SimResult, offset: int = 0) -> list[RequestRecord]:
    recs = []
    for r in res.reqs:
        sched = int(round(r.arrival * 1e9))
        rec = RequestRecord(index=r.idx + offset, request_id=uuid.uuid4().hex, scheduled_ns=sched, sent_ns=sched,
                            input_tokens=r.n_in, prompt_tokens=r.n_in, expected_output_tokens=r.n_out, simulated=True)
        if r.end < 0:
            rec.error = "not served: the simulation stopped (over capacity)" if res.over_capacity else "not served"
            rec.error_type = "cancelled"
            recs.append(rec)
            continue
        ts = token_times(res, r)
        ns = [int(round(x * 1e9)) for x in ts]
        rec.headers_ns = rec.first_byte_ns = rec.first_token_ns = rec.first_answer_ns = ns[0]
        rec.chunk_ns = ns
        rec.chunk_tokens = [1] * len(ns)
        rec.last_token_ns = ns[-1]
        rec.end_ns = int(round(r.end * 1e9))
        rec.output_tokens = rec.output_tokens_client = len(ns)
        rec.output_tokens_source = "simulated"
        rec.length_met = len(ns) >= r.n_out
        rec.finish_reason = "length"
        rec.status = 200
        recs.append(rec)
    return recs


def simulate_run(spec: RunSpec, profile: Profile, cfg: SchedulerConfig, replicas: int = 1,
                 trace: Path | None = None, extra_manifest: dict[str, Any] | None = None) -> Run:
    """Simulate ``spec`` (any scenario but sweep) on ``replicas`` identical replicas; write the run folder."""
    if spec.scenario == Scenario.sweep:
        raise SpecError("simulate one point at a time (a sweep scenario is not simulated)")
    if replicas < 1:
        raise SpecError("replicas must be ≥ 1")
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    arr, ins, outs, conc, rate = _requests(spec, trace)
    n = len(ins)
    results: list[SimResult] = []
    records: list[RequestRecord] = []
    for k in range(replicas):  # requests go round-robin to replicas
        idx = list(range(k, n, replicas))
        if not idx:
            continue
        sub_conc = None if conc is None else max(1, conc // replicas + (1 if k < conc % replicas else 0))
        res = simulate(None if arr is None else arr[idx], [ins[i] for i in idx], [outs[i] for i in idx], profile, cfg,
                       closed_concurrency=sub_conc)
        results.append(res)
        for rec, i in zip(records_from(res), idx):
            rec.index = i
            records.append(rec)
    records.sort(key=lambda r: r.index)
    over = any(r.over_capacity for r in results)
    notes = [x for r in results for x in r.notes]
    ctx = RunContext(scenario=spec.scenario.value, slo=spec.slo, warmup_s=spec.warmup, cooldown_s=spec.cooldown,
                     target_rate=rate, burstiness=spec.burstiness if spec.scenario == Scenario.server else None,
                     concurrency=conc, exact_output=True, mlperf=spec.mlperf, extra_warnings=list(notes))
    summary = summarize(records, ctx)
    sim_block = {
        "profile": profile.describe(), "scheduler": asdict(cfg), "replicas": replicas,
        "iterations": sum(r.iterations for r in results), "preemptions": sum(r.preemptions for r in results),
        "over_capacity": over, "simulated_seconds": max((r.sim_seconds for r in results), default=0.0),
        "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - cpu0, "requests": n,
        "trace": str(trace) if trace else None,
    }
    d = profile.describe()
    sim_block["hardware"] = d.get("hardware")
    sim_block["devices"] = d.get("devices", 1) * replicas
    if over:
        pb = summary["phasebench"]
        pb["valid"] = False
        pb["reasons"].insert(0, "over capacity: the simulated queue grew without bound and the run was stopped")
    from .. import __version__
    from ..cost import cost_block

    summary["phasebench"]["cost"] = cost_block(sim_block["hardware"], sim_block["devices"], summary)
    manifest = {
        "kind": "run", "simulated": True, "schema_version": 1, "phasebench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "spec": spec.public_dict(),
        "target": {"model": d.get("model") or "simulated", "url": None},
        "simulation": sim_block, "environment": envmod.environment(), "t0_monotonic_ns": 0, **(extra_manifest or {}),
    }
    path = None
    if spec.out:
        folder = RunFolder(spec.out)
        folder.write_manifest(manifest)
        folder.requests_path.write_bytes(b"".join(rec.to_json() for rec in records))  # all at once: nothing is in flight
        folder.write_summary(summary)
        path = folder.path
    run = Run(path, manifest, summary, records)
    if path:
        from ..store import record_run

        _, warning = record_run(run)
        if warning:
            summary["phasebench"]["warnings"].append(warning)
    return run

