"""Compare runs metric by metric, and say whether a difference is real.

Per-request metrics (TTFT, TPOT, ITL, E2E) are compared on their samples: a two-sided Mann-Whitney U test
(normal approximation with tie correction) and a bootstrap 95% confidence interval of the relative change of
the median. A difference is **significant** when p < 0.01, the interval excludes zero, and the change is at
least 1% (a floor below which no serving decision changes). Otherwise it is reported as "not significant"
instead of a misleading percentage, as pyperf does. Per-run numbers (throughputs, goodput, MBU) have one value
per run and get no test: they are shown with their change only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import metrics as M
from .records import RequestRecord
from .results import Run

ALPHA = 0.01
MIN_EFFECT = 0.01
BOOTSTRAP = 2000

SAMPLED = {
    "ttft_ms": lambda rs: [M.ttft_ms(r) for r in rs],
    "tpot_ms": lambda rs: [M.tpot_ms(r) for r in rs],
    "itl_token_ms": lambda rs: [x for r in rs for x in M.itl_token_ms(r)],
    "e2e_ms": lambda rs: [M.e2e_ms(r) for r in rs],
}
PER_RUN = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput")


@dataclass
class Row:
    metric: str
    stat: str
    values: list[float | None]
    changes: list[float | None]          # relative to the first run
    verdicts: list[str] = field(default_factory=list)   # "", "significant", "not significant", "n/a"
    p_values: list[float | None] = field(default_factory=list)
    ci: list[tuple[float, float] | None] = field(default_factory=list)


@dataclass
class Comparison:
    names: list[str]
    rows: list[Row]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.names, "warnings": self.warnings,
                "rows": [r.__dict__ for r in self.rows]}


def mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected, continuity-corrected)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return 1.0
    both = np.concatenate([a, b])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average ranks for ties
    i = 0
    tie_term = 0.0
    while i < len(both):
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - mu) - 0.5) / sigma
    return math.erfc(max(z, 0) / math.sqrt(2))


def bootstrap_median_change(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% interval of median(b)/median(a) − 1 by resampling each run's requests."""
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, (BOOTSTRAP, len(a))), axis=1)
    mb = np.median(rng.choice(b, (BOOTSTRAP, len(b))), axis=1)
    ratio = mb / np.where(ma == 0, np.nan, ma) - 1
    lo, hi = np.nanpercentile(ratio, [2.5, 97.5])
    return float(lo), float(hi)


def _samples(run: Run, metric: str) -> np.ndarray:
    recs: list[RequestRecord] = [r for leaf in run.leaves() for r in leaf.records if r.ok and not r.warmup]
    return np.array([x for x in SAMPLED[metric](recs) if x is not None], dtype=float)


def _pb(run: Run) -> dict[str, Any]:
    return run.summary.get("phasebench") or {}


def comparable(runs: list[Run]) -> list[str]:
    """Why these runs may not measure the same thing."""
    warn = []
    base = runs[0]

    def key(r: Run) -> dict[str, Any]:
        sp = r.manifest.get("spec") or {}
        m = _pb(r).get("metrics", {})
        return {"model": (r.manifest.get("target") or {}).get("model") or (r.manifest.get("model_file") or {}).get("name"),
                "scenario": sp.get("scenario"), "concurrency": sp.get("concurrency"), "rate": sp.get("rate"),
                "input": (m.get("input_tokens") or {}).get("mean"), "output": (m.get("output_tokens") or {}).get("mean"),
                "simulated": bool(r.manifest.get("simulated"))}

    k0 = key(base)
    for i, r in enumerate(runs[1:], 2):
        k = key(r)
        for f in ("model", "scenario", "concurrency", "rate"):
            if k[f] != k0[f]:
                warn.append(f"run {i} differs in {f}: {k[f]!r} vs {k0[f]!r}")
        for f in ("input", "output"):
            if k0[f] and k[f] and abs(k[f] / k0[f] - 1) > 0.10:
                warn.append(f"run {i} has mean {f} length {k[f]:.0f} tokens vs {k0[f]:.0f}: not the same workload")
        if k["simulated"] != k0["simulated"]:
            warn.append(f"run {i} is {'simulated' if k['simulated'] else 'measured'}, run 1 is not")
    mism = [i for i, r in enumerate(runs, 1) if any("fewer output tokens than asked" in w for w in _pb(r).get("warnings", []))]
    if mism:
        warn.append(f"output length not met in run(s) {mism}: their TPOT/throughput cover fewer tokens")
    invalid = [i for i, r in enumerate(runs, 1) if not r.valid]
    if invalid:
        warn.append(f"run(s) {invalid} are marked invalid (see `phasebench show`)")
    return warn


def compare(runs: list[Run], names: list[str] | None = None) -> Comparison:
    names = names or [str(r.path) for r in runs]
    rows: list[Row] = []
    samples = {m: [_samples(r, m) for r in runs] for m in SAMPLED}
    for metric in SAMPLED:
        for stat, q in (("p50", 50), ("p90", 90), ("p99", 99)):
            vals = [float(np.percentile(s, q)) if len(s) else None for s in samples[metric]]
            row = Row(metric, stat, vals, _changes(vals))
            for i, s in enumerate(samples[metric]):
                if i == 0 or stat != "p50":
                    row.verdicts.append("")
                    row.p_values.append(None)
                    row.ci.append(None)
                    continue
                a = samples[metric][0]
                if len(a) < 3 or len(s) < 3:
                    row.verdicts.append("n/a")
                    row.p_values.append(None)
                    row.ci.append(None)
                    continue
                p = mann_whitney(a, s)
                lo, hi = bootstrap_median_change(a, s, seed=i)
                change = row.changes[i] or 0.0
                sig = p < ALPHA and (lo > 0 or hi < 0) and abs(change) >= MIN_EFFECT
                row.verdicts.append("significant" if sig else "not significant")
                row.p_values.append(p)
                row.ci.append((lo, hi))
            rows.append(row)
    for key in PER_RUN:
        vals = [r.summary.get(key) for r in runs]
        rows.append(Row(key, "", vals, _changes(vals), ["" if i == 0 else "one value per run" for i in range(len(runs))]))
    mbu = [((_pb(r).get("roofline") or {}).get("mbu")) for r in runs]
    if any(v is not None for v in mbu):
        rows.append(Row("decode MBU", "", mbu, _changes(mbu), ["" if i == 0 else "follows TPOT" for i in range(len(runs))]))
    for key, label in (("usd_per_1m_tokens", "$/1M tokens (blended)"),
                       ("usd_per_1m_tokens_at_slo", "$/1M tokens at SLO")):
        vals = [((_pb(r).get("cost") or {}).get(key)) for r in runs]
        if any(v is not None for v in vals):
            known = sorted((v, i) for i, v in enumerate(vals) if v is not None)
            rank = {i: k + 1 for k, (_, i) in enumerate(known)}
            rows.append(Row(label, "", vals, _changes(vals),
                            [f"rank {rank[i]} of {len(known)}" if i in rank else "" for i in range(len(runs))]))
    att = [(_pb(r).get("slo") or {}).get("attainment") for r in runs]
    rows.append(Row("SLO attainment", "", att, _changes(att), [""] * len(runs)))
    from .quality.stats import quality_rows

    rows.extend(quality_rows(runs, Row))  # quality beside speed, paired test on per-probe scores (docs/quality.md)
    return Comparison(names, rows, comparable(runs))


def _changes(vals: list[float | None]) -> list[float | None]:
    base = vals[0]
    return [None if (v is None or not base) else v / base - 1 for v in vals]
