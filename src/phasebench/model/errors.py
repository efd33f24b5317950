from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModelError(ValueError):
    """A user mistake in the analytic model's inputs (unknown name, missing field, impossible setting)."""


def unknown(what: str, name: str, known: Iterable[str]) -> ModelError:
    known = sorted(known)
    close = difflib.get_close_matches(name.lower(), known, n=4, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ModelError(f"unknown {what} {name!r}{hint} (known: {', '.join(known)})")
