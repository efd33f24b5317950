"""Simulator speed: simulated requests per CPU-second for 10,000 requests at a saturating rate (aim ≥ 20,000).

Reported three ways: the scheduler loop alone, plus building the per-request records (every token's time),
plus the summary (percentiles over every ITL) — the whole `phasebench simulate` path.

    python benchmarks/simulator_speed.py [--requests 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from phasebench.metrics import RunContext, summarize
from phasebench.model.arch import load_model
from phasebench.model.hardware import load_hardware
from phasebench.model.phases import Setup
from phasebench.sim.profile import AnalyticProfile, FittedProfile
from phasebench.sim.replica import SchedulerConfig, simulate
from phasebench.sim.run import records_from
from phasebench.spec import SLO


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    n = ap.parse_args().requests
    rng = np.random.default_rng(0)
    cases = [
        ("fitted, 8B-like, 128 out", FittedProfile((0.01, 2e-5, 0), (0.006, 1e-8, 5e-5)), 128),
        ("analytic llama-3-8b / h100-sxm, 128 out", AnalyticProfile(Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))), 128),
        ("analytic llama-3-8b / h100-sxm, 32 out", AnalyticProfile(Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))), 32),
    ]
    t = Table(title=f"{n:,} requests at a saturating rate (1,000 req/s offered)", title_justify="left")
    for c in ("profile", "iterations", "scheduler req/CPU-s", "+ records req/CPU-s", "+ summary req/CPU-s", "aim ≥ 20,000"):
        t.add_column(c, justify="right")
    for name, prof, n_out in cases:
        arr = np.cumsum(rng.exponential(1 / 1000, n))
        ins = [int(x) for x in rng.integers(128, 1024, n)]
        outs = [n_out] * n
        c0 = time.process_time()
        res = simulate(arr, ins, outs, prof, SchedulerConfig(max_seqs=256, max_queue=10**9))
        c1 = time.process_time()
        recs = records_from(res)
        c2 = time.process_time()
        summarize(recs, RunContext(scenario="server", slo=SLO()))
        c3 = time.process_time()
        t.add_row(name, f"{res.iterations:,}", f"{n / (c1 - c0):,.0f}", f"{n / (c2 - c0):,.0f}", f"{n / (c3 - c0):,.0f}",
                  "met" if n / (c2 - c0) >= 20_000 else "missed")
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
