"""Compare runs metric by metric, and say whether a difference is real.

Per-request metrics (TTFT, TPOT, ITL, E2E) are compared on their samples, at every percentile shown (p50, p90,
p95, p99). Each change gets a bootstrap 95% confidence interval of the relative change of that percentile; the
median also gets a two-sided Mann-Whitney U test (normal approximation with tie correction), the tails a
bootstrap test (the share of resampled changes on the far side of zero, doubled). A change is **significant**
when p < 0.01, the interval excludes zero, and the change is at least 1% (a floor below which no serving
decision changes); otherwise "not significant" instead of a misleading percentage, as pyperf does. A
percentile is **untested** when either run has fewer samples than it needs (``metrics.min_samples``: p90 10,
p95 20, p99 100). Per-run numbers (throughputs, goodput, MBU) have one value per run and get no test.

The bootstrap does not resample: the k-th order statistic of a resample of n sorted values is the value at
index ⌈n·U⌉ with U ~ Beta(k, n + 1 − k) (the k-th of n uniform draws), and the next one follows from U by a
Beta(1, n − k) step, so each replicate of a linearly interpolated percentile costs O(1) whatever n is. The
random generator is seeded per (metric, percentile, run), so the same runs always give the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import metrics as M
from .records import RequestRecord
from .results import PhasebenchBlock, Run

ALPHA = 0.01
MIN_EFFECT = 0.01
BOOTSTRAP = 10_000
SEED = 20261201
STATS = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0))

SAMPLED = {
    "ttft_ms": lambda rs: [M.ttft_ms(r) for r in rs],
    "tpot_ms": lambda rs: [M.tpot_ms(r) for r in rs],
    "itl_token_ms": lambda rs: [x for r in rs for x in M.itl_token_ms(r)],
    "e2e_ms": lambda rs: [M.e2e_ms(r) for r in rs],
}
PER_RUN = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput")
UNTESTED = ("untested", "n/a")   # n/a: the quality test's word for a test it could not run


@dataclass
class Row:
    metric: str
    stat: str
    values: list[float | None]
    changes: list[float | None]          # relative to the first run
    verdicts: list[str] = field(default_factory=list)   # "", "significant", "not significant", "untested", ...
    p_values: list[float | None] = field(default_factory=list)
    ci: list[tuple[float, float] | None] = field(default_factory=list)
    counts: list[int | None] = field(default_factory=list)  # samples per run (per-request metrics)


@dataclass
class Comparison:
    names: list[str]
    rows: list[Row]
    warnings: list[str]

    def tally(self) -> list[dict[str, Any]]:
        """Per run against the first: the tested changes (significant better / worse, not significant), the
        percentile changes left untested, and the per-run figures that have no test."""
        out = []
        for i in range(1, len(self.names)):
            t = {"run": i + 1, "better": 0, "worse": 0, "not_significant": 0, "untested": 0, "per_run": 0}
            for r in self.rows:
                v = r.verdicts[i] if i < len(r.verdicts) else ""
                if v == "significant":
                    better = ((r.changes[i] or 0) < 0) == lower_is_better(r.metric)
                    t["better" if better else "worse"] += 1
                elif v == "not significant":
                    t["not_significant"] += 1
                elif v in UNTESTED:
                    t["untested"] += 1
                elif r.changes[i] is not None:
                    t["per_run"] += 1
            out.append(t)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.names, "warnings": self.warnings, "tally": self.tally(),
                "min_samples": {stat: M.min_samples(q) for stat, q in STATS},
                "rows": [r.__dict__ for r in self.rows]}


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_ms")


def mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected, continuity-corrected)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return 1.0
    both = np.concatenate([a, b])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]   # the average rank of each run of ties
    tie_term = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - mu) - 0.5) / sigma
    return math.erfc(max(z, 0) / math.sqrt(2))


def bootstrap_percentile(sorted_vals: np.ndarray, q: float, rng: np.random.Generator, draws: int = BOOTSTRAP) -> np.ndarray:
    """``draws`` bootstrap replicates of ``np.percentile(resample, q)`` (linear) of a sorted sample, drawn from
    the order statistics' exact distribution (see the module doc) instead of resampling n values each time."""
    x = sorted_vals
    n = len(x)
    h = (n - 1) * q / 100.0
    k = math.floor(h) + 1          # 1-based order statistic below the percentile
    frac = h - (k - 1)
    u = rng.beta(k, n + 1 - k, draws)
    lo = x[np.clip(np.ceil(n * u).astype(np.int64), 1, n) - 1]
    if frac == 0 or k >= n:
        return lo
    u2 = u + (1 - u) * rng.beta(1, n - k, draws)
    hi = x[np.clip(np.ceil(n * u2).astype(np.int64), 1, n) - 1]
    return lo + frac * (hi - lo)


def bootstrap_change(a: np.ndarray, b: np.ndarray, q: float, seed: int | list[int] = 0) -> tuple[float, float, float] | None:
    """95% interval of percentile_q(b)/percentile_q(a) − 1 over bootstrap replicates of each run's sorted samples, and
    the bootstrap two-sided p-value of "no change" (twice the share of replicates on the far side of 0, at
    least 1/replicates). None when run a's percentile is 0 in every replicate."""
    rng = np.random.default_rng(seed)
    qa = bootstrap_percentile(a, q, rng)
    qb = bootstrap_percentile(b, q, rng)
    ratio = qb[qa != 0] / qa[qa != 0] - 1
    if ratio.size == 0:
        return None
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    p = 2 * min(float(np.mean(ratio <= 0)), float(np.mean(ratio >= 0)))
    return float(lo), float(hi), min(max(p, 1 / ratio.size), 1.0)


def significant(p: float, ci: tuple[float, float], change: float) -> bool:
    """The one rule: p < ALPHA, the interval excludes 0, and the change is at least MIN_EFFECT."""
    return p < ALPHA and (ci[0] > 0 or ci[1] < 0) and abs(change) >= MIN_EFFECT


def _samples(run: Run, metric: str) -> np.ndarray:
    recs: list[RequestRecord] = [r for leaf in run.leaves() for r in leaf.records if r.ok and not r.warmup]
    return np.array([x for x in SAMPLED[metric](recs) if x is not None], dtype=float)


def _pb(run: Run) -> PhasebenchBlock:
    return run.result.phasebench


def comparable(runs: list[Run]) -> list[str]:
    """Why these runs may not measure the same thing."""
    warn = []
    base = runs[0]

    def key(r: Run) -> dict[str, Any]:
        mf, sp, tgt = r.meta, r.meta.spec, r.meta.target
        m = _pb(r).metrics
        return {"model": (tgt and tgt.model) or (mf.model_file and mf.model_file.name),
                "scenario": sp and sp.scenario, "concurrency": sp and sp.concurrency, "rate": sp and sp.rate,
                "input": m.input_tokens.mean, "output": m.output_tokens.mean, "simulated": bool(mf.simulated)}

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
    mism = [i for i, r in enumerate(runs, 1) if any("fewer output tokens than asked" in w for w in _pb(r).warnings)]
    if mism:
        warn.append(f"output length not met in run(s) {mism}: their TPOT/throughput cover fewer tokens")
    invalid = [i for i, r in enumerate(runs, 1) if not r.valid]
    if invalid:
        warn.append(f"run(s) {invalid} are marked invalid (see `phasebench show`)")
    return warn


def compare(runs: list[Run], names: list[str] | None = None) -> Comparison:
    names = names or [str(r.path) for r in runs]
    rows: list[Row] = []
    samples = {m: [np.sort(_samples(r, m)) for r in runs] for m in SAMPLED}
    for m_i, metric in enumerate(SAMPLED):
        for stat, q in STATS:
            rows.append(percentile_row(metric, stat, q, samples[metric], seed=[SEED, m_i, int(q * 10)]))
    for key in PER_RUN:
        vals = [getattr(r.result, key) for r in runs]
        rows.append(Row(key, "", vals, _changes(vals), ["" if i == 0 else "one value per run" for i in range(len(runs))]))
    mbu = [rf.mbu if (rf := _pb(r).roofline) else None for r in runs]
    if any(v is not None for v in mbu):
        rows.append(Row("decode MBU", "", mbu, _changes(mbu), ["" if i == 0 else "follows TPOT" for i in range(len(runs))]))
    for key, label in (("usd_per_1m_tokens", "$/1M tokens (blended)"),
                       ("usd_per_1m_tokens_at_slo", "$/1M tokens at SLO")):
        vals = [getattr(c, key) if (c := _pb(r).cost) else None for r in runs]
        if any(v is not None for v in vals):
            known = sorted((v, i) for i, v in enumerate(vals) if v is not None)
            rank = {i: k + 1 for k, (_, i) in enumerate(known)}
            rows.append(Row(label, "", vals, _changes(vals),
                            [f"rank {rank[i]} of {len(known)}" if i in rank else "" for i in range(len(runs))]))
    att = [slo.attainment if (slo := _pb(r).slo) else None for r in runs]
    rows.append(Row("SLO attainment", "", att, _changes(att), [""] * len(runs)))
    from .quality.stats import quality_rows

    rows.extend(quality_rows(runs, Row))  # quality beside speed, paired test on per-probe scores (docs/quality.md)
    return Comparison(names, rows, comparable(runs))


def percentile_row(metric: str, stat: str, q: float, samples: list[np.ndarray], seed: list[int]) -> Row:
    """One percentile of one metric across the runs, each run's change against the first tested (or untested)."""
    vals = [float(np.percentile(s, q)) if len(s) else None for s in samples]
    row = Row(metric, stat, vals, _changes(vals), counts=[len(s) for s in samples])
    need = M.min_samples(q)
    a = samples[0]
    for i, s in enumerate(samples):
        change = row.changes[i]
        test = None
        if i > 0 and change is not None and min(len(a), len(s)) >= need:
            test = bootstrap_change(a, s, q, seed=[*seed, i])
        if test is None:
            row.verdicts.append("" if i == 0 else "untested")
            row.p_values.append(None)
            row.ci.append(None)
            continue
        lo, hi, p_boot = test
        p = mann_whitney(a, s) if q == 50 else p_boot
        row.verdicts.append("significant" if significant(p, (lo, hi), change) else "not significant")
        row.p_values.append(p)
        row.ci.append((lo, hi))
    return row


def _changes(vals: list[float | None]) -> list[float | None]:
    base = vals[0]
    return [None if (v is None or not base) else v / base - 1 for v in vals]
