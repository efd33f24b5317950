"""Simulator speed: simulated requests per CPU-second (aim: >= 20,000 end to end, >= 200,000 summary only).

Each case runs in a fresh process: `simulate_run` on N requests (llama-3-8b on an H100, analytic profile, an
offline batch of N requests at t = 0, prompts 576 +- 260 tokens, 128 output tokens each), either writing the whole
run folder (manifest, requests.jsonl with every token's time, summary) or in the summary-only mode (manifest and
summary). Two CPU figures per case:

- *run*: CPU time of `simulate_run` itself: workload, schedule, simulator, records, summary, files (modules
  that are imported on first use are imported before, so their cost lands in the next figure);
- *process*: the whole child process's CPU time (getrusage): interpreter start-up (with whatever the site's
  .pth files import), imports, catalogs, the run, the exit. The aims are judged on this figure. The child ends
  as `phasebench`'s CLI does (cli.main: gc.freeze(), so the interpreter's last collections skip the objects
  reference counting frees anyway, ~0.1 CPU-s).

The cases run at 10,000 requests, and at --large (100,000) where start-up is amortised, and summary only at
--huge (1,000,000), where it is a tenth of the process; the start-up alone (a child that imports and sets up but
simulates nothing) is printed on its own row. The same 10,000 requests through the command line
(`phasebench simulate ... --scenario offline`, its terminal report printed to a pipe) are two more rows: what a
user's shell sees, with typer, rich and the report on top (informational: the aims are the simulator's).
Bytecode is compiled once before the measured children (PYTHONPYCACHEPREFIX in a temporary folder, as an
installed package has its .pyc files), so a run does not pay for compiling phasebench's sources when
PYTHONDONTWRITEBYTECODE is set.

The results database is off (PHASEBENCH_DB=off); recording 10,000 records there is `store.py`'s cost, printed
on its own line.

    python benchmarks/simulator_speed.py [--requests 10000] [--large 100000] [--huge 1000000] [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def child(mode: str, n: int, out: str) -> None:
    """One case in this process; ``mode`` full | summary | db | startup (imports and set-up, no simulation)."""
    from phasebench.model.phases import setup_for
    from phasebench.sim.profile import AnalyticProfile
    from phasebench.sim.replica import SchedulerConfig
    from phasebench.sim.run import simulate_run
    from phasebench.spec import build_spec

    setup = setup_for("llama-3-8b", "h100-sxm")[0]
    spec = build_spec(None, url="http://simulated.invalid/v1", scenario="offline", requests=n,
                      input_tokens="576:260", output_tokens="128", seed=0, out=Path(out))
    cfg = SchedulerConfig(max_seqs=256)
    import numpy.random  # noqa: F401  first-use imports belong to the process figure, not the run's

    from phasebench import env

    if mode == "db":
        from phasebench.store import record_run  # noqa: F401

    env.environment()
    if mode == "startup":
        print(json.dumps({"run_cpu_s": 0.0, "iterations": 0, "completed": 0, "itl_values": 0}))
        return
    c0 = time.process_time()
    run = simulate_run(spec, AnalyticProfile(setup), cfg, summary_only=mode == "summary", record=mode == "db",
                       keep_records=False)
    c1 = time.process_time()
    print(json.dumps({"run_cpu_s": c1 - c0, "iterations": run.manifest["simulation"]["iterations"],
                      "completed": run.summary["completed"], "itl_values": run.summary["phasebench"]["metrics"]["itl_token_ms"]["count"]}))


CLI = ("import sys; from phasebench.cli import main; sys.argv[0] = 'phasebench'; main()")


def measure(mode: str, n: int, pycache: str) -> dict:
    """One case in a child process: ``mode`` as :func:`child`'s, or cli / cli-summary (`phasebench simulate`)."""
    import resource
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PHASEBENCH_DB": "off" if mode != "db" else str(Path(tmp) / "results.db"),
               "PYTHONPYCACHEPREFIX": pycache, "COLUMNS": "100"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        out = str(Path(tmp) / "run")
        if mode == "python":
            cmd = [sys.executable, "-c", "pass"]
        elif mode.startswith("cli"):
            cmd = [sys.executable, "-c", CLI, "simulate", "--model", "llama-3-8b", "--hardware", "h100-sxm",
                   "--scenario", "offline", "--requests", str(n), "--input-tokens", "576:260", "--output-tokens",
                   "128", "--seed", "0", "--out", out, *(["--summary-only"] if mode == "cli-summary" else [])]
        else:
            cmd = [sys.executable, __file__, "--child", mode, "--requests", str(n), "--out", out]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_dir = Path(tmp) / "run"
        size = sum(f.stat().st_size for f in run_dir.iterdir()) if run_dir.is_dir() else 0
        if mode.startswith("cli"):   # the run's own figures, from the folder it wrote
            manifest = json.loads((run_dir / "manifest.json").read_text())
            summary = json.loads((run_dir / "summary.json").read_text())
            d = {"run_cpu_s": manifest["simulation"]["cpu_s"],
                 "iterations": manifest["simulation"]["iterations"], "completed": summary["completed"],
                 "itl_values": summary["phasebench"]["metrics"]["itl_token_ms"]["count"]}
        elif mode == "python":
            d = {"run_cpu_s": 0.0, "iterations": 0, "completed": 0, "itl_values": 0}
        else:
            d = json.loads(p.stdout.strip().splitlines()[-1])
    d["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    d["folder_bytes"] = size
    return d


def main() -> None:
    if sys.argv[1:2] == ["--child"]:   # the measured process: no argparse (its import is not the simulator's)
        _, _, mode, _, n, _, out = sys.argv
        child(mode, int(n), out)
        import gc

        gc.freeze()   # the process ends as the CLI's does (cli.main)
        return
    import argparse
    import statistics
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000, help="the amortised size (0: skip)")
    ap.add_argument("--huge", type=int, default=1_000_000,
                    help="the summary-only size where start-up is a tenth of the process (0: skip; ~0.8 GB)")
    ap.add_argument("--quick", action="store_true", help="2,000 requests, no large and no database case, one repeat")
    ap.add_argument("--repeat", type=int, default=3,
                    help="fresh processes per case; the table gives the median (and the process CPU's range)")
    a = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    n = 2_000 if a.quick else a.requests
    reps = 1 if a.quick else max(a.repeat, 1)
    t = Table(title="simulated requests per CPU-second (llama-3-8b / h100-sxm, an offline batch, 128 output tokens; "
              f"median of {reps} fresh process(es) per case); aims judged on the whole process", title_justify="left")
    for c in ("requests", "mode", "iterations", "ITL values", "run CPU-s", "req / run CPU-s", "process CPU-s",
              "(range)", "req / process CPU-s", "aim", "met"):
        t.add_column(c, justify="right")
    cases = [(0, "`python -c pass` (the interpreter and this site's .pth files)", "python", None),
             (n, "start-up only (imports, catalogs; nothing simulated)", "startup", None),
             (n, "end to end (folder written)", "full", 20_000), (n, "summary only", "summary", 200_000)]
    if not a.quick and a.large:
        cases += [(a.large, "end to end (folder written)", "full", 20_000), (a.large, "summary only", "summary", 200_000)]
    if not a.quick and a.huge:
        cases.append((a.huge, "summary only", "summary", 200_000))
    if not a.quick:
        cases.append((n, "end to end + results database", "db", None))
        cases += [(n, "`phasebench simulate` (CLI, report printed)", "cli", None),
                  (n, "`phasebench simulate --summary-only` (CLI)", "cli-summary", None)]
    with tempfile.TemporaryDirectory() as pycache:
        measure("startup", 1, pycache)   # compiles the bytecode once, as an install would have it
        for size, name, mode, aim in cases:
            runs = [measure(mode, size, pycache) for _ in range(reps)]
            d = runs[0]
            run_cpu = statistics.median(r["run_cpu_s"] for r in runs)
            procs = [r["process_cpu_s"] for r in runs]
            proc = statistics.median(procs)
            rate = size / run_cpu if run_cpu else None
            prate = size / proc if proc else 0.0
            t.add_row(f"{size:,}", name, f"{d['iterations']:,}", f"{d['itl_values']:,}", f"{run_cpu:.3f}",
                      f"{rate:,.0f}" if rate else "-", f"{proc:.3f}", f"{min(procs):.2f}–{max(procs):.2f}",
                      f"{prate:,.0f}" if mode not in ("startup", "python") else "-", f"{aim:,}" if aim else "-",
                      ("yes" if prate >= aim else "no") if aim else "-")
    Console(width=170).print(t)


if __name__ == "__main__":
    main()
