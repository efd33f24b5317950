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

**Cached KV is not shipped.** KV the decode side already holds — a conversation's history, whose earlier turns
it decoded (their prompts and answers stay in its prefix cache) — need not cross the link: only the prompt's
other tokens do (at least the last one, which the prefill side computes). With the requests' block keys, each
decode replica keeps an LRU prefix cache of the blocks it has held (as large as its KV memory), a request goes
to the decode replica that holds the longest prefix of its prompt (cache-aware routing; none: round-robin),
and ships only the rest; ``kv_transfer`` says how many bytes that saved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..metrics import RunContext
from ..model.errors import ModelError
from ..model.phases import Setup, predict
from ..spec import RunSpec
from .columns import Columns, concat, from_result, summarize_columns, unserved
from .profile import AnalyticProfile, Profile
from .replica import SchedulerConfig, simulate
from .run import _requests


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
    kv_bytes: float                # shipped: the prompt's KV less what the decode side already holds
    transfer_s: float
    colocated: dict[str, float]
    disaggregated: dict[str, float]
    break_even_ttft_gbps: float | None
    break_even_e2e_gbps: float | None
    cached_tokens: int = 0         # prompt tokens whose KV is already on the decode side
    kv_bytes_saved: float = 0.0    # their KV, not shipped

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__


def analytic_point(prefill: Setup, decode: Setup, colocated: Setup, link: Link, input_tokens: int,
                   output_tokens: int, decode_batch: int = 1, overlap: bool = False,
                   cached_tokens: int = 0) -> PointResult:
    """One request's latencies without queueing: colocated vs disaggregated, and the break-even bandwidths.
    ``cached_tokens``: leading prompt tokens whose KV the decode side already holds (a conversation's history):
    only the rest is shipped (the prefill and colocated sides' own compute is predicted for the whole prompt)."""
    if not 0 <= cached_tokens < max(input_tokens, 1):
        raise ModelError(f"cached tokens must be ≥ 0 and below the {input_tokens} input tokens (got {cached_tokens})")
    c = predict(colocated, decode_batch, input_tokens, output_tokens)
    p = predict(prefill, 1, input_tokens, 1)
    d = predict(decode, decode_batch, input_tokens, output_tokens)
    for name, pr in (("colocated", c), ("prefill", p), ("decode", d)):
        if not pr.fits:
            raise ModelError(f"the {name} side does not fit: {pr.memory.per_device / 1e9:.1f} GB per device needed, "
                             f"{pr.memory.capacity / 1e9:.1f} GB usable ({pr.hardware}, {pr.devices} device(s))")
    full = kv_bytes(decode, input_tokens)
    nbytes = kv_bytes(decode, input_tokens - cached_tokens) if cached_tokens else full
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
        None if be_ttft is None else be_ttft / 1e9, None if be_e2e is None else be_e2e / 1e9,
        cached_tokens, full - nbytes)


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


def serve_colocated(profile: Profile, cfg: SchedulerConfig, arr: np.ndarray, ins: np.ndarray, outs: np.ndarray,
                    replicas: int) -> tuple[Columns, bool]:
    """The workload on ``replicas`` colocated replicas (round-robin); (columns, over capacity)."""
    parts, over = [], False
    for idx in _split(len(ins), replicas):
        if not idx:
            continue
        res = simulate(arr[idx], ins[idx], outs[idx], profile, cfg)
        over |= res.over_capacity
        parts.append(from_result(res, idx))
    return concat(parts), over


def prefill_pool(profile: Profile, cfg: SchedulerConfig, arr: np.ndarray, ins: np.ndarray, replicas: int,
                 keys: list[list[int]] | None = None) -> tuple[np.ndarray, bool, list[str]]:
    """When each request's prefill ends on the prefill pool (NaN: not served); ``keys``: prompt block keys for
    its prefix cache (with ``cfg.prefix_cache``)."""
    first = np.full(len(ins), np.nan)
    over, notes = False, []
    for idx in _split(len(ins), replicas):
        if not idx:
            continue
        res = simulate(arr[idx], ins[idx], np.ones(len(idx), dtype=np.int64), profile, cfg,
                       prefix_keys=None if keys is None else [keys[i] for i in idx])
        over |= res.over_capacity
        notes += res.notes
        f = np.array(res.state.first, dtype=np.float64)
        first[idx] = np.where(f >= 0, f, np.nan)
    return first, over, notes


def decode_pool(profile: Profile, cfg: SchedulerConfig, arr: np.ndarray, ins: np.ndarray, outs: np.ndarray,
                ready: np.ndarray, replicas: int, routes: np.ndarray | None = None) -> tuple[Columns, bool, list[str]]:
    """Decode-only replicas take each request when its KV cache has arrived (``ready``; NaN: never), round-robin
    or by ``routes`` (each request's decode replica)."""
    ok_ids = np.flatnonzero(~np.isnan(ready))
    parts, over, notes = [], False, []
    dcfg = replace(cfg, chunked_prefill=True, prefix_cache=False)
    shares = _split(len(ok_ids), replicas) if routes is None else \
        [np.flatnonzero(routes[ok_ids] == j) for j in range(replicas)]
    for sub in shares:
        ids = ok_ids[sub]
        if not len(ids):
            continue
        res = simulate(ready[ids], ins[ids], outs[ids], profile, dcfg, decode_only=True)
        over |= res.over_capacity
        notes += res.notes
        parts.append(from_result(res, ids, first_s=ready[ids], sched_s=arr[ids]))
    lost = np.flatnonzero(np.isnan(ready))
    if len(lost):
        parts.append(unserved(lost, arr[lost], ins[lost], outs[lost], "not served (over capacity)"))
    return concat(parts), over, notes


def ready_times(first: np.ndarray, arr: np.ndarray, kv: np.ndarray, link: Link, layers: int, overlap: bool) -> np.ndarray:
    """When the decode side holds each request's KV cache: prefill end + exposed transfer (vectorised
    :func:`transfer_s`)."""
    t = link.latency_s + kv / link.bandwidth
    if overlap and layers > 1:
        pf = first - arr
        t = np.maximum(t - pf * (layers - 1) / layers, t / layers)
    return first + t


def decode_routes(first: np.ndarray, ins: np.ndarray, keys: list[list[int]], replicas: int, block_size: int,
                  capacity_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Cache-aware routing to the decode pool: in the order the prefills end, each request goes to the decode
    replica whose prefix cache holds the longest prefix of its prompt (none holds any: round-robin), which then
    caches the request's blocks (``keys``: prompt and answer), LRU within its KV memory. Returns (each request's
    replica, its prompt tokens already there: whole blocks, at most the prompt less its last token)."""
    from .replica import PrefixCache

    routes = np.full(len(ins), -1, dtype=np.int64)
    cached = np.zeros(len(ins), dtype=np.int64)
    caches = [PrefixCache() for _ in range(replicas)]
    turn = 0
    for i in np.argsort(first, kind="stable").tolist():
        if np.isnan(first[i]):
            continue
        prompt = keys[i][: int(ins[i]) // block_size]
        held = [c.peek(prompt) for c in caches]
        j = int(np.argmax(held))
        if held[j] == 0:
            j, turn = turn % replicas, turn + 1
        routes[i] = j
        cached[i] = max(min(caches[j].match(prompt) * block_size, int(ins[i]) - 1), 0)
        caches[j].insert(keys[i], capacity_blocks)
    return routes, cached


def _kv(decode: Setup, tokens: np.ndarray) -> np.ndarray:
    """KV bytes of each request's ``tokens`` at the decode side's precision."""
    if not len(tokens):
        return np.zeros(0)
    by = {n: kv_bytes(decode, n) for n in set(tokens.tolist())}
    return np.array([by[n] for n in tokens.tolist()], dtype=np.float64)


def simulate_disagg_columns(arr: np.ndarray, ins: np.ndarray, outs: np.ndarray, prefill: Setup, decode: Setup,
                            link: Link, prefill_replicas: int, decode_replicas: int,
                            cfg_for: Callable[[Setup], SchedulerConfig], overlap: bool = False,
                            prefill_profile: Profile | None = None, decode_profile: Profile | None = None,
                            first: np.ndarray | None = None, keys: list[list[int]] | None = None
                            ) -> tuple[Columns, dict[str, Any]]:
    """The workload on the two pools, as columns. ``first``: prefill end times already simulated (they do not
    depend on the link, so a bandwidth sweep simulates the prefill pool once). ``keys``: each request's block
    keys (prompt, then answer): the decode pool routes by its prefix caches and what it holds is not shipped;
    the prefill pool, with ``prefix_cache`` on, reuses the prompt blocks it computed before. ``kv_transfer`` in
    the returned info: the KV bytes needed, shipped and saved."""
    over, notes = False, []
    pcfg = cfg_for(prefill)
    if first is None:
        pkeys = None if keys is None or not pcfg.prefix_cache else \
            [k[: int(n) // pcfg.block_size] for k, n in zip(keys, ins.tolist())]   # it never held the answers
        first, over, notes = prefill_pool(prefill_profile or AnalyticProfile(prefill), pcfg, arr, ins,
                                          prefill_replicas, pkeys)
    dcfg = cfg_for(decode)
    routes, cached = (None, np.zeros(len(ins), dtype=np.int64)) if keys is None else \
        decode_routes(first, ins, keys, decode_replicas, dcfg.block_size, dcfg.kv_blocks)
    full = _kv(decode, np.asarray(ins, dtype=np.int64))
    kv = full if keys is None else _kv(decode, np.asarray(ins, dtype=np.int64) - cached)
    ready = ready_times(first, arr, kv, link, prefill.model.layers, overlap)
    cols, o2, n2 = decode_pool(decode_profile or AnalyticProfile(decode), dcfg, arr, ins, outs, ready,
                               decode_replicas, routes)
    sent = ~np.isnan(first)
    needed, shipped = float(full[sent].sum()), float(kv[sent].sum())
    transfer = {"requests": int(sent.sum()), "kv_bytes_needed": needed, "kv_bytes_shipped": shipped,
                "kv_bytes_saved": needed - shipped, "saved_fraction": (needed - shipped) / needed if needed else None,
                "decode_cached_tokens": int(cached[sent].sum()), "routing": "round-robin" if keys is None else
                "cache-aware (the decode replica holding the longest prefix)"}
    return cols, {"over_capacity": over or o2, "notes": notes + n2, "kv_transfer": transfer}


def deployment_cost(summary: dict[str, Any], pools: list[tuple[Setup, int]]) -> dict[str, Any] | None:
    """The cost block of a deployment of one or more pools: their bills add (a pool without a price: none)."""
    from ..cost import cost_block

    blocks = [cost_block(st.hardware.key, st.devices * reps, summary) for st, reps in pools]
    if len(blocks) == 1 or any(b is None for b in blocks):
        return blocks[0] if len(blocks) == 1 else None
    missing = [b["hardware"] for b in blocks if b.get("price_per_hour") is None]
    out: dict[str, Any] = {"pools": blocks}
    if missing:
        out["note"] = f"no price for {', '.join(missing)}: the deployment has no dollar figure"
        return out
    for key in ("usd_per_1m_tokens", "usd_per_1m_tokens_at_slo", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens",
                "usd_per_1m_output_tokens_at_slo", "usd_per_1m_output_tokens_all_in"):
        vals = [b.get(key) for b in blocks]
        out[key] = sum(vals) if all(v is not None for v in vals) else None   # the same tokens, two bills
    watts = [b.get("watts") for b in blocks]
    if all(watts):
        out["watts"] = sum(watts)
        out_tps = summary.get("output_throughput") or 0.0
        out["output_tokens_per_joule"] = out_tps / out["watts"] if out["watts"] else None
    return out


def side_by_side(spec: RunSpec, prefill: Setup, decode: Setup, colocated: Setup, link: Link, prefill_replicas: int,
                 decode_replicas: int, colocated_replicas: int, cfg_for: Callable[[Setup], SchedulerConfig],
                 overlap: bool = False
                 ) -> dict[str, dict[str, Any]]:
    """Summaries of the same workload served colocated and disaggregated (both simulated). Multi-turn
    conversations (``spec.turns``): :func:`conversations_side_by_side`."""
    if spec.turns is not None:
        return conversations_side_by_side(spec, prefill, decode, colocated, link, prefill_replicas, decode_replicas,
                                          colocated_replicas, cfg_for, overlap)
    arr, ins, outs, _, rate = _requests(spec, None)
    if arr is None:
        raise ModelError("disaggregation is simulated for open-loop scenarios (server or offline)")
    arr, ins, outs = np.asarray(arr, dtype=np.float64), np.asarray(ins), np.asarray(outs)
    ctx = RunContext(scenario=spec.scenario.value, slo=spec.slo, target_rate=rate)
    cols, over = serve_colocated(AnalyticProfile(colocated), cfg_for(colocated), arr, ins, outs, colocated_replicas)
    s = summarize_columns(cols, ctx)
    s["phasebench"]["over_capacity"] = over
    s["phasebench"]["cost"] = deployment_cost(s, [(colocated, colocated_replicas)])
    out = {"colocated": s}
    dcols, info = simulate_disagg_columns(arr, ins, outs, prefill, decode, link, prefill_replicas, decode_replicas,
                                          cfg_for, overlap)
    s = summarize_columns(dcols, ctx)
    s["phasebench"]["over_capacity"] = info["over_capacity"]
    s["phasebench"]["kv_transfer"] = info["kv_transfer"]
    s["phasebench"]["cost"] = deployment_cost(s, [(prefill, prefill_replicas), (decode, decode_replicas)])
    out["disaggregated"] = s
    return out


MAX_PASSES = 40


def conversations_side_by_side(spec: RunSpec, prefill: Setup, decode: Setup, colocated: Setup, link: Link,
                               prefill_replicas: int, decode_replicas: int, colocated_replicas: int,
                               cfg_for: Callable[[Setup], SchedulerConfig], overlap: bool = False
                               ) -> dict[str, dict[str, Any]]:
    """Open-loop conversations (``--turns``, ``--rate``) colocated and disaggregated, with prefix caches.

    Colocated: :func:`~phasebench.sim.run.simulate_run` (each turn arrives its think time after the previous
    answer). Disaggregated: the turns' arrivals depend on when the decode pool finished the previous turn, while
    the pools are simulated one after the other, so they are found as a fixed point: start from the colocated
    arrivals, simulate both pools, move each later turn to its previous turn's end + think time, until nothing
    moves (``turn_arrivals`` says how many passes it took). The decode pool routes by its prefix caches and does
    not ship the history it holds (``kv_transfer``)."""
    from .conversations import conversation_requests
    from .run import simulate_run

    arr0, _, rate, convs = conversation_requests(spec)
    if arr0 is None:
        raise ModelError("disaggregation is simulated for open-loop scenarios: --turns with --scenario server --rate")
    def cached_cfg(st: Setup) -> SchedulerConfig:
        return replace(cfg_for(st), prefix_cache=True)

    col = simulate_run(spec.model_copy(update={"out": None}), AnalyticProfile(colocated), cached_cfg(colocated),
                       replicas=colocated_replicas, record=False)
    s = col.summary
    s["phasebench"]["over_capacity"] = col.manifest["simulation"]["over_capacity"]
    s["phasebench"]["cost"] = deployment_cost(s, [(colocated, colocated_replicas)])
    out = {"colocated": s}
    n = len(convs.n_in)
    arr = np.full(n, np.nan)
    for r in col.records:
        arr[r.index] = r.scheduled_ns / 1e9
    ins, outs = np.asarray(convs.n_in, dtype=np.int64), np.asarray(convs.n_out, dtype=np.int64)
    keys = convs.keys(cached_cfg(decode).block_size)
    follow = np.asarray(convs.follow, dtype=np.int64)
    pred = np.full(n, -1, dtype=np.int64)
    pred[follow[follow >= 0]] = np.flatnonzero(follow >= 0)
    later = pred >= 0
    think = np.asarray(convs.think, dtype=np.float64)
    change, passes, converged = float("inf"), 0, False
    while passes < MAX_PASSES:
        passes += 1
        dcols, info = simulate_disagg_columns(arr, ins, outs, prefill, decode, link, prefill_replicas,
                                              decode_replicas, cached_cfg, overlap, keys=keys)
        end = np.where(dcols.served, dcols.end / 1e9, np.nan)   # rows are in request order
        moved = arr.copy()
        moved[later] = end[pred[later]] + think[pred[later]]
        if np.isnan(moved).any():   # a turn was never served (over capacity): nothing to converge to
            break
        change = float(np.abs(moved - arr).max())
        if change < 1e-9:
            converged = True
            break
        arr = moved
    dcols.conversation, dcols.turn = convs.conversation[dcols.index], convs.turn[dcols.index]
    ctx = RunContext(scenario=spec.scenario.value, slo=spec.slo, target_rate=rate)
    s = summarize_columns(dcols, ctx)
    s["phasebench"]["over_capacity"] = info["over_capacity"]
    s["phasebench"]["kv_transfer"] = info["kv_transfer"]
    s["phasebench"]["turn_arrivals"] = {"passes": passes, "converged": converged, "max_change_s": change}
    if not converged:
        s["phasebench"]["warnings"].append(
            f"the later turns' arrivals did not settle in {passes} passes (last change {change:.3g} s): the "
            "disaggregated figures are approximate")
    s["phasebench"]["cost"] = deployment_cost(s, [(prefill, prefill_replicas), (decode, decode_replicas)])
    out["disaggregated"] = s
    return out
