"""Is a quality difference between two runs real? A paired test on the per-probe scores.

The same probes are answered in both runs, so the test is paired: the exact sign-flip permutation test of the
mean score difference (every one of the 2^n sign assignments of the n non-zero differences; a seeded Monte
Carlo of 20,000 above n = 20). Significant when p < 0.01 and the mean changes by at least 0.01 (one probe in a
hundred); otherwise "not significant". With a 20-probe set this needs most probes to move the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.01
MIN_EFFECT = 0.01
EXACT_UP_TO = 20
MONTE_CARLO = 20_000
BOOTSTRAP = 2000


def sign_flip_p(diffs: Sequence[float], seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test on ``diffs`` (zeros dropped)."""
    d = np.array([x for x in diffs if x != 0], dtype=float)
    n = len(d)
    if n == 0:
        return 1.0
    obs = abs(d.sum())
    if n <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)), dtype=float) if n <= 12 else None
        if signs is None:  # 2^n rows built in bits, not a Python product
            bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
            signs = 1.0 - 2.0 * bits
        sums = np.abs(signs @ d)
    else:
        rng = np.random.default_rng(seed)
        sums = np.abs((rng.integers(0, 2, (MONTE_CARLO, n)) * 2 - 1) @ d)
    return float(np.mean(sums >= obs - 1e-12))


def paired(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Compare two runs' per-probe scores on the probes both answered."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return {"n": len(keys), "p": None, "verdict": "n/a", "ci": None, "mean_change": None}
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    diff = y - x
    p = sign_flip_p(diff.tolist(), seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keys), (BOOTSTRAP, len(keys)))
    ma, mb = x[idx].mean(axis=1), y[idx].mean(axis=1)
    ratio = mb / np.where(ma == 0, np.nan, ma) - 1
    ci = tuple(float(v) for v in np.nanpercentile(ratio, [2.5, 97.5])) if np.isfinite(ratio).any() else None
    sig = p < ALPHA and abs(float(diff.mean())) >= MIN_EFFECT
    return {"n": len(keys), "p": p, "verdict": "significant" if sig else "not significant", "ci": ci,
            "mean_change": float(diff.mean())}


def item_scores(run: Any) -> dict[str, float]:
    """Per-probe scores of a run (every step with a quality block; keys are step/probe)."""
    out: dict[str, float] = {}
    for i, leaf in enumerate(run.leaves()):
        q = (leaf.summary.get("phasebench") or {}).get("quality") or {}
        for it in q.get("items", []):
            out[f"{i}/{it['id']}"] = float(it["score"])
    return out


def _block(run: Any) -> dict[str, Any]:
    for leaf in run.leaves():
        q = (leaf.summary.get("phasebench") or {}).get("quality")
        if q:
            return q
    return {}


def quality_rows(runs: Sequence[Any], row_type: Any) -> list[Any]:
    """Rows for ``compare``: the quality score (paired test against the first run), exact match, and the
    agreement with a reference where the runs had one. Nothing when no run has quality probes."""
    blocks = [_block(r) for r in runs]
    if not any(blocks):
        return []
    scores = [item_scores(r) for r in runs]
    vals = [b.get("score") for b in blocks]
    base = vals[0]
    row = row_type("quality score", "", vals, [None if (v is None or not base) else v / base - 1 for v in vals])
    for i in range(len(runs)):
        if i == 0 or vals[i] is None or base is None:
            row.verdicts.append("")
            row.p_values.append(None)
            row.ci.append(None)
            continue
        t = paired(scores[0], scores[i], seed=i)
        row.verdicts.append(t["verdict"])
        row.p_values.append(t["p"])
        row.ci.append(t["ci"])
    rows = [row]
    for key, label in (("exact_match", "quality exact match"),):
        v = [b.get(key) for b in blocks]
        rows.append(row_type(label, "", v, [None] * len(v), ["one value per run"] * len(v)))
    ref = [(b.get("reference") or {}).get("rouge_l") for b in blocks]
    if any(x is not None for x in ref):
        rows.append(row_type("ROUGE-L vs reference", "", ref, [None] * len(ref), [""] * len(ref)))
    valid = [None if not b else float(bool(b.get("valid"))) for b in blocks]
    rows.append(row_type("quality valid (1 = yes)", "", valid, [None] * len(valid), [""] * len(valid)))
    return rows
