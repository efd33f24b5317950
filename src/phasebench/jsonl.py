"""Reading JSON Lines input that a user gives (datasets, traces, quality sets): one object per line."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson


def object_lines(lines: Iterable[str | bytes], where: Callable[[int], str],
                 error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line as ``(line number, object)``; a line that is not JSON, or not a JSON object, raises
    ``error`` that starts with ``where(line number)`` (the first bad line stops the read: nothing is half-loaded)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise error(f"{where(n)}: not valid JSON") from None
        if not isinstance(obj, dict):
            raise error(f"{where(n)}: each line must be a JSON object (got {type(obj).__name__})")
        yield n, obj
