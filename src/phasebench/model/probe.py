"""Measure this machine's memory wall: sustained DRAM bandwidth and peak matrix FLOP/s.

Bandwidth: a STREAM-like copy (``b[:] = a``: read + write, 2 bytes moved per byte copied) and triad
(``c = a + s*b``, 3 streams) on arrays far larger than the caches, one thread per core, best of several
repeats. FLOP/s: float32 matrix multiplication through numpy's BLAS (2·n³ per n×n product), all cores.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class ProbeResult:
    copy_gbps: float
    triad_gbps: float
    matmul_gflops_fp32: float
    threads: int
    array_mib: int
    seconds: float

    @property
    def bandwidth_gbps(self) -> float:
        """The figure used as 'peak' memory bandwidth: the better of copy and triad."""
        return max(self.copy_gbps, self.triad_gbps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bandwidth_gbps"] = self.bandwidth_gbps
        return d


def _parallel(fn, n_threads: int) -> float:  # noqa: ANN001
    barrier = threading.Barrier(n_threads + 1)
    def body(i: int) -> None:
        barrier.wait()
        fn(i)
    ts = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def memory_bandwidth(array_mib: int = 256, threads: int | None = None, repeats: int = 5) -> tuple[float, float]:
    """(copy GB/s, triad GB/s); each thread works on its own arrays of ``array_mib`` MiB."""
    threads = threads or os.cpu_count() or 1
    n = array_mib * 2**20 // 8
    a = [np.ones(n) for _ in range(threads)]
    b = [np.empty(n) for _ in range(threads)]
    c = [np.empty(n) for _ in range(threads)]
    for x in b + c:
        x.fill(0.0)  # touch the pages before timing
    best_copy = best_triad = 0.0
    for _ in range(repeats):
        dt = _parallel(lambda i: np.copyto(b[i], a[i]), threads)
        best_copy = max(best_copy, 2 * n * 8 * threads / dt / 1e9)
        def triad(i: int) -> None:
            np.multiply(b[i], 3.0, out=c[i])
            np.add(c[i], a[i], out=c[i])
        dt = _parallel(triad, threads)
        # multiply: read b, write c; add: read c, read a, write c  -> 5 streams of n doubles
        best_triad = max(best_triad, 5 * n * 8 * threads / dt / 1e9)
    return best_copy, best_triad


def matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n×n matrix product (BLAS uses all cores)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    y = rng.standard_normal((n, n), dtype=np.float32)
    x @ y  # warm up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        x @ y
        dt = time.perf_counter() - t0
        best = max(best, 2 * n**3 / dt / 1e9)
    return best


def probe(array_mib: int = 256, quick: bool = False) -> ProbeResult:
    t0 = time.perf_counter()
    threads = os.cpu_count() or 1
    copy, triad = memory_bandwidth(array_mib=array_mib, threads=threads, repeats=3 if quick else 5)
    flops = matmul_flops(n=2048, repeats=3 if quick else 5)
    return ProbeResult(copy, triad, flops, threads, array_mib, time.perf_counter() - t0)
