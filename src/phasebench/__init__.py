"""phasebench: how fast an LLM really runs, phase by phase (prefill/TTFT, decode/TPOT), and why.

Public API::

    import phasebench
    spec = phasebench.RunSpec(url="http://127.0.0.1:8000/v1", scenario="server", rate=[4], requests=200)
    run = phasebench.run(spec)          # -> phasebench.Run (manifest, summary, records)
    run = phasebench.Run.load("runs/x")
    p = phasebench.predict("llama-2-7b", "h100-sxm", batch=8, input_len=512, output_len=128)
    p.ttft_s, p.tpot_s, p.fits, p.to_dict()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .results import Run
    from .spec import SLO, LengthDist, RunSpec, Scenario


def run(spec: RunSpec, progress=None) -> Run:
    """Run a spec (or a sweep) against ``spec.url`` and return the ``Run``; see ``phasebench.runner``."""
    from .runner import run as _run

    return _run(spec, progress)


_ERRORS = ("Interrupted", "RunError", "RunStopped", "ServerGone", "TargetUnreachable")
_TYPES = {"Run": "results", "RunSpec": "spec", "SLO": "spec", "LengthDist": "spec", "Scenario": "spec"}


def __getattr__(name: str):  # noqa: ANN202 - imported on first use: `import phasebench.x` stays light
    import importlib

    if name in _ERRORS:
        return getattr(importlib.import_module(".runner", __name__), name)
    if name in _TYPES:
        return getattr(importlib.import_module("." + _TYPES[name], __name__), name)
    raise AttributeError(f"module 'phasebench' has no attribute {name!r}")


async def arun(spec: RunSpec, progress=None) -> Run:
    """``run`` for async code: runs in the caller's event loop."""
    from .runner import arun as _arun

    return await _arun(spec, progress)


def predict(model: str, hardware: str, devices: int = 1, precision: str = "fp16", batch: int = 1,
            input_len: int = 128, output_len: int = 128, engine: str | None = None):  # noqa: ANN201
    """The roofline phase model (docs/model.md): a ``phasebench.model.phases.Prediction``.

    Uses the calibration stored for (hardware, engine) when there is one, else the device kind's defaults."""
    from .model.phases import predict as _predict
    from .model.phases import setup_for

    setup, notes = setup_for(model, hardware, devices=devices, precision=precision, engine=engine)
    p = _predict(setup, batch, input_len, output_len)
    p.notes[:0] = notes
    return p


__all__ = ["run", "arun", "predict", "RunError", "RunStopped", "Interrupted", "ServerGone", "TargetUnreachable", "Run", "RunSpec", "SLO", "LengthDist", "Scenario", "__version__"]
