from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class ModelError(ValueError):
    """A user mistake in the analytic model's inputs (unknown name, missing field, impossible setting)."""


def close_names(name: str, known: Iterable[str], aliases: Mapping[str, str] | None = None) -> list[str]:
    """The known names ``name`` may have meant: the keys it is the start of first (``a100`` → the three A100
    records), then close spellings of keys and aliases (``alias -> key``), each given as its key (``tpu-v6e
    (trillium)`` where the match was an alias)."""
    known = sorted(known)
    aliases = dict(aliases or {})
    n = name.lower().strip()
    prefixed = [k for k in known if n and k.startswith(n) and k != n]
    close = prefixed + [c for c in difflib.get_close_matches(n, [*known, *aliases], n=6, cutoff=0.4)
                        if c not in prefixed]
    picks: list[str] = []
    seen: set[str] = set()
    for c in close:
        key = aliases.get(c, c) if c not in known else c
        if key in seen:
            continue
        seen.add(key)
        picks.append(key if key == c else f"{key} ({c})")
    return picks[:max(4, len(prefixed))]


def did_you_mean(name: str, known: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """``"; did you mean a, b?"`` from :func:`close_names`, or "" when nothing is close."""
    picks = close_names(name, known, aliases)
    return f"; did you mean {', '.join(picks)}?" if picks else ""


def unknown(what: str, name: str, known: Iterable[str], aliases: Mapping[str, str] | None = None) -> ModelError:
    """'unknown X', with :func:`did_you_mean`'s hint."""
    known = sorted(known)
    return ModelError(f"unknown {what} {name!r}{did_you_mean(name, known, aliases)} (known: {', '.join(known)})")
