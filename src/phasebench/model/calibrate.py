"""Fit the phase model's efficiency and overhead factors for a (hardware, engine) pair from measured runs.

Every measured run that names its model gives points: decode (mean batch, mean context, median TPOT) and
prefill (mean prompt length, median TTFT from send). The model for each point is

    time = max(memory_bytes / (bandwidth · η_mem), flops / (peak · η_flop)) + layers · overhead

and the fit minimises the squared relative error over all points: a grid over (η_mem, η_flop) with the best
overhead solved in closed form at each node, then a finer grid around the best node. The result is stored in
``$PHASEBENCH_HOME/calibration.json`` under ``<hardware>|<engine>``; ``predict`` uses it for that pair.
A fit whose median |relative error| on its own points exceeds ``fitcheck.MAX_FIT_ERROR`` is not stored unless
forced; a forced one carries its error in the efficiency's ``warning``, which every user of it prints.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..results import Run
from . import calibration, fitcheck
from .calibration import efficiency_for, load_all, path
from .engines import DEFAULT_EFFICIENCY, Efficiency
from .errors import ModelError
from .hardware import Hardware
from .phases import resolve_precision
from .utilization import engine_name, phase_work, resolve

__all__ = ["Calibration", "Point", "calibrate", "efficiency_for", "fit", "load_all", "path", "points_from", "store"]


@dataclass
class Point:
    phase: str            # prefill | decode
    run: str
    memory_s: float       # at η = 1
    compute_s: float      # at η = 1
    measured_s: float
    layers: int


@dataclass
class Calibration:
    hardware: str
    engine: str
    efficiency: Efficiency
    points: list[Point] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)   # relative error per point after the fit
    forced: bool = False                                 # stored with --force above fitcheck.MAX_FIT_ERROR

    @property
    def key(self) -> str:
        return f"{self.hardware}|{self.engine}"

    @property
    def mean_abs_error(self) -> float:
        return float(np.mean(np.abs(self.errors))) if self.errors else 0.0

    @property
    def fit_error(self) -> float:
        """The error the store rule judges: the median |relative error| over the fit's own points."""
        return fitcheck.median_abs(self.errors)

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.errors))) if self.errors else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware, "engine": self.engine, "efficiency": self.efficiency.to_dict(),
                "points": len(self.points), "mean_abs_error": self.mean_abs_error,
                "median_abs_error": self.fit_error, "max_abs_error": self.max_abs_error,
                "max_fit_error": fitcheck.MAX_FIT_ERROR, "forced": self.forced,
                "date": dt.date.today().isoformat(),
                "runs": sorted({p.run for p in self.points})}

    def judge(self, force: bool) -> None:
        """Apply the store rule (``fitcheck.check``): FitRefused above the limit unless ``force``, which marks
        the calibration and its efficiency as forced."""
        what = f"the calibration for {self.hardware} with {self.engine}"
        worst = sorted(zip(self.errors, self.points), key=lambda x: -abs(x[0]))[:3]
        detail = "worst: " + ", ".join(f"{p.phase} {p.run} {e:+.0%}" for e, p in worst)
        note = fitcheck.check(what, self.fit_error, len(self.points), detail, force)
        if note:
            self.forced = True
            self.efficiency = replace(self.efficiency, warning=note)


def points_from(run: Run) -> tuple[list[Point], Hardware, str]:
    pts: list[Point] = []
    hw: Hardware | None = None
    engine = ""
    for leaf in run.leaves():
        got = resolve(leaf.manifest)
        if got is None:
            continue
        model, hw, weights = got
        engine = engine_name(leaf.manifest) or "unknown"
        pr, _ = resolve_precision(hw, weights)
        peak = hw.peak_flops(pr.activations)
        work = phase_work(model, pr, leaf.summary)
        name = str(leaf.path.name if leaf.path else "run")
        if "prefill_flops" in work and leaf.ran_alone:  # a prefill that shared the engine is not a clean point
            pts.append(Point("prefill", name, work["prefill_bytes"] / hw.bandwidth, work["prefill_flops"] / peak,
                             work["ttft_sent_ms"] / 1e3, model.layers))
        if "decode_bytes_per_step" in work:
            pts.append(Point("decode", name, work["decode_bytes_per_step"] / hw.bandwidth,
                             work["decode_flops_per_step"] / peak, work["tpot_ms"] / 1e3, model.layers))
    if hw is None:
        raise ModelError(f"{run.path}: no run here names its model (use --model-spec, or the embedded engine)")
    return pts, hw, engine


def _fit_grid(mem: np.ndarray, comp: np.ndarray, meas: np.ndarray, layers: np.ndarray,
              em: np.ndarray, ef: np.ndarray) -> tuple[float, float, float, float]:
    best = (np.inf, 1.0, 1.0, 0.0)
    for a in em:
        for b in ef:
            base = np.maximum(mem / a, comp / b)
            # weighted least squares in relative error for overhead o ≥ 0: minimise Σ ((base + L·o − t)/t)²
            wts = 1.0 / meas**2
            o = float(np.sum(wts * layers * (meas - base)) / np.sum(wts * layers**2))
            o = max(o, 0.0)
            err = float(np.sum(((base + layers * o - meas) / meas) ** 2))
            if err < best[0]:
                best = (err, float(a), float(b), o)
    return best


def fit(points: list[Point], hw: Hardware, engine: str) -> Calibration:
    if len(points) < 2:
        raise ModelError(f"calibration needs at least 2 measured points (prefill or decode), got {len(points)}")
    mem = np.array([p.memory_s for p in points])
    comp = np.array([p.compute_s for p in points])
    meas = np.array([p.measured_s for p in points])
    layers = np.array([p.layers for p in points], dtype=float)
    _, a, b, o = _fit_grid(mem, comp, meas, layers, np.geomspace(0.01, 1.0, 40), np.geomspace(0.01, 1.0, 40))
    _, a, b, o = _fit_grid(mem, comp, meas, layers, np.clip(np.geomspace(a / 1.15, a * 1.15, 25), 1e-3, 1.0),
                           np.clip(np.geomspace(b / 1.15, b * 1.15, 25), 1e-3, 1.0))
    default = DEFAULT_EFFICIENCY[hw.kind]
    eff = Efficiency(round(a, 4), round(b, 4), round(o * 1e6, 3), default.allreduce_us,
                     f"calibration {hw.key}|{engine}", engine=engine)
    errors = list((np.maximum(mem / a, comp / b) + layers * o - meas) / meas)
    return Calibration(hw.key, engine, eff, points, errors)


def calibrate(runs: list[Run], save: bool = True, force: bool = False) -> Calibration:
    """Fit one (hardware, engine) pair from ``runs``; with ``save``, store it if it passes the store rule
    (``Calibration.judge``: FitRefused above the error limit unless ``force``)."""
    pts: list[Point] = []
    hws: set[str] = set()
    engines: set[str] = set()
    hw = None
    for r in runs:
        p, hw, eng = points_from(r)
        pts += p
        hws.add(hw.key)
        engines.add(eng)
    if len(hws) > 1 or len(engines) > 1:
        raise ModelError(f"runs mix hardware {sorted(hws)} / engines {sorted(engines)}: calibrate one pair at a time")
    assert hw is not None
    cal = fit(pts, hw, engines.pop())
    if save:
        cal.judge(force)
        store(cal)
    return cal


def store(cal: Calibration) -> None:
    calibration.store(cal.key, cal.to_dict())
