"""The calibrations a user stored (``$PHASEBENCH_HOME/calibration.json``) and the efficiency lookup for a pair.

``efficiency_for(hardware, engine)``: the user's calibration for (hardware, engine) if one is stored, else the
engine's profile on that device (``model/engines.py``: fitted on the corpus, else the prior). Kept apart from
``calibrate.py`` (which fits) so that ``phases`` and ``utilization`` can use it without importing the fitter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..paths import home
from .engines import Efficiency, canonical_engine, profile
from .errors import ModelError
from .hardware import Hardware


def path() -> Path:
    return home() / "calibration.json"


def load_all() -> dict[str, Any]:
    p = path()
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{p} is damaged ({e}); delete it and calibrate again") from None


def store(key: str, record: dict[str, Any]) -> None:
    data = load_all()
    data[key] = record
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(p)


def _engine_or_none(engine: str | None) -> str | None:
    if not engine:
        return None
    try:
        return canonical_engine(engine)
    except ModelError:
        return None  # an engine the profiles do not know (a run's owned_by): calibrations may still name it


def efficiency_for(hw: Hardware, engine: str | None) -> tuple[Efficiency, str | None]:
    """The calibrated factors for (hardware, engine) if stored, else the engine's profile on ``hw``.

    With no engine named, a calibration is used when it is the only one stored for that hardware; otherwise the
    device's default engine's profile. Returns a note when a calibration is used."""
    data = load_all()
    canon = _engine_or_none(engine)
    rec = None
    if engine:
        rec = data.get(f"{hw.key}|{engine}") or (data.get(f"{hw.key}|{canon}") if canon else None)
        if rec is None:
            rec = next((v for k, v in data.items() if k.split("|")[0] == hw.key
                        and _engine_or_none(k.split("|", 1)[1]) == canon and canon), None)
    else:
        mine = [v for k, v in data.items() if k.split("|")[0] == hw.key]
        rec = mine[0] if len(mine) == 1 else None
    if rec is None:
        if engine and canon is None:
            canonical_engine(engine)  # raises: unknown engine, with the close names
        return profile(hw, canon), None
    e = rec["efficiency"]
    known = set(Efficiency.__dataclass_fields__)
    eff = Efficiency(**{k: v for k, v in e.items() if k in known})
    if not eff.engine:
        # the calibration's own model has no per-request or per-step cost (calibrate fits them into the
        # per-layer overhead), so none is added here
        from dataclasses import replace

        eff = replace(eff, engine=_engine_or_none(rec.get("engine")) or str(rec.get("engine")))
    err = rec.get("median_abs_error", rec["mean_abs_error"])
    return eff, (f"using calibrated factors for {hw.key} with {rec['engine']} ({rec['date']}, "
                 f"{rec['points']} points, fit error {err:.0%})")
