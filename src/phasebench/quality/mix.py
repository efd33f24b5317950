"""Mixing the probes into a run's load, and keeping their records apart from it.

The load is left exactly as the spec asked (same requests, same arrival times); the probes are added on top:
- closed loop (single-stream, concurrency N): the probes take slots like any request, at seeded positions of
  the request sequence (the count grows by the number of probes); a duration-bounded loop cycles its pool, so
  the probes sit early in it and a probe answered twice counts once (the repeat is recorded);
- open loop (server, offline): each probe gets a seeded arrival time within the load's span (offline: t=0).
Probe records go to ``quality.jsonl`` in the run folder, never ``requests.jsonl``: every speed figure (the
summary, compare, plots, the database) is the load's alone; the probes' own TTFT is in the quality block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..client.openai import Prompt
from ..records import RecordWriter, RequestRecord
from ..schedule import Schedule
from .probes import TOP_LOGPROBS, ProbeSet

QUALITY_RECORDS = "quality.jsonl"
QUALITY_ALONE_RECORDS = "quality-alone.jsonl"
POOL = 512  # the pool a duration-bounded closed loop cycles through (runner.request_count)


def probe_prompts(ps: ProbeSet) -> list[Prompt]:
    return [Prompt(text=p.prompt, output_tokens=p.output_tokens, probe=p.id, logprobs=TOP_LOGPROBS) for p in ps.probes]


def mix(schedule: Schedule, prompts: list[Prompt], ps: ProbeSet, seed: int) -> tuple[Schedule, list[Prompt]]:
    """The schedule and prompt list with the probes added at seeded places (see the module's docstring)."""
    probes = probe_prompts(ps)
    k = len(probes)
    rng = np.random.default_rng(seed + 0x9E37)
    order = [probes[i] for i in rng.permutation(k)]
    if schedule.kind == "open":
        assert schedule.offsets_ns is not None
        span = int(schedule.offsets_ns.max()) if len(schedule.offsets_ns) else 0
        extra = np.sort(rng.integers(0, span + 1, size=k)) if span > 0 else np.zeros(k, dtype=np.int64)
        offs = np.concatenate([schedule.offsets_ns, extra.astype(np.int64)])
        kinds = [("load", p) for p in prompts[: len(schedule.offsets_ns)]] + [("probe", p) for p in order]
        idx = np.argsort(offs, kind="stable")
        new = dataclasses.replace(schedule, offsets_ns=offs[idx], count=len(offs))
        return new, [kinds[i][1] for i in idx.tolist()]
    if schedule.count is not None:
        n = len(prompts) + k
        slots = set(rng.choice(n, size=k, replace=False).tolist())
    else:  # cycles a pool: the probes in its first part, so a short run still answers them
        n = len(prompts) + k
        slots = set(rng.choice(min(n, max(2 * k, 8)), size=k, replace=False).tolist())
    load, pr, out = iter(prompts), iter(order), []
    for i in range(n):
        out.append(next(pr) if i in slots else next(load))
    new = dataclasses.replace(schedule, count=schedule.count + k) if schedule.count is not None else schedule
    return new, out


class ProbeWriter:
    """Routes each finished record: probes to quality.jsonl, the load to requests.jsonl (flushed per line)."""

    def __init__(self, load: Any, folder_path: Path | None) -> None:
        self.load = load
        self.probes = RecordWriter(Path(folder_path) / QUALITY_RECORDS) if folder_path else None
        self.count = 0

    def write(self, rec: RequestRecord) -> None:
        if rec.probe is not None:
            if self.probes is not None:
                self.probes.write(rec)
        else:
            self.load.write(rec)
            self.count += 1

    def close(self) -> None:
        self.load.close()
        if self.probes is not None:
            self.probes.close()


def split(records: Sequence[RequestRecord]) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """(the load's records, the probes')."""
    return [r for r in records if r.probe is None], [r for r in records if r.probe is not None]


async def alone(client: Any, ps: ProbeSet, folder_path: Path | None) -> list[RequestRecord]:
    """The second pass: every probe sent alone, one after another, after the load has finished."""
    writer = RecordWriter(Path(folder_path) / QUALITY_ALONE_RECORDS) if folder_path else None
    out = []
    try:
        for i, p in enumerate(probe_prompts(ps)):
            rec = client.new_record(1_000_000 + i, 0, p)
            await client.send(rec, p)
            out.append(rec)
            if writer:
                writer.write(rec)
    finally:
        if writer:
            writer.close()
    return out
