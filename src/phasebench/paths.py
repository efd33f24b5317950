"""Where phasebench keeps its own state: ``$PHASEBENCH_HOME`` or ``~/.phasebench``.

Holds the results database (``results.db``), the ``local`` hardware record written by ``probe``
(``hardware/local.yaml``) and calibrations (``calibration.json``). Build caches live elsewhere
(``engine.locate.cache_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("PHASEBENCH_HOME") or Path.home() / ".phasebench")
