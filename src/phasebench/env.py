"""The environment block of a run's manifest: where the client ran (host, CPU, memory, OS, Python)."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    from . import __version__

    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "phasebench": __version__,
        "uvloop": _has_uvloop(),
    }


def _memory_bytes() -> int:
    """Physical memory: the kernel's page count (what psutil's total reads), psutil where sysconf has none.
    Not psutil first: importing it is a fair share of a simulated run's start-up."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        import psutil

        return psutil.virtual_memory().total


def _has_uvloop() -> bool:
    """Whether uvloop is installed (found, not imported: importing it brings in asyncio)."""
    from importlib.util import find_spec

    return find_spec("uvloop") is not None
