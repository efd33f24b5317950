"""YAML through libyaml when PyYAML has it: the same safe loader (``SafeConstructor``, the same resolver, so the
same values), a C parser. The catalogs (models, hardware, engines) parse in ~15 ms instead of ~60 ms, which
was a tenth of a whole ``simulate`` process; :func:`load_data` keeps each packaged catalog's parsed value in a
cache (~0.4 ms to read back), so a process pays the parse once per catalog version, not every time."""

from __future__ import annotations

import marshal
import os
from functools import cache
from importlib import resources
from typing import Any


@cache
def _loader() -> Any:
    # imported here, not at import: a process whose catalogs come from the cache never loads PyYAML (~15 ms)
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml where available."""
    import yaml

    return yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def load_data(name: str) -> Any:
    """``data/<name>`` (a YAML file shipped in the package) parsed; None if it is not there.

    The value is cached in ``$PHASEBENCH_HOME/cache/`` (marshal: plain dicts, lists, strings and numbers, what
    the safe loader gives; a catalog with another type is simply not cached), keyed by the file's name, size and
    modification time and phasebench's version: an edited or upgraded catalog is parsed again. Reading or
    writing the cache never fails a load: any error and the file is parsed as if there were no cache."""
    from . import __version__
    from .paths import home

    f = resources.files("phasebench").joinpath("data", name)
    if not f.is_file():
        return None
    cached = None
    try:
        st = os.stat(str(f))
        stem = name.replace("/", "_")
        cached = home() / "cache" / f"{stem}.{st.st_size}.{st.st_mtime_ns}.{__version__}.marshal"
        return marshal.loads(cached.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        pass
    value = safe_load(f.read_text(encoding="utf-8"))
    if cached is not None:
        try:
            blob = marshal.dumps(value)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, cached)   # whole or not at all: a reader never sees half a file
            for old in cached.parent.glob(f"{stem}.*.marshal"):   # earlier versions of this catalog
                if old != cached:
                    old.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
    return value
