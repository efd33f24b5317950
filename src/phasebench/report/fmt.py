"""How phasebench writes a number, everywhere it shows one: terminal tables, the HTML/Markdown report, the
study, comparisons, predictions and the CLI.

Every function takes ``None`` (or NaN) and returns ``MISSING``; infinities read ``∞``. The results are plain
text (no rich markup, no HTML): the caller escapes for its medium. Units follow docs/metrics.md: milliseconds
for latencies, fractions shown as percentages, decimal byte units (1 MB = 10⁶ bytes) like the GB/s of
bandwidth figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

MISSING = "-"


def _bad(v: Any) -> bool:
    return v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)


def missing(*values: Any) -> bool:
    """True when every value is absent: a row made only of these would be a row of ``-``."""
    return all(_bad(v) for v in values)


def num(v: Any, nd: int = 1) -> str:
    """A fixed number of decimals with thousands separators: ``1,234.5``; an ``int`` as a whole number."""
    if _bad(v):
        return MISSING
    if isinstance(v, int):
        return f"{v:,}"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:,.{nd}f}"


def sig(v: Any, digits: int = 3) -> str:
    """``digits`` significant digits for small values, whole numbers with separators from 10,000 up."""
    if _bad(v):
        return MISSING
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"


def auto(v: Any, nd: int = 2) -> str:
    """``nd`` decimals below 1,000, whole numbers above (``0.42``, ``12.30``, ``4,096``)."""
    if not _bad(v) and not math.isinf(v) and abs(v) >= 1000:
        return num(v, 0)
    return num(v, nd)


def ms(v: Any, nd: int = 1, unit: bool = False) -> str:
    """Milliseconds: ``12.3`` (``12.3 ms`` with ``unit``)."""
    s = num(v, nd)
    return f"{s} ms" if unit and s != MISSING else s


def seconds(s: Any) -> str:
    """A short duration given in seconds, in the unit that reads best: ``3.2 ms``, ``45 µs``, ``1.5 s``."""
    if _bad(s):
        return MISSING
    if abs(s) >= 1:
        return f"{s:.3g} s"
    return f"{s * 1e3:.3g} ms" if abs(s) >= 1e-3 else f"{s * 1e6:.3g} µs"


def _as(v: Any, spec: str, before: str = "") -> str:
    """``v`` through a format spec, or ``MISSING``."""
    return MISSING if _bad(v) else before + format(v, spec)


def pct(v: Any, nd: int = 1) -> str:
    """A fraction as a percentage: ``0.071`` → ``7.1%``."""
    return _as(v, f".{nd}%")


def change(v: Any, nd: int = 1) -> str:
    """A relative change with its sign: ``+3.2%``."""
    return _as(v, f"+.{nd}%")


def rate(v: Any, unit: str = "tok/s", nd: int = 1) -> str:
    """A throughput with its unit: ``1,234.5 tok/s``, ``2.50 req/s``."""
    s = num(v, nd)
    return f"{s} {unit}" if s != MISSING else s


def count(v: Any) -> str:
    """A whole count: ``12,345``."""
    return _as(v, ",.0f")


def usd(v: Any, nd: int = 3) -> str:
    """Dollars: ``$1.234``."""
    return _as(v, f",.{nd}f", "$")


def size(nbytes: Any) -> str:
    """Bytes in decimal units: ``512 B``, ``3.4 kB``, ``270 MB``, ``1.25 GB``."""
    if _bad(nbytes):
        return MISSING
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def ratio(a: Any, b: Any) -> str:
    """``a / b`` as two counts, each ``-`` when missing (``12 / 0``)."""
    return f"{count(a)} / {count(b)}"


def text(v: Any) -> str:
    """Any value as words, never a Python repr: mappings as ``key=value, …``, sequences joined by commas,
    numbers through ``auto``, booleans as yes/no, ``None`` as ``-``."""
    if v is None:
        return MISSING
    if isinstance(v, BaseModel):   # a typed block of a summary or manifest (results.py): as the mapping it was read from
        v = v.model_dump(exclude_unset=True)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return str(v) if isinstance(v, int) else auto(v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={text(x)}" for k, x in v.items() if x is not None) or MISSING
    if isinstance(v, (list, tuple, set, frozenset)):
        return ", ".join(text(x) for x in v) or MISSING
    return str(v)


def slo(d: Mapping[str, Any] | BaseModel | None) -> str:
    """An SLO block (``spec.SLO`` as a dict, or the typed ``results.SLOTarget``) in words: ``p99 ttft≤2000 ms,
    tpot≤100 ms``; ``-`` when empty."""
    if isinstance(d, BaseModel):
        d = d.model_dump(exclude_unset=True)
    if not d:
        return MISSING
    parts = [f"{k[:-3]}≤{d[k]:g} ms" for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms") if d.get(k)]
    if not parts:
        return MISSING
    return f"p{d.get('percentile') or 99:g} " + ", ".join(parts)
