"""Probe repeatability: run the memory-wall probe several times; each figure should stay within 15% of the first.

    python benchmarks/probe_repeat.py [--runs 3]
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from phasebench.model.probe import probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    runs = [probe() for _ in range(ap.parse_args().runs)]
    t = Table(title="phasebench probe, repeated", title_justify="left")
    for c in ("run", "copy GB/s", "triad GB/s", "matmul fp32 GFLOP/s", "seconds", "max deviation from run 1"):
        t.add_column(c, justify="right")
    first = runs[0]
    for i, r in enumerate(runs, 1):
        dev = max(abs(a / b - 1) for a, b in ((r.copy_gbps, first.copy_gbps), (r.triad_gbps, first.triad_gbps),
                                               (r.matmul_gflops_fp32, first.matmul_gflops_fp32)))
        t.add_row(str(i), f"{r.copy_gbps:.1f}", f"{r.triad_gbps:.1f}", f"{r.matmul_gflops_fp32:.0f}", f"{r.seconds:.1f}",
                  f"{dev:.1%}" + (" (target ≤ 15%)" if i > 1 else ""))
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
