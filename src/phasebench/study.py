"""The phase-aware cross-platform study (``phasebench study``): which platform wins prefill, which wins decode,
where batching changes the answer, and when splitting prefill and decode across platforms pays.

Everything here is *predicted* by the analytic phase model (:func:`phasebench.model.phases.predict`) and the
serving simulator, except the ``local`` platform's measured points, read from a plan run (the results
database's latest, or ``--runs``). The computation returns typed dataclasses; ``report/study.py`` renders them.

- **Prefill**: TTFT against input length per platform (batch 1, no queueing).
- **Decode**: TPOT and decode throughput (batch ÷ TPOT) against batch per platform, for every batch that fits.
  The **crossover batch** of a platform is the smallest batch at which its decode throughput reaches the best
  decode throughput of the reference platform (GroqRack when it is in the study: it does not batch, so its
  throughput is its batch-1 speed at every batch; otherwise the platform with the lowest batch-1 TPOT).
- **Winners**: per phase metric (prefill tokens/s at the reference input, batch-1 decode tokens/s, peak decode
  tokens/s within the TPOT SLO), raw and normalised per chip, per watt (TDP) and per dollar (price per hour);
  a platform without a price has no per-dollar figure and the table says so.
- **Disaggregation**: for every ordered (prefill, decode) pair of distinct platforms, the gain table of
  :mod:`phasebench.sim.gain` (goodput and cost at the SLO under Poisson load, over bandwidth × input length
  and over request rate, with the break-even line).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .model.errors import ModelError
from .model.phases import Prediction, Setup, predict, setup_for
from .spec import SLO

DEFAULT_PLATFORMS = ("a100-80gb-sxm", "h100-sxm", "mi300x", "gaudi2", "groq-rack", "inferentia2", "local")
INPUT_LENS = (128, 256, 512, 1024, 2048, 4096)
BATCHES = tuple(range(1, 257))
REFERENCE_DECODE = "groq-rack"


def setup(model: str, hardware: str, precision: str = "fp16", engine: str | None = None) -> tuple[Setup, list[str]]:
    """``setup_for`` with ``engine`` passed only where it is accepted (older phase models have no engine)."""
    kw: dict[str, Any] = {"precision": precision}
    if engine is not None:
        if "engine" not in inspect.signature(setup_for).parameters:
            raise ModelError("this phase model has no engine profiles: drop --engine")
        kw["engine"] = engine
    return setup_for(model, hardware, **kw)


def prediction_range(pred: Prediction, metric: str) -> tuple[float | None, float | None]:
    """(low, high) of ``metric`` (e.g. ``ttft_ms``) where the phase model gives a range, else (None, None).
    Reads ``<metric>_low``/``<metric>_high`` or a ``range`` block of the prediction's dict."""
    d = pred.to_dict()
    lo, hi = d.get(f"{metric}_low"), d.get(f"{metric}_high")
    r = (d.get("range") or {}).get(metric) if isinstance(d.get("range"), dict) else None
    if lo is None and r is not None:
        if isinstance(r, dict):
            lo, hi = r.get("low"), r.get("high")
        elif isinstance(r, (list, tuple)) and len(r) == 2:
            lo, hi = r
    return (float(lo) if lo is not None else None, float(hi) if hi is not None else None)


@dataclass(frozen=True)
class Platform:
    key: str
    name: str
    kind: str
    chips: int                     # chips in one device (a GroqRack is one device of many chips)
    tdp_w: float | None
    price_per_hour: float | None
    price_source: str
    batching: bool
    efficiency: str                # where the efficiency factors come from
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Point:
    """One predicted (or measured) point of a curve."""
    platform: str
    x: int                         # input tokens (prefill) or batch (decode)
    value: float                   # TTFT ms, or TPOT ms
    low: float | None
    high: float | None
    throughput: float              # prefill: input tokens/s; decode: output tokens/s (batch ÷ TPOT)
    bound: str | None
    measured: bool = False


@dataclass(frozen=True)
class Winner:
    metric: str                    # e.g. "prefill tokens/s at 2048 input"
    normalisation: str             # raw | per chip | per watt | per $/h
    unit: str
    values: dict[str, float | None]
    winner: str | None
    missing: dict[str, str]        # platform -> why there is no value


@dataclass
class Study:
    model: str
    precision: str
    engine: str | None
    platforms: list[Platform]
    input_len: int                 # reference input for decode and the winner table
    output_len: int
    slo: dict[str, Any]
    prefill: list[Point]
    decode: list[Point]
    reference: str | None          # the platform whose decode throughput the crossover is measured against
    crossover: dict[str, int | None]
    winners: list[Winner]
    gains: list[Any]               # sim.gain.GainTable per ordered pair
    measured_from: str | None
    assumptions: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gains"] = [g.to_dict() for g in self.gains]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Study:
        """Back from ``to_dict``: what ``phasebench show`` reads from a study folder's ``study.json``."""
        from .sim.gain import GainTable

        return cls(**{**d, "platforms": [Platform(**{**p, "notes": tuple(p.get("notes") or ())}) for p in d["platforms"]],
                      "prefill": [Point(**p) for p in d["prefill"]], "decode": [Point(**p) for p in d["decode"]],
                      "winners": [Winner(**w) for w in d["winners"]],
                      "gains": [GainTable.from_dict(g) for g in d.get("gains") or []]})


STUDY_FILE = "study.json"


def load_study(folder: Path) -> Study:
    """A ``phasebench study --out`` folder's study; a ``ValueError`` naming the file when it is not one."""
    import json

    f = Path(folder) / STUDY_FILE
    try:
        return Study.from_dict(json.loads(f.read_text(encoding="utf-8")))
    except OSError as e:
        raise ValueError(f"{f}: cannot be read ({e.strerror or e})") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{f}: not a phasebench study ({type(e).__name__}: {e})") from None


def _platform(s: Setup, notes: list[str]) -> Platform:
    hw = s.hardware
    eff = s.resolved().efficiency
    return Platform(hw.key, hw.name, hw.kind, max(hw.chips, 1) * s.devices, (hw.tdp_w or 0) * s.devices or None,
                    hw.price_per_hour * s.devices if hw.price_per_hour is not None else None, hw.price_source or "",
                    hw.batching, eff.source if eff else "default", tuple(notes))


def prefill_curve(s: Setup, inputs: tuple[int, ...] = INPUT_LENS) -> list[Point]:
    out = []
    for n in inputs:
        p = predict(s, 1, n, 2)
        if not p.fits or p.ttft_s is None:
            continue
        lo, hi = prediction_range(p, "ttft_ms")
        out.append(Point(s.hardware.key, n, p.ttft_s * 1e3, lo, hi, n / p.ttft_s, p.prefill.bound if p.prefill else None))
    return out


def decode_curve(s: Setup, input_len: int, output_len: int, batches: tuple[int, ...] = BATCHES) -> list[Point]:
    out = []
    for b in batches:
        p = predict(s, b, input_len, output_len)
        if not p.fits or p.tpot_s is None:
            break
        lo, hi = prediction_range(p, "tpot_ms")
        out.append(Point(s.hardware.key, b, p.tpot_s * 1e3, lo, hi, b / p.tpot_s,
                         p.decode_last.bound if p.decode_last else None))
    return out


def crossover(decode: dict[str, list[Point]], reference: str | None) -> dict[str, int | None]:
    """Smallest batch at which each platform's decode throughput reaches the reference's best."""
    if reference is None or not decode.get(reference):
        return {}
    best = max(p.throughput for p in decode[reference])
    out: dict[str, int | None] = {}
    for k, pts in decode.items():
        if k == reference:
            continue
        out[k] = next((p.x for p in pts if p.throughput >= best), None)
    return out


def winners(platforms: list[Platform], prefill: dict[str, list[Point]], decode: dict[str, list[Point]],
            input_len: int, tpot_slo_ms: float | None) -> list[Winner]:
    """Per phase metric, raw and per chip, per watt, per $/h; higher is better for every one."""
    metrics: list[tuple[str, dict[str, float | None]]] = []
    at = {k: next((p for p in pts if p.x == input_len), None) for k, pts in prefill.items()}
    metrics.append((f"prefill tokens/s at {input_len} input tokens", {k: p.throughput if p else None for k, p in at.items()}))
    metrics.append(("decode tokens/s at batch 1 (one user)",
                    {k: pts[0].throughput if pts else None for k, pts in decode.items()}))
    slo_txt = f" with TPOT ≤ {tpot_slo_ms:g} ms" if tpot_slo_ms else ""
    metrics.append((f"peak decode tokens/s over batch{slo_txt}",
                    {k: max((p.throughput for p in pts if tpot_slo_ms is None or p.value <= tpot_slo_ms), default=None)
                     for k, pts in decode.items()}))
    by = {p.key: p for p in platforms}
    out = []
    for name, vals in metrics:
        for norm, unit, div in (("raw", "tokens/s", lambda p: 1.0), ("per chip", "tokens/s per chip", lambda p: p.chips),
                                ("per watt", "tokens/s per W (TDP)", lambda p: p.tdp_w),
                                ("per dollar", "tokens per $ (at the hourly price)", lambda p: p.price_per_hour / 3600
                                 if p.price_per_hour else None)):
            v: dict[str, float | None] = {}
            missing: dict[str, str] = {}
            for k in by:
                raw = vals.get(k)
                d = div(by[k])
                if raw is None:
                    v[k] = None
                    missing[k] = "does not fit" if not decode.get(k) and not prefill.get(k) else "outside the SLO"
                elif not d:
                    v[k] = None
                    missing[k] = "no price in the catalog" if norm == "per dollar" else "no TDP in the catalog"
                else:
                    v[k] = raw / d
            have = {k: x for k, x in v.items() if x is not None}
            out.append(Winner(name, norm, unit, v, max(have, key=have.get) if have else None, missing))
    return out


def measured_points(runs_dir: Path | None) -> tuple[list[Point], list[Point], str | None, str | None]:
    """The local platform's measured prefill (single-stream TTFT by prompt length) and decode (closed-loop TPOT
    by concurrency) points: from ``runs_dir`` or the results database's latest plan. Returns (prefill, decode,
    where from, the measured model's name)."""
    from .results import NotARunError, Run

    run = None
    if runs_dir is not None:
        try:
            run = Run.load(runs_dir)
        except NotARunError as e:
            raise ModelError(str(e)) from None
    else:
        run = _latest_plan()
    if run is None:
        return [], [], None, None
    pre: list[Point] = []
    dec: list[Point] = []
    model = None
    for leaf in run.leaves():
        s = leaf.summary
        sp = leaf.manifest.get("spec") or {}
        mf = leaf.meta.model_file
        model = model or (mf.name if mf else None) or sp.get("model_spec")
        if s.get("completed", 0) == 0:
            continue
        n_in = leaf.result.phasebench.metrics.input_tokens.p50
        if leaf.ran_alone and s.get("median_ttft_ms") and n_in:
            pre.append(Point("local", int(n_in), s["median_ttft_ms"], None, None, n_in / (s["median_ttft_ms"] / 1e3),
                             None, measured=True))
        if leaf.closed_loop and s.get("median_tpot_ms") and sp.get("concurrency"):
            c = int(sp["concurrency"][0])
            dec.append(Point("local", c, s["median_tpot_ms"], None, None, c / (s["median_tpot_ms"] / 1e3), None,
                             measured=True))
    return sorted(pre, key=lambda p: p.x), sorted(dec, key=lambda p: p.x), str(run.path), model


def _latest_plan():
    import sqlite3

    from .results import NotARunError, Run
    from .store import Store, StoreError, default_path

    path = default_path()
    if path is None or not Path(path).exists():
        return None
    try:
        with Store(path) as st:
            rows = [r for r in st.history(limit=200) if r.get("kind") == "plan" and r.get("path")]
    except (sqlite3.Error, StoreError, OSError):  # a damaged or locked database must not stop a study
        return None
    for r in rows:  # newest first
        try:
            return Run.load(r["path"])
        except (NotARunError, OSError):
            continue
    return None


def run_study(model: str, platforms: list[str] | None = None, engine: str | None = None, precision: str = "fp16",
              input_len: int = 512, output_len: int = 128, slo: SLO | None = None, runs_dir: Path | None = None,
              pairs: list[tuple[str, str]] | None = None, requests: int = 60,
              gain_inputs: tuple[int, ...] = (128, 512, 2048), gain_gbps: tuple[float, ...] = (1.25, 12.5, 50.0, 450.0),
              rate_fractions: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5), load: float = 0.8) -> Study:
    """Compute the study. ``platforms`` default: :data:`DEFAULT_PLATFORMS` (``local`` only when its record
    exists). ``pairs``: the (prefill, decode) pairs to simulate (default: every ordered pair of distinct
    platforms other than ``local``). ``requests``: per simulation (bounds the time)."""
    from .model.hardware import load_hardware
    from .sim.gain import GainStudy
    from .sim.run import analytic_profile, scheduler_for

    slo = slo or SLO(ttft_ms=1000, tpot_ms=50)
    asked = list(platforms) if platforms else list(DEFAULT_PLATFORMS)
    if not asked:
        raise ModelError("give at least one platform")
    notes: list[str] = []
    setups: dict[str, Setup] = {}
    plats: list[Platform] = []
    for key in asked:
        if key == "local":
            try:
                load_hardware("local")
            except ModelError:
                if platforms:
                    raise
                notes.append("no 'local' hardware record (run `phasebench probe`): the local platform is left out")
                continue
        s, snotes = setup(model, key, precision, engine)
        setups[s.hardware.key] = s
        plats.append(_platform(s, snotes))
    prefill: dict[str, list[Point]] = {}
    decode: dict[str, list[Point]] = {}
    for k, s in setups.items():
        prefill[k] = prefill_curve(s, tuple(sorted(set(INPUT_LENS) | {input_len})))
        decode[k] = decode_curve(s, input_len, output_len)
        if not decode[k]:
            notes.append(f"{model} does not fit on {k} at {precision}")
    measured_from = None
    if "local" in setups or runs_dir is not None:
        mp, md, measured_from, mmodel = measured_points(runs_dir)
        if mp or md:
            prefill["local (measured)"] = mp
            decode["local (measured)"] = md
            if mmodel and mmodel != model:
                notes.append(f"the local measured points are of {mmodel} (the plan's model), not {model}; the local "
                             "predicted curve is for the study's model")
    ref = REFERENCE_DECODE if decode.get(REFERENCE_DECODE) else min(
        (k for k in setups if decode.get(k)), key=lambda k: decode[k][0].value, default=None)
    cross = crossover({k: v for k, v in decode.items() if k in setups}, ref)
    wins = winners(plats, {k: v for k, v in prefill.items() if k in setups},
                   {k: v for k, v in decode.items() if k in setups}, input_len, slo.tpot_ms)
    gs = GainStudy(lambda s: analytic_profile(s, engine), scheduler_for, slo, output_tokens=output_len,
                   requests=requests)
    keys = [k for k in setups if k != "local" and decode.get(k)]
    todo = pairs if pairs is not None else [(a, b) for a in keys for b in keys if a != b]
    gains = []
    for a, b in todo:
        if a not in setups or b not in setups:
            raise ModelError(f"pair {a}:{b}: both platforms must be in the study")
        try:
            gains.append(gs.table(setups[a], setups[b], list(gain_inputs), list(gain_gbps), load=load,
                                  rate_fractions=rate_fractions))
        except ModelError as e:
            notes.append(f"{a} → {b}: {e}")
    assumptions = [
        f"model {model}, weights {precision}, engine {engine or 'the default efficiency profile'}; one device per "
        "platform (a GroqRack is one device of its chips)",
        "prefill: batch 1, no queueing; decode: input "
        f"{input_len} tokens, {output_len} output tokens, TPOT is the mean over the output",
        f"SLO: {', '.join(f'{k}={v:g}' for k, v in slo.model_dump().items() if isinstance(v, (int, float)) and v is not None and k != 'percentile')}",
        f"disaggregation: 1 prefill + 1 decode replica against the better colocated deployment of 2 replicas of either "
        f"platform; Poisson arrivals, {requests} requests per simulation (seed 0), link latency 10 µs; the "
        f"bandwidth × input grid at {load:g} × the deployment's analytic capacity",
        "cost: catalog price per device-hour, blended $/1M tokens of the requests that met the SLO; per watt: TDP",
        "every figure is predicted by phasebench's analytic phase model and simulator, not measured, except points "
        "marked measured",
    ]
    return Study(model, precision, engine, plats, input_len, output_len, slo.model_dump(),
                 [p for v in prefill.values() for p in v], [p for v in decode.values() for p in v], ref, cross, wins,
                 gains, measured_from, assumptions, notes + [f"{gs.simulations} replica simulations"])



