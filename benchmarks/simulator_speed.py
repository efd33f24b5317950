"""Simulator speed: simulated requests per CPU-second (aim: ≥ 20,000 end to end, ≥ 200,000 summary only).

Each case runs in a fresh process: `simulate_run` on 10,000 requests (llama-3-8b on an H100, analytic profile,
Poisson arrivals at a saturating 1,000 req/s, prompts 128–1,024 tokens, 128 output tokens each), either writing
the whole run folder (manifest, requests.jsonl with every token's time, summary) or in the summary-only mode
(manifest and summary). Two CPU figures per case:

- *run*: CPU time of `simulate_run` itself: workload, schedule, simulator, records, summary, files (modules
  that are imported on first use are imported before, so their cost lands in the next figure);
- *process*: the whole child process's CPU time (getrusage), interpreter start-up and imports included.

The results database is off (PHASEBENCH_DB=off); recording 10,000 records there is `store.py`'s cost, printed
on its own line.

    python benchmarks/simulator_speed.py [--requests 10000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(mode: str, n: int, out: str) -> None:
    from phasebench.model.phases import setup_for
    from phasebench.sim.profile import AnalyticProfile
    from phasebench.sim.replica import SchedulerConfig
    from phasebench.sim.run import simulate_run
    from phasebench.spec import build_spec

    setup = setup_for("llama-3-8b", "h100-sxm")[0]
    spec = build_spec(None, url="http://simulated.invalid/v1", scenario="server", rate="1000", requests=n,
                      input_tokens="576:260", output_tokens="128", seed=0, out=Path(out))
    cfg = SchedulerConfig(max_seqs=256, max_queue=10**9)
    import numpy.random  # noqa: F401  first-use imports belong to the process figure, not the run's

    from phasebench import env
    from phasebench.store import record_run  # noqa: F401

    env.environment()
    c0 = time.process_time()
    run = simulate_run(spec, AnalyticProfile(setup), cfg, summary_only=mode == "summary", record=mode == "db",
                       keep_records=mode == "db")
    c1 = time.process_time()
    print(json.dumps({"run_cpu_s": c1 - c0, "iterations": run.manifest["simulation"]["iterations"],
                      "completed": run.summary["completed"], "itl_values": run.summary["phasebench"]["metrics"]["itl_token_ms"]["count"]}))


def measure(mode: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PHASEBENCH_DB": "off" if mode != "db" else str(Path(tmp) / "results.db")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([sys.executable, __file__, "--child", mode, "--requests", str(n), "--out", str(Path(tmp) / "run")],
                           env=env, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        size = sum(f.stat().st_size for f in (Path(tmp) / "run").iterdir())
    d = json.loads(p.stdout.strip().splitlines()[-1])
    d["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    d["folder_bytes"] = size
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="2,000 requests, no database case")
    ap.add_argument("--child")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.requests, a.out)
        return
    from rich.console import Console
    from rich.table import Table

    n = 2_000 if a.quick else a.requests
    t = Table(title=f"{n:,} simulated requests (llama-3-8b / h100-sxm, 1,000 req/s offered, 128 output tokens)",
              title_justify="left")
    for c in ("mode", "iterations", "ITL values", "run CPU-s", "req / run CPU-s", "process CPU-s", "req / process CPU-s",
              "aim", "met"):
        t.add_column(c, justify="right")
    cases = [("end to end (folder written)", "full", 20_000), ("summary only", "summary", 200_000)]
    if not a.quick:
        cases.append(("end to end + results database", "db", None))
    for name, mode, aim in cases:
        d = measure(mode, n)
        rate = n / d["run_cpu_s"]
        t.add_row(name, f"{d['iterations']:,}", f"{d['itl_values']:,}", f"{d['run_cpu_s']:.3f}", f"{rate:,.0f}",
                  f"{d['process_cpu_s']:.2f}", f"{n / d['process_cpu_s']:,.0f}", f"{aim:,}" if aim else "-",
                  ("yes" if rate >= aim else "no") if aim else "-")
    Console(width=160).print(t)


if __name__ == "__main__":
    main()
