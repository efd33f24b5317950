"""How well `predict` agrees with published measurements: median |error| on the corpus (src/phasebench/data/corpus.csv).

Three columns per line: the priors alone (data/engines.yaml, no fit), the fit scored on the rows it was fitted on
(in-sample), and leave-one-source-out (each source scored by a fit on all the other sources: the honest figure).
Lines: overall, per phase group (prefill = TTFT, decode = TPOT / a stream's tok/s, e2e, throughput), per source,
per engine|device class; then leave-one-source-out split by what the other sources had of each row's engine and
device class (so a covered prediction and one outside the corpus are told apart). |error| = |predicted / measured − 1|.
Last, the held-out set (src/phasebench/data/holdout.csv): published measurements that no fit has seen, scored by the
fit on the whole corpus (with --holdout-only: the installed fit, data/engines_fit.yaml, as `predict` does today).

    PYTHONPATH=src python benchmarks/predict_accuracy.py            # full fit (a few CPU-minutes)
    PYTHONPATH=src python benchmarks/predict_accuracy.py --quick    # fewer fit iterations, for checking
    PYTHONPATH=src python benchmarks/predict_accuracy.py --write    # also regenerate data/engines_fit.yaml
    PYTHONPATH=src python benchmarks/predict_accuracy.py --holdout-only   # the held-out set alone (seconds, no fit)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phasebench.model import fit as F  # noqa: E402
from phasebench.model.corpus import holdout_path, load  # noqa: E402


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _med(xs: list[float]) -> str:
    return f"{np.median(xs):.1f}%" if xs else "-"


def _write_rows(path: Path, rows: list, prior: dict, fitted: dict, loso: dict, cov: dict) -> None:
    """One line per row: what it is, and predicted ÷ measured as time (exp of the log residual) three ways."""
    import csv

    def ratio(d: dict, i: str) -> str:
        return f"{np.exp(d[i]):.4f}" if i in d else ""

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "source", "engine", "hardware", "devices", "model", "precision", "batch", "input_tokens",
                    "output_tokens", "group", "metric", "value", "prior_ratio", "fitted_ratio", "held_out_ratio",
                    "held_out_coverage"])
        for r in rows:
            s = r.setup
            w.writerow([r.id, r.source, r.engine, r.hardware, s.devices, s.model.name, s.precision.label(), r.batch,
                        r.input_len, r.output_len, r.group, r.metric, f"{r.value:g}", ratio(prior, r.id),
                        ratio(fitted, r.id), ratio(loso, r.id), cov.get(r.id, "")])


def _lines(rows: list) -> list[tuple[str, list[str]]]:
    """(line name, its rows' ids): overall, then per phase group, per source and per engine|class."""
    out = [("**overall**", [r.id for r in rows])]
    for label, keyf in (("group", lambda r: r.group), ("source", lambda r: r.source), ("engine|class", lambda r: r.key)):
        groups = defaultdict(list)
        for r in rows:
            groups[keyf(r)].append(r.id)
        out += [(f"{label}: {k}", groups[k]) for k in sorted(groups)]
    return out


def holdout(path: Path | None, params: dict[str, float] | None = None) -> None:
    """The held-out set scored by ``params`` (this run's fit on the whole corpus), or by the installed fit:
    overall, per phase group, per source, per engine|class."""
    rows, skipped = load(path or holdout_path())
    got = F.score_installed(rows) if params is None else F.score(rows, params)
    which = "the installed fit (data/engines_fit.yaml)" if params is None else "this run's fit on the whole corpus"
    print(f"\nheld-out set ({path or 'data/holdout.csv'}): {len(rows)} rows from {len({r.source for r in rows})} "
          f"source(s), never fitted on, scored by {which}; {len(rows) - len(got)} not predictable, "
          f"{len(skipped)} not loadable\n")
    print(f"| held-out rows | n | {'installed fit' if params is None else 'this fit'} |")
    print("|---|---:|---:|")
    for name, ids in _lines([r for r in rows if r.id in got]):
        print(f"| {name} | {len(ids)} | {_med([F.abs_pct(got[i]) for i in ids])} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 fit evaluations instead of 60 (for checking)")
    ap.add_argument("--write", action="store_true", help="write src/phasebench/data/engines_fit.yaml from this fit")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--worst", type=int, default=15, help="list the N worst rows leave-one-source-out")
    ap.add_argument("--rows-csv", type=Path, default=None,
                    help="also write every row's predicted ÷ measured (priors, fitted, held out) to this CSV")
    ap.add_argument("--holdout", type=Path, default=None, help="held-out set to score (default data/holdout.csv)")
    ap.add_argument("--holdout-only", action="store_true", help="score the held-out set with the installed fit only")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="processes for the held-out fits (the figures do not depend on it)")
    a = ap.parse_args()
    if a.holdout_only:
        holdout(a.holdout)
        return 0
    nfev = 10 if a.quick else 60
    t0 = time.process_time()
    rows, skipped = load(a.corpus)
    prior = F.score(rows, {})
    fitted = F.fit(rows, max_nfev=nfev)
    loso = F.leave_one_source_out(rows, max_nfev=nfev, jobs=a.jobs)
    cpu = time.process_time() - t0 + _children_cpu()
    print(f"corpus: {len(rows)} rows scored from {len({r.source for r in rows})} sources; {len(skipped)} rows not "
          f"predictable ({'; '.join(sorted({why.split(':')[0][:70] for _, why in skipped}))})")
    print(f"fit: {len(fitted.keys)} parameters, {fitted.nfev} evaluations, {cpu:.0f} CPU-s in all"
          f"{' (--quick)' if a.quick else ''}\n")
    print("| rows | n | priors only | fitted (in-sample) | leave-one-source-out |")
    print("|---|---:|---:|---:|---:|")

    def line(name: str, ids: list[str]) -> None:
        p = [F.abs_pct(prior[i]) for i in ids if i in prior]
        f = [F.abs_pct(fitted.residuals[i]) for i in ids if i in fitted.residuals]
        lo = [F.abs_pct(loso[i]) for i in ids if i in loso]
        print(f"| {name} | {len(lo)} | {_med(p)} | {_med(f)} | {_med(lo)} |")

    for name, ids in _lines(rows):
        line(name, ids)
    cov = F.held_out_coverage(rows)
    print("\nleave-one-source-out by what the other sources had of the row's engine and device class (covered: "
          "another source measured that engine on that class; engine elsewhere: only on other classes; engine "
          "unseen: no other source has the engine):\n")
    groups_ = ("prefill", "decode", "e2e", "throughput")
    print("| held out | n | overall | " + " | ".join(groups_) + " |")
    print("|---|---:|---:|" + "---:|" * len(groups_))
    for c in F.HELD_OUT_COVERAGE:
        ids = {r.id for r in rows if r.id in loso and cov[r.id] == c}
        per = [_med([F.abs_pct(loso[r.id]) for r in rows if r.id in ids and r.group == g]) for g in groups_]
        print(f"| {c} | {len(ids)} | {_med([F.abs_pct(loso[i]) for i in ids])} | " + " | ".join(per) + " |")
    worst = sorted((r for r in rows if r.id in loso), key=lambda r: -abs(loso[r.id]))[: a.worst]
    if worst:
        print(f"\nworst {len(worst)} rows leave-one-source-out (predicted ÷ measured, as time):")
        for r in worst:
            s = r.setup
            print(f"  #{r.id} {r.source}: {r.engine} on {s.devices}× {r.hardware}, {s.model.name} {s.precision.label()}, "
                  f"B={r.batch} {r.input_len}/{r.output_len} {r.metric}={r.value:g} → ×{np.exp(loso[r.id]):.2f}")
    if a.rows_csv:
        _write_rows(a.rows_csv, rows, prior, fitted.residuals, loso, cov)
        print(f"\nwrote every row's ratios to {a.rows_csv}")
    holdout(a.holdout, fitted.parameters)
    print("\nfitted parameters:", ", ".join(f"{k}={v:.4g}" for k, v in fitted.parameters.items()))
    if a.write:
        print(f"wrote {F.write(F.document(rows, skipped, fitted, loso, a.corpus or F.corpus_path()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
