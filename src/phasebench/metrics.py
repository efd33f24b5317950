"""Every metric, defined once. ``docs/metrics.md`` gives the same definitions in words.

Inputs are request records (nanoseconds from the run's start); outputs are plain dicts that go into
``summary.json``. Latencies are in milliseconds, rates per second.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .records import RequestRecord
from .spec import SLO

PERCENTILES = (50, 90, 95, 97, 99, 99.9)  # 97: LoadGen reports it (mlperf_log_summary.txt)
NS_PER_MS = 1e6
MIN_RATE_REQUESTS = 10  # a throughput or goodput from fewer completed requests gets a small-sample warning


# ---- per-request metrics ------------------------------------------------------------------------------


def ttft_ms(r: RequestRecord) -> float | None:
    """Time to first token, from the *scheduled* send (MLPerf LoadGen): client queueing counts."""
    return None if r.first_token_ns is None else (r.first_token_ns - r.scheduled_ns) / NS_PER_MS


def ttft_sent_ms(r: RequestRecord) -> float | None:
    """Time to first token from the moment the request was actually sent."""
    if r.first_token_ns is None or r.sent_ns is None:
        return None
    return (r.first_token_ns - r.sent_ns) / NS_PER_MS


def send_lag_ms(r: RequestRecord) -> float | None:
    """How late the client sent: actual send − scheduled send."""
    return None if r.sent_ns is None else (r.sent_ns - r.scheduled_ns) / NS_PER_MS


def ttfot_ms(r: RequestRecord) -> float | None:
    """Time to first visible-answer token (reasoning tokens excluded), from the scheduled send."""
    return None if r.first_answer_ns is None else (r.first_answer_ns - r.scheduled_ns) / NS_PER_MS


def e2e_ms(r: RequestRecord) -> float | None:
    """End-to-end latency: end of the stream − scheduled send."""
    return None if r.end_ns is None else (r.end_ns - r.scheduled_ns) / NS_PER_MS


def tpot_ms(r: RequestRecord) -> float | None:
    """Time per output token after the first: (last token − first token) / (N_out − 1).

    Equal to (E2E − TTFT)/(N_out − 1) with E2E taken at the last token; the first token is excluded
    (vLLM, SGLang, MLPerf). Undefined for fewer than 2 output tokens.
    """
    n = r.output_tokens or 0
    if n < 2 or r.first_token_ns is None or r.last_token_ns is None:
        return None
    return (r.last_token_ns - r.first_token_ns) / (n - 1) / NS_PER_MS


def itl_chunk_ms(r: RequestRecord) -> list[float]:
    """Per-chunk inter-token latency: gaps between arrivals of consecutive token-bearing chunks."""
    c = r.chunk_ns
    return [(c[i] - c[i - 1]) / NS_PER_MS for i in range(1, len(c))]


def itl_token_gaps(r: RequestRecord) -> tuple[list[float], list[int]]:
    """Per-token inter-token latency, as (gap ÷ tokens, tokens) per chunk after the first: each chunk's gap is
    divided evenly among the tokens it carried, and that value counts once per token (weights, never expanded,
    so a chunk claiming 10^12 tokens costs nothing)."""
    c, k = r.chunk_ns, r.chunk_tokens
    vals: list[float] = []
    weights: list[int] = []
    for i in range(1, len(c)):
        n = k[i] if i < len(k) and k[i] > 0 else 1
        vals.append((c[i] - c[i - 1]) / n / NS_PER_MS)
        weights.append(n)
    return vals, weights


def itl_token_ms(r: RequestRecord) -> list[float]:
    """``itl_token_gaps`` expanded into one value per token, for tests that need the whole sample (compare);
    a chunk's repetitions are capped at ``EXPAND_CAP`` so a server's absurd token count cannot exhaust memory."""
    vals, weights = itl_token_gaps(r)
    return [v for v, w in zip(vals, weights) for _ in range(min(w, EXPAND_CAP))]


EXPAND_CAP = 256


def itl_token_max_ms(r: RequestRecord) -> float | None:
    """The request's worst per-token gap."""
    vals, _ = itl_token_gaps(r)
    return max(vals, default=None)


def buffered(r: RequestRecord) -> bool:
    """The stream arrived all at once (a buffering server or proxy): >= 4 output tokens, yet one chunk, or
    chunks closer together than 50 µs per token. Its TPOT and ITL are then not the server's decode speed."""
    n = r.output_tokens or 0
    if n < 4 or r.first_token_ns is None or r.last_token_ns is None:
        return False
    return len(r.chunk_ns) <= 1 or (r.last_token_ns - r.first_token_ns) < BUFFERED_NS_PER_TOKEN * (n - 1)


BUFFERED_NS_PER_TOKEN = 50_000


def prefill_tps(r: RequestRecord) -> float | None:
    """Prefill throughput of one request: prompt tokens / TTFT from the actual send (tokens/s)."""
    t = ttft_sent_ms(r)
    n = r.prompt_tokens or r.input_tokens
    return None if not t or not n else n / (t / 1000)


def new_prompt_tokens(r: RequestRecord) -> int | None:
    """Prompt tokens the server had to prefill: prompt − what it served from its prefix cache (None: no report)."""
    n = r.prompt_tokens or r.input_tokens
    return None if n is None or r.cached_tokens is None else max(n - r.cached_tokens, 0)


def prefill_new_tps(r: RequestRecord) -> float | None:
    """Prefill throughput over the *new* (uncached) prompt tokens / TTFT from the actual send (tokens/s)."""
    t, n = ttft_sent_ms(r), new_prompt_tokens(r)
    return None if not t or not n else n / (t / 1000)


def workload_block(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    """Per-turn TTFT/TPOT (multi-turn conversations, traces with conversations) and the prompt split into cached
    and new tokens (where the server reports cached tokens); each part None when no record carries it."""
    turns: dict[int, list[RequestRecord]] = {}
    for r in ok:
        if r.turn is not None:
            turns.setdefault(r.turn, []).append(r)
    by_turn = {
        str(k): {
            "requests": len(rs),
            "ttft_ms": describe(ttft_ms(r) for r in rs),
            "tpot_ms": describe(tpot_ms(r) for r in rs),
            "prompt_tokens": describe(float(r.prompt_tokens or r.input_tokens or 0) for r in rs),
            "cached_tokens": describe(None if r.cached_tokens is None else float(r.cached_tokens) for r in rs),
        }
        for k, rs in sorted(turns.items())
    } or None
    rep = [r for r in ok if r.cached_tokens is not None and (r.prompt_tokens or r.input_tokens)]
    cache = None
    if rep:
        total = sum(int(r.prompt_tokens or r.input_tokens or 0) for r in rep)
        cached = sum(min(int(r.cached_tokens or 0), int(r.prompt_tokens or r.input_tokens or 0)) for r in rep)
        cache = {
            "source": "per-request",
            "requests_reporting": len(rep),
            "requests_not_reporting": len(ok) - len(rep),
            "prompt_tokens": total,
            "cached_tokens": cached,
            "new_tokens": total - cached,
            "cached_fraction": cached / total if total else None,
            "new_tokens_per_request": describe(float(new_prompt_tokens(r) or 0) for r in rep),
            "prefill_new_tps": describe(prefill_new_tps(r) for r in rep),
        }
    return {"by_turn": by_turn, "prompt_cache": cache}


def decode_tps(r: RequestRecord) -> float | None:
    """Decode rate of one request: 1 / TPOT (tokens/s)."""
    t = tpot_ms(r)
    return None if not t else 1000 / t


def meets_slo(r: RequestRecord, slo: SLO) -> bool:
    """A request meets the SLO when it succeeded and is under every threshold that is set.
    The ITL threshold applies to the request's worst per-token gap."""
    if not r.ok:
        return False
    checks = (
        (slo.ttft_ms, ttft_ms(r)),
        (slo.tpot_ms, tpot_ms(r)),
        (slo.e2e_ms, e2e_ms(r)),
        (slo.itl_ms, itl_token_max_ms(r)),
    )
    return all(limit is None or value is None or value <= limit for limit, value in checks)


_CONSTRAINED = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}


# ---- statistics ----------------------------------------------------------------------------------------


def quantile_ci(sorted_vals: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float | None] | None:
    """Distribution-free confidence interval for the q-quantile from order statistics (binomial, normal
    approximation). The upper end is None when there are too few samples to bound it (n < ~ 1/(1-q))."""
    ranks = quantile_ci_ranks(len(sorted_vals), q, confidence)
    if ranks is None:
        return None
    lo, hi = ranks
    return (float(sorted_vals[lo]), None if hi is None else float(sorted_vals[hi]))


def quantile_ci_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int | None] | None:
    """The 0-based ranks (in the sorted sample of ``n``) of :func:`quantile_ci`'s ends; None below 2 samples."""
    if n < 2:
        return None
    z = 1.959963984540054 if confidence == 0.95 else _z(confidence)
    half = z * math.sqrt(n * q * (1 - q))
    lo = int(math.floor(n * q - half))
    hi = int(math.ceil(n * q + half))
    return max(lo, 0), (None if hi >= n else hi)


def _z(conf: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + conf / 2)


def min_samples(p: float) -> int:
    """The fewest samples the p-th percentile needs: n ≥ 1/(1 − p/100) (p90: 10, p95: 20, p99: 100, p99.9: 1000).

    Below it fewer than one sample is expected above the percentile, so the value is (an interpolation
    toward) the sample max, not an estimate of the tail. ``show``, the report and ``compare`` flag or leave
    untested every percentile below it; docs/metrics.md states the same rule."""
    return math.ceil(round(100.0 / (100.0 - p), 9))


def too_few_for(count: int) -> dict[str, int]:
    """The percentiles ``count`` samples cannot support, each with the samples it needs (``summary.json``'s
    per-metric ``too_few_for`` note)."""
    return {f"p{p:g}": min_samples(p) for p in PERCENTILES if count < min_samples(p)}


def describe(values: Iterable[float | None]) -> dict[str, Any]:
    """count, mean, std, min, max, p50/p90/p95/p97/p99/p99.9 and a 95% CI for p99."""
    arr = np.fromiter((v for v in values if v is not None and not math.isnan(v)), dtype=np.float64)
    if arr.size == 0:
        return {"count": 0}
    arr.sort()
    out: dict[str, Any] = {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr[0]),
        "max": float(arr[-1]),
    }
    for p in PERCENTILES:
        out[f"p{p:g}"] = float(np.percentile(arr, p))
    ci = quantile_ci(arr, 0.99)
    out["p99_ci95"] = list(ci) if ci else None
    out["too_few_for"] = too_few_for(arr.size)
    return out


def describe_weighted(values: Sequence[float], weights: Sequence[int]) -> dict[str, Any]:
    """``describe`` of a sample in which value i occurs weights[i] times, without expanding it.

    Percentiles follow numpy's default (linear) definition on the expanded sample, so for small weights the
    result equals ``describe`` of the expanded list; the p99 CI is left out when weights are not all 1."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = ~np.isnan(v) & (w > 0)
    v, w = v[keep], w[keep]
    if v.size == 0:
        return {"count": 0}
    if np.all(w == 1):
        return describe(v.tolist())
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    n = float(w.sum())
    mean = float((v * w).sum() / n)
    var = float((w * (v - mean) ** 2).sum() / (n - 1)) if n > 1 else 0.0
    cum = np.cumsum(w)  # expanded positions: value i covers ranks [cum[i]-w[i], cum[i]-1]
    out: dict[str, Any] = {"count": int(n), "mean": mean, "std": math.sqrt(max(var, 0.0)),
                           "min": float(v[0]), "max": float(v[-1])}
    for p in PERCENTILES:
        h = (n - 1) * p / 100.0
        lo, hi = math.floor(h), math.ceil(h)
        a = float(v[int(np.searchsorted(cum, lo, side="right"))])
        b = float(v[int(np.searchsorted(cum, hi, side="right"))])
        out[f"p{p:g}"] = a + (b - a) * (h - lo)
    out["p99_ci95"] = None
    out["too_few_for"] = too_few_for(int(n))
    return out


# ---- the run's summary ---------------------------------------------------------------------------------


@dataclass
class RunContext:
    """What the metrics need to know about the run besides its records."""

    scenario: str
    slo: SLO
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    target_rate: float | None = None
    burstiness: float | None = None
    concurrency: int | None = None
    client_cpu_s: float | None = None
    wall_s: float | None = None
    partial: bool = False
    exact_output: bool = True
    mlperf: bool = False
    stopped: str | None = None  # why the run stopped early (the server stopped answering)
    loop_lag_ms: list[float] | None = None  # event-loop heartbeat (monitor.LoopLag)
    host: dict[str, Any] | None = None  # CPU use by who used it (monitor.HostLoad)
    transport: str | None = None  # the client transport ("raw": chunk times are the kernel's receive stamps); None: simulated
    extra_warnings: list[str] = field(default_factory=list)


def window(records: Sequence[RequestRecord], ctx: RunContext) -> tuple[int, int]:
    """The measurement window [start, end] in ns: warm-up and cool-down cut by event timestamps."""
    ends = [r.end_ns for r in records if r.end_ns is not None and not r.warmup]
    starts = [r.scheduled_ns for r in records if not r.warmup]
    if not starts:
        return (0, 0)
    start = min(starts) + int(ctx.warmup_s * 1e9)
    end = (max(ends) if ends else max(starts)) - int(ctx.cooldown_s * 1e9)
    return (start, max(end, start))


def max_in_flight(records: Iterable[RequestRecord]) -> int:
    events: list[tuple[int, int]] = []
    for r in records:
        if r.sent_ns is not None and r.end_ns is not None:
            events.append((r.sent_ns, 1))
            events.append((r.end_ns, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _itl_token_stats(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    vals: list[float] = []
    weights: list[int] = []
    for r in ok:
        v, w = itl_token_gaps(r)
        vals += v
        weights += w
    return describe_weighted(vals, weights)


def _ttft_uncertainty(ok: Sequence[RequestRecord], loop_lag_ms: list[float] | None) -> dict[str, Any]:
    """How late each first token may be stamped with kernel receive times. A first token that was the last
    token event of its read carries its own segment's stamp (0). One that shared a read with later tokens carries a
    later segment's stamp: it arrived between the previous read and that stamp (the record's bound), and no
    longer before the read than the event loop was behind (a readable socket waits for the loop as the
    heartbeat's callbacks do): the smaller of the bound and the loop lag's p99."""
    lag = describe(loop_lag_ms or [])
    cap = lag.get("p99", math.inf) if lag.get("count", 0) >= LOOP_LAG_MIN_SAMPLES else math.inf
    return describe(min((r.ttft_uncertainty_ns or 0) / NS_PER_MS, cap) for r in ok if r.first_token_ns is not None)


def summarize(records: Sequence[RequestRecord], ctx: RunContext) -> dict[str, Any]:
    """The run's summary: vLLM-bench-compatible top-level keys, phasebench's own under ``phasebench``."""
    measured = [r for r in records if not r.warmup]
    w0, w1 = window(measured, ctx)
    span_s = max((w1 - w0) / 1e9, 1e-9)
    in_win = [r for r in measured if w0 <= r.scheduled_ns <= w1]
    ok = [r for r in in_win if r.ok]
    failed = [r for r in in_win if not r.ok]

    # Throughput counts events inside the window: tokens by chunk arrival, requests by completion.
    out_tokens_in_win = 0
    for r in measured:
        if not r.ok:
            continue
        for t, k in zip(r.chunk_ns, r.chunk_tokens):
            if w0 <= t <= w1:
                out_tokens_in_win += k
    done_in_win = [r for r in measured if r.ok and r.end_ns is not None and w0 <= r.end_ns <= w1]
    in_tokens_in_win = sum((r.prompt_tokens or r.input_tokens or 0) for r in done_in_win)

    m = {
        "ttft_ms": describe(ttft_ms(r) for r in ok),
        "ttft_sent_ms": describe(ttft_sent_ms(r) for r in ok),
        "send_lag_ms": describe(send_lag_ms(r) for r in in_win),
        "ttfot_ms": describe(ttfot_ms(r) for r in ok),
        "tpot_ms": describe(tpot_ms(r) for r in ok),
        "itl_chunk_ms": describe(x for r in ok for x in itl_chunk_ms(r)),
        "itl_token_ms": _itl_token_stats(ok),
        "e2e_ms": describe(e2e_ms(r) for r in ok),
        "prefill_tps": describe(prefill_tps(r) for r in ok),
        "decode_tps": describe(decode_tps(r) for r in ok),
        "input_tokens": describe((r.prompt_tokens or r.input_tokens) for r in ok),
        "output_tokens": describe(r.output_tokens for r in ok),
    }
    met = [r for r in in_win if meets_slo(r, ctx.slo)]
    slo_block: dict[str, Any] = {"slo": ctx.slo.model_dump(), "met": len(met), "total": len(in_win)}
    slo_block["attainment"] = len(met) / len(in_win) if in_win else None
    slo_block["goodput"] = len(met) / span_s
    constraints = []
    for name, limit in (("ttft_ms", ctx.slo.ttft_ms), ("tpot_ms", ctx.slo.tpot_ms), ("e2e_ms", ctx.slo.e2e_ms)):
        if limit is None:
            continue
        vals = [v for v in (_CONSTRAINED[name](r) for r in ok) if v is not None]
        got = float(np.percentile(vals, ctx.slo.percentile)) if vals else None
        constraints.append({"metric": name, "percentile": ctx.slo.percentile, "limit": limit, "value": got,
                            "ok": got is not None and got <= limit})
    slo_block["constraints"] = constraints

    errors = Counter(r.error_type or "unknown" for r in failed)
    usage_diffs = [
        r.output_tokens - r.output_tokens_client
        for r in ok
        if r.output_tokens_source == "usage" and r.output_tokens_client is not None and r.output_tokens is not None
    ]
    length_mismatch = sum(1 for r in ok if r.length_met is False)
    achieved_send_rate = None
    sends = sorted(r.sent_ns for r in in_win if r.sent_ns is not None)
    if len(sends) > 1:
        achieved_send_rate = (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9 or 1e-9)
    sched = sorted(r.scheduled_ns for r in in_win)
    scheduled_rate = (len(sched) - 1) / ((sched[-1] - sched[0]) / 1e9 or 1e-9) if len(sched) > 1 else None
    cpu_frac = None
    if ctx.client_cpu_s is not None and ctx.wall_s:
        cpu_frac = ctx.client_cpu_s / ctx.wall_s

    server_prompt_ms = [r.server_timing.get("prompt_ms") for r in ok if r.server_timing]
    server_tpot = [
        r.server_timing["predicted_ms"] / r.server_timing["predicted_n"]
        for r in ok
        if r.server_timing and r.server_timing.get("predicted_n") and r.server_timing.get("predicted_ms") is not None
    ]

    client = {
        "cpu_s": ctx.client_cpu_s,
        "wall_s": ctx.wall_s,
        "cpu_fraction": cpu_frac,
        "max_in_flight": max_in_flight(measured),
        "target_rate": ctx.target_rate,
        "scheduled_rate": scheduled_rate,
        "achieved_send_rate": achieved_send_rate,
        "loop_lag_ms": describe(ctx.loop_lag_ms or []) if ctx.loop_lag_ms is not None else None,
        "transport": ctx.transport,
        "read_delay_ms": describe(d / NS_PER_MS for r in in_win for d in (r.read_delay_ns or ()))
        if ctx.transport == "raw" else None,
        "ttft_uncertainty_ms": _ttft_uncertainty(ok, ctx.loop_lag_ms) if ctx.transport == "raw" else None,
        "coalesced_reads": sum(r.coalesced_reads for r in in_win) if ctx.transport == "raw" else None,
        "host": ctx.host,
    }
    streams = {"buffered": sum(1 for r in ok if buffered(r)), "eligible": sum(1 for r in ok if (r.output_tokens or 0) >= 4)}
    valid, reasons, warnings = check_validity(m, client, errors, length_mismatch, len(in_win), span_s, ctx, slo_block,
                                              streams, completed=len(done_in_win))

    total_out = sum(r.output_tokens or 0 for r in ok)
    total_in = sum((r.prompt_tokens or r.input_tokens or 0) for r in ok)
    summary: dict[str, Any] = {
        "completed": len(ok),
        "failed": len(failed),
        "duration": span_s,
        "max_concurrency": ctx.concurrency,
        "request_rate": ctx.target_rate if ctx.target_rate is not None else "inf",
        "burstiness": ctx.burstiness,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done_in_win) / span_s,
        "output_throughput": out_tokens_in_win / span_s,
        "total_token_throughput": (out_tokens_in_win + in_tokens_in_win) / span_s,
        "request_goodput": slo_block["goodput"] if not ctx.slo.is_empty() else None,
    }
    for short, key in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("itl", "itl_chunk_ms"), ("e2el", "e2e_ms")):
        s = m[key]
        summary[f"mean_{short}_ms"] = s.get("mean")
        summary[f"median_{short}_ms"] = s.get("p50")
        summary[f"std_{short}_ms"] = s.get("std")
        for p in (90, 95, 99):
            summary[f"p{p}_{short}_ms"] = s.get(f"p{p}")
    summary["phasebench"] = {
        "scenario": ctx.scenario,
        "valid": valid,
        "partial": ctx.partial,
        "reasons": reasons,
        "warnings": warnings,
        "window_ns": [w0, w1],
        "metrics": m,
        "slo": slo_block,
        "errors": dict(errors),
        "client": client,
        "streams": streams,
        "tokens": {
            "usage_minus_client": describe(usage_diffs),
            "length_mismatch": length_mismatch,
            "output_tokens_source": dict(Counter(r.output_tokens_source or "none" for r in ok)),
        },
        "server_timing": {
            "prompt_ms": describe(server_prompt_ms),
            "tpot_ms": describe(server_tpot),
        },
        "workload": workload_block(ok),
    }
    return summary


# Thresholds of the honesty checks (documented in docs/metrics.md).
SEND_LAG_P99_LIMIT_MS = 10.0
CLIENT_CPU_LIMIT = 0.85
CPU_CHECK_MIN_WALL_S = 2.0  # shorter runs: start-up dominates the CPU average, which then says nothing
LOOP_LAG_P99_LIMIT_MS = 1.0
LOOP_LAG_TTFT_FRACTION = 0.05
LOOP_LAG_MIN_SAMPLES = 20  # 100 ms of heartbeats
COALESCED_FRACTION_LIMIT = 0.01  # raw transport: token chunks stamped with a later segment's time
HOST_BUSY_FRACTION = 0.25  # other processes using more than a quarter of the cores
RATE_TOLERANCE = 0.10
MLPERF_MIN_DURATION_S = 600.0
MLPERF_MIN_QUERIES = 24576  # LoadGen's min_query_count for the llama2-70b server scenario (its dataset size)


def mean_in_flight(summary: dict[str, Any]) -> float | None:
    """Mean requests in flight over the measured window, by Little's law: request throughput × mean E2E."""
    rps, e2e = summary.get("request_throughput"), summary.get("mean_e2el_ms")
    return rps * e2e / 1e3 if rps and e2e else None


def small_rate_warning(completed: int, span_s: float, offered: float | None, goodput: float | None) -> str:
    """The warning for a throughput/goodput counted from fewer than MIN_RATE_REQUESTS completed requests."""
    text = (f"small sample: request throughput and goodput count only {completed} completed request(s) "
            f"(fewer than {MIN_RATE_REQUESTS})")
    if completed:
        text += f", so they are uncertain by about ±1/√{completed} = ±{1 / math.sqrt(completed):.0%}"
    rate = max(completed / span_s, goodput or 0.0)
    if offered and rate > offered:
        text += f"; {rate:.2f}/s here exceeds the offered {offered:.2f}/s, which a longer run would not"
    return text + ": run longer for a rate to rely on"


def check_validity(
    m: dict[str, Any],
    client: dict[str, Any],
    errors: Counter,
    length_mismatch: int,
    n: int,
    span_s: float,
    ctx: RunContext,
    slo_block: dict[str, Any],
    streams: dict[str, int] | None = None,
    completed: int | None = None,
) -> tuple[bool, list[str], list[str]]:
    reasons: list[str] = []
    warnings: list[str] = list(ctx.extra_warnings)
    if completed is not None and 0 < n and completed < MIN_RATE_REQUESTS:
        warnings.append(small_rate_warning(completed, span_s, ctx.target_rate, slo_block.get("goodput")))
    if ctx.stopped:
        reasons.append(f"partial: {ctx.stopped}")
    elif ctx.partial:
        reasons.append("partial: the run was interrupted before it finished")
    if n == 0:
        reasons.append("no requests in the measurement window")
    lag = m["send_lag_ms"].get("p99")
    if ctx.scenario in ("server", "trace") and lag is not None and lag > SEND_LAG_P99_LIMIT_MS:
        reasons.append(
            f"client fell behind its schedule: send-lag p99 {lag:.1f} ms > {SEND_LAG_P99_LIMIT_MS:g} ms"
        )
    ttft50 = m["ttft_ms"].get("p50")
    lag_limit = max(LOOP_LAG_P99_LIMIT_MS, LOOP_LAG_TTFT_FRACTION * (ttft50 or 0.0))
    limit_text = f"limit {lag_limit:.1f} ms = max({LOOP_LAG_P99_LIMIT_MS:g} ms, {LOOP_LAG_TTFT_FRACTION:.0%} of median TTFT)"
    if client.get("transport") == "raw":
        # chunk times are the kernel's: a late read does not move them; what can is a read that carried several
        # events (stamped with its last segment), bounded per request by ttft_uncertainty
        unc = (client.get("ttft_uncertainty_ms") or {}).get("p99")
        if unc is not None and unc > lag_limit:
            reasons.append(
                f"the client read late: first tokens shared a read with later events, so TTFT may be up to "
                f"{unc:.1f} ms late at p99 ({limit_text}); lower the load or use more --workers"
            )
        loop = client.get("loop_lag_ms") or {}
        lag99 = loop.get("p99")
        chunks = m["itl_chunk_ms"].get("count", 0) + m["ttft_ms"].get("count", 0)
        merged = client.get("coalesced_reads") or 0
        if (lag99 is not None and lag99 > lag_limit and chunks
                and merged > COALESCED_FRACTION_LIMIT * chunks):
            reasons.append(
                f"the client read late: {merged / chunks:.0%} of token chunks shared a read with later ones (the "
                f"kernel stamps a late read with its last segment), and the event loop was {lag99:.1f} ms behind at "
                f"p99 ({limit_text}), so ITL may be off by that much; lower the load or use more --workers"
            )
    else:
        loop = client.get("loop_lag_ms") or {}
        lag99 = loop.get("p99")
        if lag99 is not None and loop.get("count", 0) >= LOOP_LAG_MIN_SAMPLES and lag99 > lag_limit:
            reasons.append(
                f"the client read late: its event loop was {lag99:.1f} ms behind at p99 ({limit_text}), so TTFT "
                f"and ITL carry up to that much of the client's own delay; lower the load or give the client more cores"
            )
    cpu = client.get("cpu_fraction")
    wall = client.get("wall_s") or 0.0
    if cpu is not None and cpu > CLIENT_CPU_LIMIT and wall >= CPU_CHECK_MIN_WALL_S:
        warnings.append(
            f"the client used {cpu:.0%} of a core over {wall:.0f} s (warning above {CLIENT_CPU_LIMIT:.0%}): "
            f"near its ceiling; the loop-lag check above says whether that distorted the figures"
        )
    host = client.get("host") or {}
    other, cores = host.get("other_cores"), host.get("cores") or 1
    if other is not None and wall >= CPU_CHECK_MIN_WALL_S and other > HOST_BUSY_FRACTION * cores:
        warnings.append(
            f"the host was busy: other processes used {other:.1f} of {cores} cores during the run (not phasebench, "
            f"not the server under test); on a shared machine that alone can halve a measured throughput"
        )
    if streams and streams.get("buffered"):
        b, e = streams["buffered"], max(streams.get("eligible", 0), 1)
        text = (f"{b} of {e} streams arrived all at once (the server or a proxy buffered them): their TPOT and ITL "
                f"are not the server's decode speed")
        if b > e / 2:
            reasons.append(text)
        else:
            warnings.append(text)
    tr, ar = client.get("target_rate"), client.get("achieved_send_rate")
    if ctx.scenario == "server" and tr and ar and n >= 50 and abs(ar - tr) / tr > RATE_TOLERANCE * 3:
        warnings.append(f"achieved send rate {ar:.2f}/s differs from the target {tr:.2f}/s by > 30%")
    if errors:
        total_err = sum(errors.values())
        detail = ", ".join(f"{k}: {v}" for k, v in errors.most_common())
        warnings.append(f"{total_err} of {n} requests failed ({detail})")
        if total_err > 0.05 * max(n, 1):
            reasons.append(f"{total_err / max(n, 1):.0%} of requests failed")
    if ctx.exact_output and length_mismatch:
        warnings.append(
            f"{length_mismatch} requests returned fewer output tokens than asked (the server may not honour ignore_eos)"
        )
    for c in slo_block.get("constraints", []):
        if not c["ok"]:
            v = "none" if c["value"] is None else f"{c['value']:.1f}"
            reasons.append(f"latency constraint failed: p{c['percentile']:g} {c['metric']} {v} > {c['limit']:g}")
    if ctx.mlperf:
        if span_s < MLPERF_MIN_DURATION_S:
            reasons.append(f"MLPerf: run lasted {span_s:.0f} s < {MLPERF_MIN_DURATION_S:.0f} s minimum")
        if n < MLPERF_MIN_QUERIES:
            reasons.append(f"MLPerf: {n} queries < {MLPERF_MIN_QUERIES} minimum")
    return (not reasons, reasons, warnings)
