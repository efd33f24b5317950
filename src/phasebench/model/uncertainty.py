"""Ranges beside every prediction, from the corpus residuals of its engine and device class.

The fit (``model/fit.py``) scores every corpus row leave-one-source-out (fitted without the row's source) and
keeps, per ``engine|device class`` and phase group, the 10th and 90th percentiles of measured ÷ predicted time
(for a throughput, predicted ÷ measured, so both read as "how much longer it really took"). A prediction's range
is its point value scaled by those two factors. A class with fewer than 4 such residuals in a group uses the
pooled residuals of every class, widened 1.5×; a pair the corpus has no rows for at all gets the pooled range
widened 2× — or, where wider, the spread of the held-out rows that were outside their source's coverage (their
engine and class in no other source: ``fit.held_out_coverage``), which is what such predictions have been seen to
miss by — and a note saying it is outside what the corpus covers. Nothing installed: no range, and a note.
"""

from __future__ import annotations

import math
from typing import Any

from .engines import covered, device_class, fitted
from .hardware import Hardware

MIN_RESIDUALS = 4
MIN_OUTSIDE = 10     # held-out rows outside their source's coverage, per group, before their spread is used


def factors(hw: Hardware, engine: str, group: str) -> tuple[float, float, str] | None:
    """(low, high) factors on a time for ``group`` (prefill, decode, e2e, throughput), and where they come from."""
    ranges = fitted().get("ranges")
    if not ranges:
        return None
    key = f"{engine}|{device_class(hw)}"
    mine = ranges.get(key, {}).get(group)
    pooled = ranges.get("*", {}).get(group)
    if mine and mine[2] >= MIN_RESIDUALS:
        return mine[0], mine[1], f"{key}: {mine[2]} residuals"
    if pooled is None:
        return None
    ok, _ = covered(hw, engine)
    widen = 1.5 if ok else 2.0
    lo, hi = math.exp(math.log(pooled[0]) * widen), math.exp(math.log(pooled[1]) * widen)
    where = f"all classes ({pooled[2]} residuals), widened {widen}×"
    outside = ranges.get("*outside", {}).get(group)
    if not ok and outside and outside[2] >= MIN_OUTSIDE:
        lo, hi = min(lo, outside[0]), max(hi, outside[1])
        where += f", or as far as held-out rows outside their source's coverage missed ({outside[2]} residuals)"
    return lo, hi, where


def attach_range(p: Any, hw: Hardware | None = None) -> None:
    """Fill ``p.range`` (ttft_ms, tpot_ms, e2e_s, output_throughput: [low, high]) and add coverage notes."""
    if not p.timed:
        return
    if hw is None:
        from .hardware import load_hardware

        try:
            hw = load_hardware(p.hardware)
        except Exception:  # noqa: BLE001 - a record passed as a path: no class lookup
            return
    engine = p.engine or p.efficiency.engine
    if not engine:
        return
    ok, note = covered(hw, engine)
    if note and note not in p.notes:
        p.notes.append(note)
    out: dict[str, Any] = {}
    src = []
    for metric, value, group, kind in (("ttft_ms", p.ttft_s * 1e3, "prefill", "time"),
                                       ("tpot_ms", p.tpot_s * 1e3, "decode", "time"),
                                       ("e2e_s", p.e2e_s, "e2e", "time"),
                                       ("output_throughput", p.output_throughput, "throughput", "rate")):
        f = factors(hw, engine, group)
        if f is None or value is None:
            continue
        lo, hi, where = f
        out[metric] = [value * lo, value * hi] if kind == "time" else [value / hi, value / lo]
        src.append(f"{group}: {where}")
    if out:
        out["basis"] = "10th-90th percentile of leave-one-source-out corpus residuals; " + "; ".join(src)
        out["covered"] = ok
    p.range = out
