"""How much load can this client measure honestly on this machine?

Starts the in-repo mock server in its own process (so it has its own core), with every chunk stamped with
the server's send time on the shared CLOCK_MONOTONIC, and drives N concurrent streams for a few seconds.
The client's timestamp error is its arrival stamp minus the server's send stamp: what the client adds (event
loop delay, parsing, queueing behind other streams), not what the server does.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from .runner import run_main, run_one
from .spec import RunSpec


@dataclass
class SelftestPoint:
    streams: int
    workers: int
    chunks: int
    chunks_per_s: float
    cpu_s_per_100k_chunks: float
    cpu_fraction: float
    ttft_err_ms: dict[str, float]
    itl_err_ms: dict[str, float]
    errors: int
    read_delay_p99_ms: float | None  # the client's event-loop lag at p99 (what a chunk waited to be read)
    valid: bool
    reasons: list[str]


def start_mock(itl_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "phasebench.mock_server", "--port", "0", "--stamp", "true",
                             "--ttft-ms", "20", "--itl-ms", str(itl_ms)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("listening on ")[1].strip() + "/v1"


def _pcts(a: list[float]) -> dict[str, float]:
    if not a:
        return {}
    arr = np.asarray(a)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


async def measure(url: str, streams: int, seconds: float, output_tokens: int, workers: int | None = 1) -> SelftestPoint:
    spec = RunSpec(url=url, scenario="concurrency", concurrency=[streams], duration=seconds, requests=None,
                   input_tokens=8, output_tokens=output_tokens, tokenizer="approx",
                   max_connections=max(streams, 1), timeout=120, workers=workers)
    run = await run_one(spec)
    ttft_err, itl_err = [], []
    chunks = 0
    for r in run.records:
        chunks += len(r.chunk_ns)
        if r.server_stamps and r.chunk_ns:
            ttft_err.append((r.chunk_ns[0] - r.server_stamps[0]) / 1e6)
            itl_err.extend((a - s) / 1e6 for a, s in zip(r.chunk_ns[1:], r.server_stamps[1:]))
    pb = run.summary["phasebench"]
    cl = pb["client"]
    wall = cl["wall_s"] or 1e-9
    return SelftestPoint(
        streams=streams, workers=(run.manifest.get("client_workers") or {}).get("count", 1),
        chunks=chunks, chunks_per_s=chunks / wall,
        cpu_s_per_100k_chunks=(cl["cpu_s"] or 0) / max(chunks, 1) * 1e5, cpu_fraction=cl["cpu_fraction"] or 0,
        ttft_err_ms=_pcts(ttft_err), itl_err_ms=_pcts(itl_err), errors=run.summary["failed"],
        read_delay_p99_ms=(cl.get("loop_lag_ms") or {}).get("p99"), valid=run.valid, reasons=list(pb["reasons"]),
    )


def selftest(streams: list[int], seconds: float = 4.0, itl_ms: float = 20.0, output_tokens: int = 100,
             workers: list[int | None] | None = None) -> list[SelftestPoint]:
    """One point per (streams, workers); workers ``None`` = auto."""
    proc, url = start_mock(itl_ms)
    try:
        return [run_main(measure(url, n, seconds, output_tokens, w)) for n in streams for w in (workers or [1])]
    finally:
        proc.kill()
        proc.wait()


def table(points: list[SelftestPoint], itl_ms: float = 20.0) -> Table:
    t = Table(title=f"Client self-test (mock server, ITL {itl_ms:g} ms, stamps on the shared monotonic clock)",
              title_justify="left")
    for c in ("streams", "workers", "chunks/s", "client CPU s /100k chunks", "CPU (1 core)", "TTFT err p50/p99 (ms)",
              "ITL err p50/p99 (ms)", "read delay p99 (ms)", "errors", "verdict"):
        t.add_column(c, justify="right")
    for p in points:
        verdict = "VALID" if p.valid else "INVALID: " + "; ".join(r.split(":")[0] if len(r) > 60 else r for r in p.reasons)
        t.add_row(str(p.streams), str(p.workers), f"{p.chunks_per_s:,.0f}", f"{p.cpu_s_per_100k_chunks:.1f}",
                  f"{p.cpu_fraction:.0%}", _pp(p.ttft_err_ms), _pp(p.itl_err_ms),
                  "-" if p.read_delay_p99_ms is None else f"{p.read_delay_p99_ms:.2f}", str(p.errors), verdict)
    return t


def _pp(d: dict[str, Any]) -> str:
    return "-" if not d else f"{d['p50']:.2f} / {d['p99']:.2f}"


def print_selftest(streams: list[int], seconds: float, console: Console) -> None:
    pts = selftest(streams, seconds)
    console.print(table(pts))
    worst = [p for p in pts if p.cpu_fraction > 0.85]
    if worst:
        console.print(f"[yellow]at {worst[0].streams} streams the client used {worst[0].cpu_fraction:.0%} of a core: "
                      "beyond this load, latencies measured here include the client's own queueing[/]")
