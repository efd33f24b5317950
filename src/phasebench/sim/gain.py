"""The gain of disaggregated over colocated serving under load, from the simulator.

For a prefill platform P and a decode platform D, the disaggregated deployment is ``prefill_replicas`` replicas
of P that only prefill, a link, and ``decode_replicas`` replicas of D that only decode. Its baseline is the
better **colocated** deployment of the same number of replicas on either platform alone (P or D), serving
the same Poisson workload (the same arrival times: common random numbers, so cells differ only by what
changes). Per cell of the grid:

- **goodput** at the SLO: requests per second that met every SLO threshold (the run summary's goodput);
  the gain is disaggregated ÷ colocated goodput (> 1: disaggregation serves more within the SLO);
- **cost at the SLO**: the deployment's bill (every pool's price × devices) ÷ the tokens of the requests that
  met the SLO, blended $/1M tokens; the cost gain is the cheaper priced colocated deployment's ÷ the
  disaggregated one's (> 1: disaggregation is cheaper per good token). A platform without a price gives no
  cost figure (None).

Two sweeps: network bandwidth × input length at one load (``load`` × the deployment's analytic capacity at
that input length), and request rate at one input length and bandwidth. The **break-even line** is, per
input length, the bandwidth at which the goodput gain reaches 1 (log-linear between grid points), and on the
rate axis the rates at which the gain crosses 1.

The deployment's analytic capacity is min(prefill replicas / TTFT, decode replicas × the decode rate of
:func:`~phasebench.sim.disagg.pool_ratio` at the TPOT SLO), so the loads follow the platforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..metrics import RunContext
from ..model.errors import ModelError
from ..model.phases import Setup, predict
from ..spec import SLO
from .columns import summarize_columns
from .disagg import (
    Link,
    decode_pool,
    deployment_cost,
    kv_bytes,
    pool_ratio,
    prefill_pool,
    ready_times,
    serve_colocated,
)
from .profile import Profile
from .replica import NeverFits, SchedulerConfig


@dataclass(frozen=True)
class GainCell:
    input_tokens: int
    bandwidth_gbps: float
    rate: float                                 # offered requests/s
    colocated_platform: str                     # the better colocated baseline in this cell
    colocated_goodput: float
    disagg_goodput: float
    goodput_gain: float | None                  # disagg ÷ colocated; None when neither serves any within the SLO
    colocated_usd_per_1m_at_slo: float | None
    disagg_usd_per_1m_at_slo: float | None
    cost_gain: float | None                     # cheapest priced colocated ÷ disagg cost at the SLO (> 1: disagg cheaper)
    colocated_p99_ttft_ms: float | None
    disagg_p99_ttft_ms: float | None
    colocated_p99_tpot_ms: float | None
    disagg_p99_tpot_ms: float | None

    def wins(self) -> bool | None:
        return None if self.goodput_gain is None else self.goodput_gain >= 1.0


@dataclass
class GainTable:
    model: str
    prefill: str
    decode: str
    prefill_replicas: int
    decode_replicas: int
    slo: dict[str, Any]
    output_tokens: int
    requests: int
    load: float
    grid: list[GainCell]                                       # bandwidth × input length
    by_rate: list[GainCell]                                    # request rate, at ref_input and ref_gbps
    ref_input: int
    ref_gbps: float
    capacity_rps: dict[int, float]                             # analytic capacity per input length
    break_even_gbps: dict[int, float | None]                   # per input length; None: never breaks even
    break_even_note: dict[int, str]
    break_even_rates: list[float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite gain (the baseline serves none within the SLO) is the string "inf"."""
        d = asdict(self)
        for cells in (d["grid"], d["by_rate"]):
            for c in cells:
                for k in ("goodput_gain", "cost_gain"):
                    if c[k] is not None and math.isinf(c[k]):
                        c[k] = "inf"
        d["break_even_gbps"] = {str(k): v for k, v in self.break_even_gbps.items()}
        d["break_even_note"] = {str(k): v for k, v in self.break_even_note.items()}
        d["capacity_rps"] = {str(k): v for k, v in self.capacity_rps.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainTable:
        """Back from ``to_dict`` (a study's ``study.json``): "inf" gains are infinities again, keys ints."""
        def cell(c: dict[str, Any]) -> GainCell:
            return GainCell(**{k: math.inf if v == "inf" else v for k, v in c.items()})

        return cls(**{**d, "grid": [cell(c) for c in d["grid"]], "by_rate": [cell(c) for c in d["by_rate"]],
                      **{k: {int(n): v for n, v in d[k].items()} for k in ("break_even_gbps", "break_even_note",
                                                                            "capacity_rps")}})

    def rows(self) -> list[dict[str, Any]]:
        """CSV rows: one per cell, both sweeps (``sweep`` says which)."""
        out = []
        for name, cells in (("bandwidth_x_input", self.grid), ("rate", self.by_rate)):
            for c in cells:
                out.append({"prefill": self.prefill, "decode": self.decode, "sweep": name, **asdict(c)})
        return out


CSV_COLUMNS = ("prefill", "decode", "sweep", *GainCell.__dataclass_fields__)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return None if a == 0 else math.inf
    return a / b


def capacity(prefill: Setup, decode: Setup, input_tokens: int, output_tokens: int, prefill_replicas: int,
             decode_replicas: int, tpot_slo_ms: float | None) -> float:
    """Requests/s the disaggregated deployment can serve, analytically (see the module docstring)."""
    p = predict(prefill, 1, input_tokens, 1)
    if not p.fits or not p.ttft_s:
        raise ModelError(f"{prefill.model.name} does not fit on {prefill.hardware.key}")
    r = pool_ratio(prefill, decode, input_tokens, output_tokens, tpot_slo_ms)
    dec = r.get("decode_rps_per_replica")
    if dec is None:  # cannot meet the TPOT SLO at all: size the load by batch-1 decode instead
        d = predict(decode, 1, input_tokens, output_tokens)
        if not d.fits or not d.tpot_s:
            raise ModelError(f"{decode.model.name} does not fit on {decode.hardware.key}")
        dec = 1.0 / (max(output_tokens - 1, 1) * d.tpot_s)
    return min(prefill_replicas / p.ttft_s, decode_replicas * dec)


def break_even(bws: list[float], gains: list[float | None]) -> tuple[float | None, str]:
    """The bandwidth at which the gain reaches 1, log-linear between the grid's bandwidths."""
    pts = [(b, g) for b, g in zip(bws, gains) if g is not None]
    if not pts:
        return None, "none serve within the SLO"
    if pts[0][1] >= 1.0:
        return pts[0][0], f"≤ {pts[0][0]:g} GB/s"
    for (b0, g0), (b1, g1) in zip(pts, pts[1:]):
        if g0 < 1.0 <= g1:
            if math.isinf(g1):
                return b1, f"{b0:g}–{b1:g} GB/s"
            x = (1.0 - g0) / (g1 - g0)
            be = math.exp(math.log(b0) + x * (math.log(b1) - math.log(b0)))
            return be, f"{be:.3g} GB/s"
    return None, f"none ≤ {pts[-1][0]:g} GB/s"


def crossings(rates: list[float], gains: list[float | None]) -> list[float]:
    """Rates at which the gain crosses 1 (linear between grid points)."""
    out = []
    pts = [(r, g) for r, g in zip(rates, gains) if g is not None and not math.isinf(g)]
    for (r0, g0), (r1, g1) in zip(pts, pts[1:]):
        if (g0 - 1.0) * (g1 - 1.0) < 0:
            out.append(r0 + (1.0 - g0) / (g1 - g0) * (r1 - r0))
    return out


class GainStudy:
    """Computes :class:`GainTable`s; caches colocated and prefill-pool simulations shared between pairs."""

    def __init__(self, profile_for: Callable[[Setup], Profile], cfg_for: Callable[[Setup], SchedulerConfig],
                 slo: SLO, output_tokens: int = 128, requests: int = 150, seed: int = 0,
                 prefill_replicas: int = 1, decode_replicas: int = 1, overlap: bool = False) -> None:
        self.profile_for, self.cfg_for, self.slo = profile_for, cfg_for, slo
        self.n_out, self.n, self.seed = output_tokens, requests, seed
        self.p_reps, self.d_reps, self.overlap = prefill_replicas, decode_replicas, overlap
        self._cache: dict[tuple, Any] = {}
        self._profiles: dict[str, Profile] = {}
        self._cfgs: dict[str, SchedulerConfig] = {}
        self.simulations = 0

    def _key(self, s: Setup) -> str:
        return f"{s.model.name}|{s.hardware.key}|{s.devices}|{s.precision}"

    def _prof(self, s: Setup) -> Profile:
        k = self._key(s)
        if k not in self._profiles:
            self._profiles[k] = self.profile_for(s)
        return self._profiles[k]

    def _cfg(self, s: Setup) -> SchedulerConfig:
        k = self._key(s)
        if k not in self._cfgs:
            self._cfgs[k] = self.cfg_for(s)
        return self._cfgs[k]

    def _workload(self, rate: float, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        arr = np.cumsum(rng.exponential(1.0 / rate, self.n))
        arr -= arr[0]
        return arr, np.full(self.n, n_in, dtype=np.int64), np.full(self.n, self.n_out, dtype=np.int64)

    def _ctx(self, rate: float) -> RunContext:
        return RunContext(scenario="server", slo=self.slo, target_rate=rate)

    def colocated(self, s: Setup, rate: float, n_in: int) -> dict[str, Any]:
        key = ("col", self._key(s), rate, n_in)
        if key not in self._cache:
            arr, ins, outs = self._workload(rate, n_in)
            reps = self.p_reps + self.d_reps
            cols, _ = serve_colocated(self._prof(s), self._cfg(s), arr, ins, outs, reps)
            self.simulations += reps
            summ = summarize_columns(cols, self._ctx(rate))
            self._cache[key] = self._digest(summ, deployment_cost(summ, [(s, reps)]))
        return self._cache[key]

    def _first(self, p: Setup, rate: float, n_in: int) -> np.ndarray:
        key = ("pre", self._key(p), rate, n_in)
        if key not in self._cache:
            arr, ins, _ = self._workload(rate, n_in)
            self._cache[key] = prefill_pool(self._prof(p), self._cfg(p), arr, ins, self.p_reps)[0]
            self.simulations += self.p_reps
        return self._cache[key]

    def disaggregated(self, p: Setup, d: Setup, link: Link, rate: float, n_in: int) -> dict[str, Any]:
        arr, ins, outs = self._workload(rate, n_in)
        first = self._first(p, rate, n_in)
        kv = np.full(self.n, kv_bytes(d, n_in))
        ready = ready_times(first, arr, kv, link, p.model.layers, self.overlap)
        cols, _, _ = decode_pool(self._prof(d), self._cfg(d), arr, ins, outs, ready, self.d_reps)
        self.simulations += self.d_reps
        summ = summarize_columns(cols, self._ctx(rate))
        return self._digest(summ, deployment_cost(summ, [(p, self.p_reps), (d, self.d_reps)]))

    @staticmethod
    def _digest(summ: dict[str, Any], cost: dict[str, Any] | None) -> dict[str, Any]:
        good = summ.get("request_goodput")
        if good is None:  # no SLO set: every completed request counts
            good = summ.get("request_throughput") or 0.0
        return {"goodput": good, "usd_at_slo": (cost or {}).get("usd_per_1m_tokens_at_slo"),
                "p99_ttft_ms": summ.get("p99_ttft_ms"), "p99_tpot_ms": summ.get("p99_tpot_ms")}

    def cell(self, p: Setup, d: Setup, link_gbps: float, latency_s: float, rate: float, n_in: int) -> GainCell:
        base = [(s.hardware.key, self.colocated(s, rate, n_in)) for s in _unique([p, d])]
        name, col = max(base, key=lambda kv: (kv[1]["goodput"], -(kv[1]["usd_at_slo"] or math.inf)))
        dis = self.disaggregated(p, d, Link(f"{link_gbps:g} GB/s", link_gbps * 1e9, latency_s), rate, n_in)
        cheapest = min((c["usd_at_slo"] for _, c in base if c["usd_at_slo"] is not None), default=None)
        gain = _ratio(dis["goodput"], col["goodput"])
        return GainCell(n_in, link_gbps, rate, name, col["goodput"], dis["goodput"],
                        None if gain is None else (gain if math.isfinite(gain) else math.inf),
                        cheapest, dis["usd_at_slo"], _ratio(cheapest, dis["usd_at_slo"]),
                        col["p99_ttft_ms"], dis["p99_ttft_ms"], col["p99_tpot_ms"], dis["p99_tpot_ms"])

    def table(self, p: Setup, d: Setup, input_lens: list[int], bandwidths_gbps: list[float],
              load: float = 0.8, rate_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25),
              ref_input: int | None = None, ref_gbps: float | None = None, latency_s: float = 10e-6) -> GainTable:
        """Both sweeps for one (prefill, decode) pair."""
        if not input_lens or not bandwidths_gbps:
            raise ModelError("the gain table needs at least one input length and one bandwidth")
        if any(b <= 0 for b in bandwidths_gbps):
            raise ModelError("bandwidths must be > 0")
        if load <= 0:
            raise ModelError("the load must be > 0")
        bws = sorted(bandwidths_gbps)
        ref_input = ref_input or input_lens[len(input_lens) // 2]
        ref_gbps = ref_gbps or bws[len(bws) // 2]
        notes: list[str] = []
        caps: dict[int, float] = {}
        grid: list[GainCell] = []
        be: dict[int, float | None] = {}
        be_note: dict[int, str] = {}
        for n_in in sorted(set(input_lens) | {ref_input}):
            try:
                caps[n_in] = capacity(p, d, n_in, self.n_out, self.p_reps, self.d_reps, self.slo.tpot_ms)
            except (ModelError, NeverFits) as e:
                notes.append(f"{n_in} input tokens: {e}")
                continue
            if n_in not in input_lens:
                continue
            try:
                cells = [self.cell(p, d, bw, latency_s, load * caps[n_in], n_in) for bw in bws]
            except NeverFits as e:
                notes.append(f"{n_in} input tokens: {e}")
                continue
            grid += cells
            be[n_in], be_note[n_in] = break_even(bws, [c.goodput_gain for c in cells])
        by_rate: list[GainCell] = []
        if ref_input in caps:
            try:
                by_rate = [self.cell(p, d, ref_gbps, latency_s, f * caps[ref_input], ref_input) for f in rate_fractions]
            except NeverFits as e:
                notes.append(str(e))
        return GainTable(p.model.name, p.hardware.key, d.hardware.key, self.p_reps, self.d_reps,
                         self.slo.model_dump(), self.n_out, self.n, load, grid, by_rate, ref_input, ref_gbps, caps,
                         be, be_note, crossings([c.rate for c in by_rate], [c.goodput_gain for c in by_rate]), notes)


def _unique(setups: list[Setup]) -> list[Setup]:
    seen, out = set(), []
    for s in setups:
        if s.hardware.key not in seen:
            seen.add(s.hardware.key)
            out.append(s)
    return out
