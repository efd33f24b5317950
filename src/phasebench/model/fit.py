"""Fit the engine efficiency profiles on the published-measurement corpus; score it leave-one-source-out.

The parameters (``engines.profile`` composes them; docs/model.md lists them):

- per device class c with rows: ``memory|c``, ``compute|c`` (fractions of peak bandwidth and FLOP/s reached
  by the reference engine) and, where the reference engine's rows cover several chip generations a of the class
  (Ampere, Hopper, Ada), ``memory#a``, ``compute#a`` (factors on the class's fractions, prior 1: a generation
  the training rows lack falls back to its class), ``layer_overhead_us|c`` (per layer per forward pass; on Groq the per-stage
  synchronisation of the pipeline);
- per engine e with rows: ``memory@e``, ``compute@e`` (multipliers on the class's fractions; TensorRT-LLM is
  the reference, fixed at 1), ``request_ms@e`` (fixed per request, in TTFT) and ``step_us@e`` (per forward pass);
- per device class with tensor-parallel rows: ``allreduce_us|c`` and ``link|c`` (the all-reduce latency floor and
  the fraction of the interconnect's bandwidth a ring reaches: the interconnect is the device family's); and one
  roofline knee ``sharpness``.

The fit is a MAP estimate: scipy's ``least_squares`` (trust-region reflective, deterministic, started at the
priors) on log(predicted / measured) of every row, with a soft-L1 loss (robust to a few rows that mean something
else than they say), each row weighted by 1/√(rows of its source) so that one large table does not outvote
seven small ones, plus one residual per parameter pulling log(θ) towards its prior (``data/engines.yaml``):
a parameter the rows cannot identify stays at its prior instead of wandering. Parameters live in log space
within bounds. Same corpus → same numbers (tested).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import engines
from .corpus import Row, corpus_path, load
from .engines import profile
from .phases import weight_only

REFERENCE_ENGINE = "trt-llm"
# A row measured by a client over the public internet (LLMPerf's leaderboard, from AWS us-west-2) pays a network
# round trip, TLS and the provider's API gateway in its TTFT. A fixed, assumed 50 ms (not fitted: the corpus has
# too few such rows to tell it apart from the provider's own per-request cost).
INTERNET_RTT_MS = 50.0
F_SCALE = 0.15          # soft-L1 scale on log error: errors beyond ~15% count linearly, not quadratically
PRIOR_WEIGHT = 0.15     # a parameter 1σ from its prior costs like one row 15% off
CENTRE_WEIGHT = 3.0     # a class's generation factors: their log mean held at 0 (nearly a constraint)
SINGLE_SOURCE_LOOSE = 3.0   # prior width × this for the memory/compute factors of an engine only one source has
SINGLE_SOURCE_MIN_ROWS = 5  # ... with at least this many rows

# (σ in log space, lower bound, upper bound) per parameter family
FAMILY = {
    "memory": (0.35, 0.02, 1.0), "compute": (0.5, 0.001, 1.0),
    "memory@": (0.25, 0.1, 2.0), "compute@": (0.35, 0.1, 2.0), "kv_memory": (0.5, 0.05, 1.0),
    "request_ms": (1.2, 0.05, 3000.0), "step_us": (1.2, 1.0, 1e5),
    "layer_overhead_us": (1.2, 0.01, 2000.0), "allreduce_us": (0.8, 1.0, 300.0), "sharpness": (0.8, 1.0, 30.0),
    "internet_rtt_ms": (1.0, 1.0, 2000.0), "gemm_half_rows": (1.0, 0.5, 16.0), "link": (0.4, 0.05, 1.0),
    "moe_compute": (0.5, 0.05, 1.0), "wq_compute": (0.3, 0.2, 1.0), "memory#": (0.2, 0.3, 3.0), "compute#": (0.25, 0.3, 3.0),
}


# Hierarchical priors for the engines' fixed costs: each engine's request_ms@e and step_us@e is centred on a
# global value (the typical engine's, fitted with them), so an engine the training rows lack falls back to what
# the corpus says engines typically cost rather than to a guess. The device vendors' own compilers for SRAM
# dataflow machines (no host-driven steps) keep their own priors.
POOLED, UNPOOLED_ENGINES = engines.POOLED, engines.UNPOOLED_ENGINES


def parent(key: str) -> str | None:
    """The global parameter a key's prior is centred on (hierarchical prior), or None."""
    if "@" not in key:
        return None
    name, eng = key.split("@")
    return name if name in POOLED and eng not in UNPOOLED_ENGINES else None


def _family(key: str) -> str:
    if "#" in key:
        return key.split("#")[0] + "#"
    name = key.split("|")[0]
    if "@" in name:
        base = name.split("@")[0]
        return base + "@" if base in ("memory", "compute") else base
    return name


def prior_value(key: str, rows: list[Row]) -> float:
    """The prior of a parameter, from data/engines.yaml (through the profile with an empty fit)."""
    fam = _family(key)
    if fam in ("memory#", "compute#"):
        return 1.0
    if key in POOLED:   # the typical engine's: the median of the engines' priors
        data = engines._data()
        vals = [float(e.get("prior", {}).get(key, 0.0)) for k, e in data["engines"].items() if k not in UNPOOLED_ENGINES]
        return max(float(np.median(vals)), FAMILY[fam][1])
    if fam == "sharpness":
        return 4.0
    if fam == "moe_compute":
        return 0.7
    if fam == "gemm_half_rows":
        return 8.0
    if fam == "internet_rtt_ms":
        return 50.0
    if fam == "kv_memory":
        return 1.0 - 1e-6
    data = engines._data()
    if "@" in key:
        name, eng = key.split("@")
        pr = data["engines"][eng].get("prior", {})
        if name in ("memory", "compute"):
            return float(pr.get(f"{name}_mult", 1.0))
        # fixed costs: the profile's value on any row of that engine
        row = next(r for r in rows if r.engine == eng)
        return max(float(getattr(profile(row.setup.hardware, eng, fit={}), name)), FAMILY[fam][1])
    name, cls = key.split("|")
    row = next(r for r in rows if r.device_class == cls)
    if name in ("allreduce_us", "link"):   # the class's prior (its kind's, unless the class has its own)
        return min(float(getattr(profile(row.setup.hardware, fit={}), name)), FAMILY[fam][2] - 1e-6)
    p = profile(row.setup.hardware, REFERENCE_ENGINE if REFERENCE_ENGINE in data["engines"] else None, fit={})
    base = {"memory": p.memory, "compute": p.compute}.get(name)
    if base is not None:
        mult = data["engines"][REFERENCE_ENGINE].get("prior", {}).get(f"{name}_mult", 1.0)
        return float(base / mult)
    return max(float(getattr(p, name)), FAMILY[fam][1])


def parameters_for(rows: list[Row]) -> list[str]:
    keys: set[str] = {"sharpness", "kv_memory", "gemm_half_rows"}
    # A factor per chip generation where the class has several generations measured with the reference engine,
    # whose multipliers are fixed at 1: a generation seen only under engines with free multipliers would confound
    # the two, so it keeps its class's fractions.
    archs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.engine == REFERENCE_ENGINE:
            archs[r.device_class].add(engines.device_arch(r.setup.hardware))
    for gens in archs.values():
        if len(gens) > 1:
            keys |= {f"{k}#{a}" for a in gens for k in ("memory", "compute")}
    for r in rows:
        keys |= {f"memory|{r.device_class}", f"compute|{r.device_class}", f"layer_overhead_us|{r.device_class}",
                 f"request_ms@{r.engine}", f"step_us@{r.engine}"}
        if r.engine != REFERENCE_ENGINE:
            keys |= {f"memory@{r.engine}", f"compute@{r.engine}"}
        if r.setup.model.experts > 1:
            keys.add("moe_compute")
        if weight_only(r.setup.model, r.setup.precision):
            keys.add(f"wq_compute@{r.engine}")
        for name in POOLED:
            if parent(f"{name}@{r.engine}"):
                keys.add(name)
        if r.setup.tp > 1 and r.setup.hardware.kind != "sram-dataflow":
            keys |= {f"allreduce_us|{r.device_class}", f"link|{r.device_class}"}
    return sorted(keys)


def _depends(r: Row, key: str) -> bool:
    if key in ("sharpness", "kv_memory", "gemm_half_rows"):
        return True
    if key == "moe_compute":
        return r.setup.model.experts > 1
    if key in POOLED:
        return False   # a global prior centre: it touches rows only through the engines' values
    if key == "internet_rtt_ms":
        return r.internet
    if "#" in key:
        return key.split("#")[1] == engines.device_arch(r.setup.hardware)
    if "@" in key:
        name, eng = key.split("@")
        return eng == r.engine and (name != "wq_compute" or weight_only(r.setup.model, r.setup.precision))
    name, c = key.split("|")
    return c == r.device_class and (name not in ("allreduce_us", "link") or r.setup.tp > 1)


def _generation_groups(keys: list[str], rows: list[Row]) -> list[list[int]]:
    """Indices of each (memory|compute, class)'s generation factors: centred so that the class's fraction is the
    typical generation's, which is what a generation the training rows lack falls back to."""
    cls_of = {engines.device_arch(r.setup.hardware): r.device_class for r in rows}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, k in enumerate(keys):
        if "#" in k:
            name, arch = k.split("#")
            groups[(name, cls_of[arch])].append(j)
    return [v for _, v in sorted(groups.items())]


@dataclass
class Fit:
    parameters: dict[str, float]
    keys: list[str]
    rows: list[Row]
    residuals: dict[str, float] = field(default_factory=dict)   # row id -> log(predicted / measured), in-sample
    unscored: list[str] = field(default_factory=list)           # rows that do not fit in memory
    cost: float = 0.0
    seconds: float = 0.0
    nfev: int = 0


def _predict_row(r: Row, params: dict[str, float], cache: dict | None = None) -> float | None:
    key = (r.setup.hardware.key, r.engine)
    eff = cache.get(key) if cache is not None else None
    if eff is None:
        eff = profile(r.setup.hardware, r.engine, fit=params)
        if cache is not None:
            cache[key] = eff
    return r.predict(replace(r.setup, efficiency=eff), INTERNET_RTT_MS * 1e-3)


def _log_ratio(r: Row, pred: float | None) -> float | None:
    """log(predicted / measured), oriented as time (a throughput's ratio is inverted)."""
    if pred is None or pred <= 0:
        return None
    lr = math.log(pred / r.value)
    return -lr if r.metric.endswith("tok_s") else lr


def fit(rows: list[Row], max_nfev: int = 60) -> Fit:
    from scipy.optimize import least_squares

    t0 = time.perf_counter()
    keys = parameters_for(rows)
    prior = np.array([math.log(prior_value(k, rows)) for k in keys])
    lo = np.array([math.log(FAMILY[_family(k)][1]) for k in keys])
    hi = np.array([math.log(FAMILY[_family(k)][2]) for k in keys])
    sig = np.array([FAMILY[_family(k)][0] for k in keys])
    # An engine only one source measured: its own factors are that source's to absorb (its setup's oddities: an
    # early compiler, a Python loop), so their priors are loose, and a device class's factor, which every engine
    # on the class shares, is not pulled off to explain one source's anomaly
    eng_sources: dict[str, set[str]] = defaultdict(set)
    eng_rows: dict[str, int] = defaultdict(int)
    for r in rows:
        eng_sources[r.engine].add(r.source)
        eng_rows[r.engine] += 1
    # (from a handful of rows, a loose prior would let them set the factors alone: those keep the usual width)
    single = {e for e, s in eng_sources.items() if len(s) == 1 and eng_rows[e] >= SINGLE_SOURCE_MIN_ROWS}
    for j, k in enumerate(keys):
        if "@" in k and k.split("@")[1] in single and _family(k) in ("memory@", "compute@"):
            sig[j] *= SINGLE_SOURCE_LOOSE
    x0 = np.clip(prior, lo + 1e-9, hi - 1e-9)
    per_source: dict[str, int] = defaultdict(int)
    for r in rows:
        per_source[r.source] += 1
    n_src = len(per_source)
    weights = np.array([math.sqrt(len(rows) / (n_src * per_source[r.source])) for r in rows])
    fixed = {k: None for k in keys}

    def params_of(x: np.ndarray) -> dict[str, float]:
        return {k: float(math.exp(v)) for k, v in zip(keys, x)}

    def resid(x: np.ndarray) -> np.ndarray:
        pars = params_of(x)
        out = np.zeros(len(rows) + len(keys) + len(gen_groups))
        cache: dict = {}
        for i, r in enumerate(rows):
            lr = _log_ratio(r, _predict_row(r, pars, cache))
            out[i] = 0.0 if lr is None else weights[i] * lr
        centre = prior.copy()
        for j, p in children:
            centre[j] = x[p]
        out[len(rows):len(rows) + len(keys)] = PRIOR_WEIGHT * (x - centre) / sig
        for g, idx in enumerate(gen_groups):   # a class's generation factors multiply to 1 (centred in log)
            out[len(rows) + len(keys) + g] = CENTRE_WEIGHT * float(np.mean(x[idx]))
        return out

    children = [(j, keys.index(parent(k))) for j, k in enumerate(keys) if parent(k) in keys]
    gen_groups = _generation_groups(keys, rows)

    sparsity = np.zeros((len(rows) + len(keys) + len(gen_groups), len(keys)), dtype=int)
    for i, r in enumerate(rows):
        for j, k in enumerate(keys):
            sparsity[i, j] = int(_depends(r, k))
    sparsity[len(rows):len(rows) + len(keys), :] = np.eye(len(keys), dtype=int)
    for g, idx in enumerate(gen_groups):
        sparsity[len(rows) + len(keys) + g, idx] = 1
    for j, p in children:
        sparsity[len(rows) + j, p] = 1
    del fixed
    res = least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=F_SCALE, method="trf",
                        jac_sparsity=sparsity, x_scale=1.0, max_nfev=max_nfev, xtol=1e-6, ftol=1e-6)
    pars = params_of(res.x)
    out = Fit(pars, keys, rows, cost=float(res.cost), nfev=int(res.nfev))
    for r in rows:
        lr = _log_ratio(r, _predict_row(r, pars))
        if lr is None:
            out.unscored.append(r.id)
        else:
            out.residuals[r.id] = lr
    out.seconds = time.perf_counter() - t0
    return out


def score(rows: list[Row], params: dict[str, float]) -> dict[str, float]:
    """row id -> log(predicted / measured) (time orientation) under ``params``; rows that do not fit left out."""
    out = {}
    for r in rows:
        lr = _log_ratio(r, _predict_row(r, params))
        if lr is not None:
            out[r.id] = lr
    return out


def score_installed(rows: list[Row]) -> dict[str, float]:
    """row id -> log error under the installed fit (``data/engines_fit.yaml``): how ``predict`` does today on rows
    that fit has never seen (:func:`~phasebench.model.corpus.holdout_path`)."""
    return score(rows, dict(engines.fitted().get("parameters") or {}))


def _held_out(rows: list[Row], src: str, max_nfev: int) -> dict[str, float]:
    """One source scored by a fit on every other source (parameters the training rows never saw stay at their
    priors: profile() falls back to them)."""
    f = fit([r for r in rows if r.source != src], max_nfev=max_nfev)
    return score([r for r in rows if r.source == src], f.parameters)


def leave_one_source_out(rows: list[Row], max_nfev: int = 60, jobs: int = 1) -> dict[str, float]:
    """Each source scored by a fit on every other source: row id -> log error. ``jobs`` > 1 runs the fits in
    that many processes (each fit is deterministic and independent: the result does not depend on ``jobs``)."""
    sources = sorted({r.source for r in rows})
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(partial(_held_out, rows, max_nfev=max_nfev), sources))
    else:
        parts = [_held_out(rows, src, max_nfev) for src in sources]
    out: dict[str, float] = {}
    for part in parts:
        out |= part
    return out


def abs_pct(lr: float) -> float:
    """|error| in percent of the measured value for a log ratio: |predicted / measured − 1|."""
    return abs(math.exp(lr) - 1.0) * 100


HELD_OUT_COVERAGE = ("covered", "engine elsewhere", "engine unseen")


def held_out_coverage(rows: list[Row]) -> dict[str, str]:
    """What the corpus had of each row's engine and device class once the row's own source was left out:
    "covered" (another source measured that engine on that class), "engine elsewhere" (the engine, but only on
    other classes) or "engine unseen" (no other source has the engine). A held-out row that is not "covered" is
    scored as a prediction outside the corpus is made: from priors and other engines' and classes' parameters."""
    by_key: dict[str, set[str]] = defaultdict(set)
    by_engine: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_key[r.key].add(r.source)
        by_engine[r.engine].add(r.source)
    return {r.id: HELD_OUT_COVERAGE[0] if by_key[r.key] - {r.source} else
            HELD_OUT_COVERAGE[1] if by_engine[r.engine] - {r.source} else HELD_OUT_COVERAGE[2] for r in rows}


def ranges(rows: list[Row], loso: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """10th/90th percentiles of measured ÷ predicted time per engine|class and group, from LOSO residuals; also
    pooled over every class ("*"), over the rows that were covered when held out ("*covered") and over those that
    were not ("*outside": what a prediction outside the corpus has been seen to miss by)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    cov = held_out_coverage(rows)
    for r in rows:
        if r.id in loso:
            ratio = -loso[r.id]        # log(measured / predicted) in time orientation
            groups[(r.key, r.group)].append(ratio)
            groups[("*", r.group)].append(ratio)
            groups[("*covered" if cov[r.id] == "covered" else "*outside", r.group)].append(ratio)
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for (key, g), v in sorted(groups.items()):
        a = np.array(v)
        q10, q90 = np.percentile(a, [10, 90]) if len(a) > 1 else (a[0], a[0])
        out[key][g] = [round(float(math.exp(min(q10, 0.0))), 4), round(float(math.exp(max(q90, 0.0))), 4), len(a)]
    return dict(out)


def coverage(rows: list[Row]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for r in rows:
        c[r.key] += 1
    return dict(sorted(c.items()))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def document(rows: list[Row], skipped: list[tuple[str, str]], f: Fit, loso: dict[str, float],
             path: Path) -> dict[str, Any]:
    """The engines_fit.yaml document from a fit and its leave-one-source-out scores."""
    return {
        "generated_by": "python -m phasebench.model.fit --write (benchmarks/predict_accuracy.py prints the scores)",
        "corpus": {"file": "data/corpus.csv", "sha256_16": digest(path), "rows": len(rows),
                   "sources": len({r.source for r in rows}), "skipped": [list(s) for s in skipped],
                   "unscored": f.unscored},
        "parameters": {k: float(f"{v:.4g}") for k, v in f.parameters.items()},
        "coverage": coverage(rows),
        "ranges": ranges(rows, loso),
        "median_abs_error_pct": {"in_sample": round(float(np.median([abs_pct(x) for x in f.residuals.values()])), 2),
                                 "leave_one_source_out": round(float(np.median([abs_pct(x) for x in loso.values()])), 2)},
    }


def build(path: Path | None = None, max_nfev: int = 60, jobs: int = 1) -> dict[str, Any]:
    """Fit on the whole corpus, score it leave-one-source-out, and return the engines_fit.yaml document."""
    path = Path(path or corpus_path())
    rows, skipped = load(path)
    return document(rows, skipped, fit(rows, max_nfev=max_nfev),
                    leave_one_source_out(rows, max_nfev=max_nfev, jobs=jobs), path)


def write(doc: dict[str, Any], out: Path | None = None) -> Path:
    out = out or Path(__file__).resolve().parents[1] / "data" / "engines_fit.yaml"
    head = ("# Generated by `python -m phasebench.model.fit --write` from data/corpus.csv: do not edit by hand.\n"
            "# The efficiency profiles' fitted parameters (keys: param|device-class, param@engine), the corpus\n"
            "# rows per engine|class, and the leave-one-source-out residual ranges per phase group\n"
            "# [low, high, residuals] as measured/predicted time. docs/model.md explains them.\n")
    out.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=120))
    engines.fitted.cache_clear()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write src/phasebench/data/engines_fit.yaml")
    ap.add_argument("--max-nfev", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the held-out fits")
    a = ap.parse_args(argv)
    doc = build(a.corpus, a.max_nfev, a.jobs)
    if a.write:
        print(f"wrote {write(doc)}")
    print(yaml.safe_dump({k: doc[k] for k in ("corpus", "parameters", "median_abs_error_pct")}, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
