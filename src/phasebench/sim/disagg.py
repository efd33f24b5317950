"""Prefill/decode disaggregation: a prefill pool and a decode pool joined by a network link.

Each request is prefilled on the prefill pool, its KV cache (input tokens × KV bytes per token, at the decode
side's KV precision) crosses the link, and the decode pool generates the rest. The user sees the first token
when the decode side has the KV cache, because the decode instance streams the answer, as vLLM's
disaggregated prefill does:

    TTFT_disagg = TTFT_prefill + transfer,   transfer = latency + bytes / bandwidth

With layer-by-layer sending the transfer overlaps the prefill of the later layers; only the part that
does not overlap is exposed: max(transfer − prefill · (L−1)/L, transfer / L).

It pays on TTFT when TTFT_colocated − TTFT_prefill > transfer. The **break-even bandwidth** is
KV bytes ÷ (TTFT_colocated − TTFT_prefill − latency).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..metrics import RunContext, summarize
from ..model.errors import ModelError
from ..model.phases import Setup, predict
from ..records import RequestRecord
from ..spec import RunSpec
from .profile import AnalyticProfile, Profile
from .replica import SchedulerConfig, simulate, token_times
from .run import _requests, records_from


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: float        # bytes/s
    latency_s: float


NETWORKS = {
    "nvlink": Link("NVLink 4 (per GPU)", 450e9, 2e-6),
    "400g-ib": Link("400 Gb/s InfiniBand", 50e9, 5e-6),
    "200g-ib": Link("200 Gb/s InfiniBand", 25e9, 5e-6),
    "100gbe": Link("100 Gb Ethernet", 12.5e9, 10e-6),
    "25gbe": Link("25 Gb Ethernet", 3.125e9, 20e-6),
    "10gbe": Link("10 Gb Ethernet", 1.25e9, 30e-6),
}


def parse_network(s: str) -> Link:
    """A preset (nvlink, 400g-ib, 200g-ib, 100gbe, 25gbe, 10gbe) or 'GB/s[,latency_us]' e.g. '12.5' or '12.5,10'."""
    key = s.lower().strip()
    if key in NETWORKS:
        return NETWORKS[key]
    m = re.fullmatch(r"([0-9.eE+-]+)\s*(?:gb/s)?\s*(?:,\s*([0-9.eE+-]+)\s*(?:us)?)?", key)
    if not m:
        raise ModelError(f"unknown network {s!r}: use one of {', '.join(NETWORKS)} or 'GB/s[,latency_us]'")
    bw = float(m.group(1)) * 1e9
    lat = float(m.group(2) or 10) * 1e-6
    if bw <= 0:
        raise ModelError(f"network bandwidth must be > 0 (got {s!r}): a link that carries nothing never delivers the KV cache")
    if lat < 0:
        raise ModelError("network latency must be ≥ 0")
    return Link(f"{bw / 1e9:g} GB/s", bw, lat)


def kv_bytes(setup: Setup, input_tokens: int) -> float:
    """KV cache shipped for one request, at the receiving side's KV precision."""
    return setup.model.kv_bytes(input_tokens, setup.precision.kv)


def transfer_s(nbytes: float, link: Link, prefill_s: float = 0.0, layers: int = 1, overlap: bool = False) -> float:
    t = link.latency_s + nbytes / link.bandwidth
    if overlap and layers > 1:
        return max(t - prefill_s * (layers - 1) / layers, t / layers)
    return t


def break_even_bandwidth(nbytes: float, ttft_saved_s: float, latency_s: float = 0.0) -> float | None:
    """Bandwidth (bytes/s) at which shipping the KV cache costs exactly the TTFT the prefill pool saves;
    None when the prefill pool saves nothing (disaggregation cannot win on TTFT at any bandwidth)."""
    room = ttft_saved_s - latency_s
    return nbytes / room if room > 0 else None


@dataclass
class PointResult:
    input_tokens: int
    output_tokens: int
    kv_bytes: float
    transfer_s: float
    colocated: dict[str, float]
    disaggregated: dict[str, float]
    break_even_ttft_gbps: float | None
    break_even_e2e_gbps: float | None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__


def analytic_point(prefill: Setup, decode: Setup, colocated: Setup, link: Link, input_tokens: int,
                   output_tokens: int, decode_batch: int = 1, overlap: bool = False) -> PointResult:
    """One request's latencies without queueing: colocated vs disaggregated, and the break-even bandwidths."""
    c = predict(colocated, decode_batch, input_tokens, output_tokens)
    p = predict(prefill, 1, input_tokens, 1)
    d = predict(decode, decode_batch, input_tokens, output_tokens)
    for name, pr in (("colocated", c), ("prefill", p), ("decode", d)):
        if not pr.fits:
            raise ModelError(f"the {name} side does not fit: {pr.memory.per_device / 1e9:.1f} GB per device needed, "
                             f"{pr.memory.capacity / 1e9:.1f} GB usable ({pr.hardware}, {pr.devices} device(s))")
    nbytes = kv_bytes(decode, input_tokens)
    xfer = transfer_s(nbytes, link, p.ttft_s, prefill.model.layers, overlap)
    dis_ttft = p.ttft_s + xfer
    dis_e2e = dis_ttft + (output_tokens - 1) * d.tpot_s
    be_ttft = break_even_bandwidth(nbytes, c.ttft_s - p.ttft_s, link.latency_s)
    be_e2e = break_even_bandwidth(nbytes, c.e2e_s - (p.ttft_s + (output_tokens - 1) * d.tpot_s), link.latency_s)
    return PointResult(
        input_tokens, output_tokens, nbytes, xfer,
        {"ttft_ms": c.ttft_s * 1e3, "tpot_ms": c.tpot_s * 1e3, "e2e_s": c.e2e_s},
        {"ttft_ms": dis_ttft * 1e3, "tpot_ms": d.tpot_s * 1e3, "e2e_s": dis_e2e, "prefill_ms": p.ttft_s * 1e3,
         "transfer_ms": xfer * 1e3},
        None if be_ttft is None else be_ttft / 1e9, None if be_e2e is None else be_e2e / 1e9)


def sweep(prefill: Setup, decode: Setup, colocated: Setup, input_lens: list[int], bandwidths_gbps: list[float],
          output_tokens: int, latency_s: float, overlap: bool = False) -> list[dict[str, Any]]:
    """Where disaggregation wins: for each input length and link bandwidth, E2E and TTFT both ways."""
    rows = []
    for n in input_lens:
        for bw in bandwidths_gbps:
            try:
                pt = analytic_point(prefill, decode, colocated, Link(f"{bw:g} GB/s", bw * 1e9, latency_s), n,
                                    output_tokens, overlap=overlap)
            except ModelError as e:
                rows.append({"input_tokens": n, "bandwidth_gbps": bw, "error": str(e)})
                continue
            rows.append({"input_tokens": n, "bandwidth_gbps": bw, "colocated_ttft_ms": pt.colocated["ttft_ms"],
                         "disagg_ttft_ms": pt.disaggregated["ttft_ms"], "colocated_e2e_s": pt.colocated["e2e_s"],
                         "disagg_e2e_s": pt.disaggregated["e2e_s"],
                         "wins_ttft": pt.disaggregated["ttft_ms"] < pt.colocated["ttft_ms"],
                         "wins_e2e": pt.disaggregated["e2e_s"] < pt.colocated["e2e_s"],
                         "break_even_ttft_gbps": pt.break_even_ttft_gbps, "break_even_e2e_gbps": pt.break_even_e2e_gbps})
    return rows


def pool_ratio(prefill: Setup, decode: Setup, input_tokens: int, output_tokens: int, tpot_slo_ms: float | None,
               max_batch: int = 512) -> dict[str, Any]:
    """Prefill devices per decode device that balance the pools (DistServe's placement, analytically).

    Prefill capacity per replica: requests/s = 1 / TTFT at batch 1 (prefill is compute-bound; batching
    prompts does not raise tokens/s). Decode capacity per replica: the largest batch B whose TPOT meets the
    SLO (and fits), serving B / ((N−1)·TPOT(B)) requests/s.
    """
    p = predict(prefill, 1, input_tokens, 1)
    prefill_rps = 1.0 / p.ttft_s
    best_b, best_rps, best_tpot = 0, 0.0, None
    b = 1
    while b <= max_batch:
        d = predict(decode, b, input_tokens, output_tokens)
        if not d.fits or (tpot_slo_ms is not None and d.tpot_s * 1e3 > tpot_slo_ms):
            break
        rps = b / (max(output_tokens - 1, 1) * d.tpot_s)   # no-batching devices: TPOT grows b×, so rps stays flat
        if rps > best_rps:
            best_b, best_rps, best_tpot = b, rps, d.tpot_s
        b *= 2
    if not best_b:
        return {"error": "the decode side cannot meet the TPOT SLO even at batch 1"}
    ratio = best_rps / prefill_rps  # prefill replicas needed per decode replica
    return {"prefill_rps_per_replica": prefill_rps, "decode_rps_per_replica": best_rps, "decode_batch": best_b,
            "decode_tpot_ms": best_tpot * 1e3, "prefill_replicas_per_decode_replica": ratio,
            "prefill_devices_per_decode_device": ratio * prefill.devices / decode.devices}


# --- simulated side by side ------------------------------------------------------------------------------------
def _split(n: int, k: int) -> list[list[int]]:
    return [list(range(i, n, k)) for i in range(k)]


def simulate_disagg(spec: RunSpec, prefill: Setup, decode: Setup, link: Link, prefill_replicas: int,
                    decode_replicas: int, cfg_for: Callable[[Setup], SchedulerConfig], overlap: bool = False,
                    prefill_profile: Profile | None = None, decode_profile: Profile | None = None
                    ) -> tuple[list[RequestRecord], dict[str, Any]]:
    """Serve the spec's workload on the two pools; returns the per-request records (as a measured run's)."""
    arr, ins, outs, conc, _ = _requests(spec, None)
    if arr is None:
        raise ModelError("disaggregation is simulated for open-loop scenarios (server or offline)")
    n = len(ins)
    pprof = prefill_profile or AnalyticProfile(prefill)
    dprof = decode_profile or AnalyticProfile(decode)
    first = np.zeros(n)
    notes, over = [], False
    for idx in _split(n, prefill_replicas):
        if not idx:
            continue
        res = simulate(arr[idx], [ins[i] for i in idx], [1] * len(idx), pprof, cfg_for(prefill))
        over |= res.over_capacity
        notes += res.notes
        for r, i in zip(res.reqs, idx):
            first[i] = r.first_token if r.first_token >= 0 else np.nan
    ready = np.empty(n)
    for i in range(n):
        pf = first[i] - arr[i]
        ready[i] = first[i] + transfer_s(kv_bytes(decode, ins[i]), link, pf, prefill.model.layers, overlap)
    recs: list[RequestRecord] = [None] * n  # type: ignore[list-item]
    ok_ids = [i for i in range(n) if not np.isnan(ready[i])]
    dcfg = replace(cfg_for(decode), chunked_prefill=True)
    for idx in _split(len(ok_ids), decode_replicas):
        ids = [ok_ids[j] for j in idx]
        if not ids:
            continue
        res = simulate(ready[ids], [ins[i] for i in ids], [outs[i] for i in ids], dprof, dcfg, decode_only=True)
        over |= res.over_capacity
        notes += res.notes
        for r, i, rec in zip(res.reqs, ids, records_from(res)):
            rec.index = i
            rec.scheduled_ns = rec.sent_ns = int(arr[i] * 1e9)
            if rec.ok:
                rest = [int(x * 1e9) for x in token_times(res, r)[1:]]
                ns = [int(ready[i] * 1e9), *rest]
                rec.chunk_ns, rec.chunk_tokens = ns, [1] * len(ns)
                rec.first_token_ns = rec.first_byte_ns = rec.headers_ns = rec.first_answer_ns = ns[0]
                rec.last_token_ns = ns[-1]
            recs[i] = rec
    for i in range(n):
        if recs[i] is None:
            recs[i] = RequestRecord(index=i, request_id=f"sim-{i}", scheduled_ns=int(arr[i] * 1e9),
                                    sent_ns=int(arr[i] * 1e9), input_tokens=ins[i], error="not served (over capacity)",
                                    error_type="cancelled", simulated=True)
    return recs, {"over_capacity": over, "notes": notes}


def side_by_side(spec: RunSpec, prefill: Setup, decode: Setup, colocated: Setup, link: Link, prefill_replicas: int,
                 decode_replicas: int, colocated_replicas: int, cfg_for: Callable[[Setup], SchedulerConfig],
                 overlap: bool = False
                 ) -> dict[str, dict[str, Any]]:
    """Summaries of the same workload served colocated and disaggregated (both simulated)."""
    from ..cost import cost_block

    arr, ins, outs, _, rate = _requests(spec, None)
    ctx = RunContext(scenario=spec.scenario.value, slo=spec.slo, target_rate=rate)
    out = {}
    recs: list[RequestRecord] = []
    cprof = AnalyticProfile(colocated)
    over = False
    for idx in _split(len(ins), colocated_replicas):
        res = simulate(arr[idx], [ins[i] for i in idx], [outs[i] for i in idx], cprof, cfg_for(colocated))
        over |= res.over_capacity
        for rec, i in zip(records_from(res), idx):
            rec.index = i
            recs.append(rec)
    s = summarize(sorted(recs, key=lambda r: r.index), ctx)
    s["phasebench"]["over_capacity"] = over
    s["phasebench"]["cost"] = cost_block(colocated.hardware.key, colocated.devices * colocated_replicas, s)
    out["colocated"] = s
    drecs, info = simulate_disagg(spec, prefill, decode, link, prefill_replicas, decode_replicas, cfg_for, overlap)
    s = summarize(drecs, ctx)
    s["phasebench"]["over_capacity"] = info["over_capacity"]
    cp = cost_block(prefill.hardware.key, prefill.devices * prefill_replicas, s)
    cd = cost_block(decode.hardware.key, decode.devices * decode_replicas, s)
    if cp and cd and cp.get("usd_per_1m_output_tokens") and cd.get("usd_per_1m_output_tokens"):
        s["phasebench"]["cost"] = {"usd_per_1m_output_tokens": cp["usd_per_1m_output_tokens"] + cd["usd_per_1m_output_tokens"]}
    out["disaggregated"] = s
    return out
