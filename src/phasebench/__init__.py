"""phasebench: how fast an LLM really runs, phase by phase (prefill/TTFT, decode/TPOT), and why.

Public API::

    import phasebench
    spec = phasebench.RunSpec(url="http://127.0.0.1:8000/v1", scenario="server", rate=[4], requests=200)
    run = phasebench.run(spec)          # -> phasebench.Run (manifest, summary, records)
    run = phasebench.Run.load("runs/x")
"""

__version__ = "0.1.0"

from .results import Run
from .spec import SLO, LengthDist, RunSpec, Scenario


def run(spec: RunSpec, progress=None) -> Run:
    """Run a spec (or a sweep) against ``spec.url`` and return the ``Run``; see ``phasebench.runner``."""
    from .runner import run as _run

    return _run(spec, progress)


__all__ = ["run", "Run", "RunSpec", "SLO", "LengthDist", "Scenario", "__version__"]
