"""The one rule for keeping a fit: refused above an error threshold unless forced.

A fit's error is the **median |relative error| over its own points** (the points it was fitted to): half the
points it must reproduce are off by more than that. ``phasebench calibrate`` and ``phasebench profile fit``
refuse to store a fit whose error exceeds ``MAX_FIT_ERROR`` (one-line message, exit 2); ``--force`` stores it
marked as forced, with its error, and ``predict``, ``simulate`` and a run's roofline block say so whenever they
use it. docs/model.md and docs/simulation.md give the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ModelError

MAX_FIT_ERROR = 0.25


class FitRefused(ModelError):
    """A fit too far from its own points to store (without ``--force``)."""


def median_abs(errors: Iterable[float]) -> float:
    """The fit's error: the median |relative error| over its points (0 with no points)."""
    import numpy as np

    e = np.abs(np.fromiter(errors, dtype=np.float64))
    return float(np.median(e)) if e.size else 0.0


def forced_note(what: str, error: float, points: int) -> str:
    """What every user of a forced fit prints beside its figures."""
    return (f"{what} was stored with --force: its median |relative error| on its {points} points is {error:.0%}, "
            f"above the {MAX_FIT_ERROR:.0%} limit, so figures from it may be off by as much")


def check(what: str, error: float, points: int, detail: str, force: bool) -> str | None:
    """None when the fit is within the limit; the forced note when it is not and ``force``; else FitRefused."""
    if error <= MAX_FIT_ERROR:
        return None
    if force:
        return forced_note(what, error, points)
    raise FitRefused(f"{what} not stored: its median |relative error| on its own {points} points is {error:.0%}, "
                     f"above the {MAX_FIT_ERROR:.0%} limit ({detail}); measure more or cleaner points, or pass "
                     "--force to store it marked as forced")
