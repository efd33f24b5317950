"""Measure this machine's memory wall: sustained DRAM bandwidth and peak matrix FLOP/s.

Bandwidth: a STREAM-like copy (``b[:] = a``: read + write, 2 bytes moved per byte copied) and triad
(``c = a + s*b``, 3 streams) on arrays far larger than the caches, one thread per core, best of several
repeats. FLOP/s: float32 matrix multiplication through numpy's BLAS (2·n³ per n×n product), all cores; a bf16
peak where torch is installed (with the CPU's AMX/AVX512-BF16 flags recorded), else a note saying why not, so
that every MFU can say which peak it is against.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    extra: dict[str, Any] = field(default_factory=dict)   # torch figures (CPU bf16, or the GPU's) when torch is installed

    @property
    def bandwidth_gbps(self) -> float:
        """The figure used as 'peak' memory bandwidth: the better of copy and triad."""
        return max(self.copy_gbps, self.triad_gbps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        d["bandwidth_gbps"] = self.bandwidth_gbps
        return d


def _parallel(fn, n_threads: int) -> float:
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


def torch_matmul(n: int = 4096, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of torch matmul where torch is installed: on the GPU (fp16/bf16) when one is present, else CPU."""
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return {}
    out: dict[str, float] = {}
    devs = [("cuda", torch.float16), ("cuda", torch.bfloat16)] if torch.cuda.is_available() else [("cpu", torch.bfloat16)]
    for dev, dtype in devs:
        x = torch.randn(n, n, device=dev, dtype=dtype)
        y = torch.randn(n, n, device=dev, dtype=dtype)
        best = 0.0
        for i in range(repeats + 1):
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            x @ y
            if dev == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if i:
                best = max(best, 2 * n**3 / dt / 1e9)
        out[f"torch_{dev}_{str(dtype).removeprefix('torch.')}_gflops"] = best
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out["gpu_name"] = torch.cuda.get_device_name(0)  # type: ignore[assignment]
        out["gpu_memory_gb"] = total / 2**30   # GiB, as the catalog's memory_gb is read
        n_el = 256 * 2**20 // 2
        a = torch.empty(n_el, device="cuda", dtype=torch.float16)
        b = torch.empty_like(a)
        best = 0.0
        for i in range(repeats + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            b.copy_(a)
            torch.cuda.synchronize()
            if i:
                best = max(best, 2 * n_el * 2 / (time.perf_counter() - t0) / 1e9)
        out["gpu_copy_gbps"] = best
    return out


def cpu_precision_flags() -> list[str]:
    """The CPU's matrix/vector extensions for reduced precision (Linux /proc/cpuinfo): amx_bf16, avx512_bf16, ..."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(f for f in flags if f in {"amx_bf16", "amx_int8", "amx_tile", "amx_fp16", "avx512_bf16",
                                                   "avx512_vnni", "avx512_fp16", "avx_vnni"})
    return []


def bf16_peak(extra: dict[str, Any], flags: list[str], fp32_gflops: float) -> dict[str, Any]:
    """Which bf16 peak this machine has, and from where: torch's measured CPU bf16 matmul where torch is installed,
    else a note saying why there is none (an MFU is then against the fp32 peak, and says so)."""
    if extra.get("torch_cpu_bfloat16_gflops"):
        unit = "AMX" if "amx_bf16" in flags else ("AVX512-BF16" if "avx512_bf16" in flags else "no bf16 units")
        return {"matmul_gflops_bf16": extra["torch_cpu_bfloat16_gflops"],
                "bf16_source": f"torch CPU bf16 matmul, measured ({unit})"}
    have = [f for f in flags if "bf16" in f]
    if have:
        note = (f"this CPU has {', '.join(have)} but torch is not installed, so no bf16 matmul was probed: an "
                f"engine computing in bf16 (vLLM CPU, oneDNN) can exceed the fp32 peak; pip install torch to probe it")
    else:
        note = "this CPU has no bf16 matrix units (no amx_bf16/avx512_bf16): bf16 runs at or below the fp32 peak"
    return {"matmul_gflops_bf16": None, "bf16_note": note}


def probe(array_mib: int = 256, quick: bool = False) -> ProbeResult:
    """Best of 10 repeats (5 with ``quick``): the best, not the mean, because on a shared machine noise only
    ever makes a run slower; best-of-10 repeated within a few percent here where best-of-3 did not."""
    t0 = time.perf_counter()
    threads = os.cpu_count() or 1
    repeats = 5 if quick else 10
    copy, triad = memory_bandwidth(array_mib=array_mib, threads=threads, repeats=repeats)
    flops = matmul_flops(n=2048, repeats=repeats + 2)
    r = ProbeResult(copy, triad, flops, threads, array_mib, time.perf_counter() - t0)
    r.extra = torch_matmul(repeats=repeats)
    flags = cpu_precision_flags()
    r.extra["cpu_precision_flags"] = flags   # type: ignore[assignment]
    r.extra["torch_installed"] = _has_torch()   # type: ignore[assignment]
    r.extra.update(bf16_peak(r.extra, flags, flops))
    r.seconds = time.perf_counter() - t0
    return r


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def probe_and_record(quick: bool = False) -> tuple[ProbeResult, Path]:
    """Probe and write the ``local`` hardware record."""
    from ..env import environment
    from .hardware import local_gpu_record, local_record, write_record

    r = probe(quick=quick)
    d = r.to_dict()
    d["date"] = _dt.date.today().isoformat()
    gpu = local_gpu_record(d)
    if gpu:
        write_record("local-gpu", gpu)
    return r, write_record("local", local_record(d, environment()))
