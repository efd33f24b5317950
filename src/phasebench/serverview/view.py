"""What the engine says about a run, phase by phase, beside what the client measured.

``ENGINES`` names, per engine, the Prometheus families phasebench reads: latency histograms (queue, prefill,
decode, TTFT, inter-token, TPOT, end-to-end), gauges (running, waiting, KV-cache usage) and counters (tokens,
preemptions, prefix-cache hits). Histograms and counters are differenced between the scrape before and the
scrape after the run; means come from ``_sum``/``_count``, percentiles are estimated from the buckets (and
labelled ``_est``). An engine phasebench does not know keeps its raw families, differenced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .scrape import Histogram, Scraper, Snapshot


@dataclass(frozen=True)
class EngineMetrics:
    prefix: tuple[str, ...]
    phases: dict[str, tuple[str, ...]]  # phase -> histogram families (seconds), first present wins
    gauges: dict[str, tuple[str, ...]]
    counters: dict[str, tuple[str, ...]]


ENGINES: dict[str, EngineMetrics] = {
    "vllm": EngineMetrics(
        ("vllm:",),
        {"queue": ("vllm:request_queue_time_seconds",),
         "prefill": ("vllm:request_prefill_time_seconds",),
         "decode": ("vllm:request_decode_time_seconds",),
         "ttft": ("vllm:time_to_first_token_seconds",),
         "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
         "tpot": ("vllm:request_time_per_output_token_seconds",),
         "e2e": ("vllm:e2e_request_latency_seconds",),
         "inference": ("vllm:request_inference_time_seconds",)},
        {"running": ("vllm:num_requests_running",), "waiting": ("vllm:num_requests_waiting",),
         "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")},
        {"preemptions": ("vllm:num_preemptions_total",),
         "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
         "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
         "cached_tokens": ("vllm:prompt_tokens_cached_total",),
         "prompt_tokens": ("vllm:prompt_tokens_total",), "generation_tokens": ("vllm:generation_tokens_total",),
         "requests": ("vllm:request_success_total",)},
    ),
    "sglang": EngineMetrics(
        ("sglang:",),
        {"queue": ("sglang:queue_time_seconds",),
         "ttft": ("sglang:time_to_first_token_seconds",),
         "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
         "e2e": ("sglang:e2e_request_latency_seconds",)},
        {"running": ("sglang:num_running_reqs",), "waiting": ("sglang:num_queue_reqs",),
         "kv_usage": ("sglang:token_usage",), "cache_hit_rate": ("sglang:cache_hit_rate",)},
        {"prompt_tokens": ("sglang:prompt_tokens_total",), "generation_tokens": ("sglang:generation_tokens_total",),
         "cached_tokens": ("sglang:cached_tokens_total",), "requests": ("sglang:num_requests_total",),
         "preemptions": ("sglang:num_retracted_reqs_total",)},
    ),
    "tgi": EngineMetrics(
        ("tgi_",),
        {"queue": ("tgi_request_queue_duration",), "inference": ("tgi_request_inference_duration",),
         "tpot": ("tgi_request_mean_time_per_token_duration",), "e2e": ("tgi_request_duration",)},
        {"running": ("tgi_batch_current_size",), "waiting": ("tgi_queue_size",)},
        {"requests": ("tgi_request_success_total",)},
    ),
    "llamacpp": EngineMetrics(
        ("llamacpp:",),
        {},
        {"running": ("llamacpp:requests_processing",), "waiting": ("llamacpp:requests_deferred",),
         "kv_usage": ("llamacpp:kv_cache_usage_ratio",)},
        {"prompt_tokens": ("llamacpp:prompt_tokens_total",), "prompt_seconds": ("llamacpp:prompt_seconds_total",),
         "generation_tokens": ("llamacpp:tokens_predicted_total",),
         "generation_seconds": ("llamacpp:tokens_predicted_seconds_total",),
         "decode_calls": ("llamacpp:n_decode_total",), "cached_tokens": ("llamacpp:prompt_tokens_cached_total",)},
    ),
    "trtllm": EngineMetrics(
        ("trtllm_", "trtllm:", "trtllm_iter:"),
        {"queue": ("trtllm_request_queue_time_seconds", "trtllm:request_queue_time_seconds"),
         "ttft": ("trtllm_time_to_first_token_seconds", "trtllm:time_to_first_token_seconds"),
         "tpot": ("trtllm_time_per_output_token_seconds", "trtllm:time_per_output_token_seconds"),
         "e2e": ("trtllm_e2e_request_latency_seconds", "trtllm:e2e_request_latency_seconds")},
        {"running": ("trtllm_iter:numActiveRequests",), "waiting": ("trtllm_iter:numQueuedRequests",),
         "kv_usage": ("trtllm_kv_cache_utilization", "trtllm:kv_cache_utilization")},
        {"requests": ("trtllm_request_success_total", "trtllm:request_success_total")},
    ),
}


def engine_of(snap: Snapshot) -> str:
    """Which engine wrote these metrics, from its family names (the prefix most names carry)."""
    names = snap.names()
    best, n_best = "unknown", 0
    for eng, m in ENGINES.items():
        n = sum(1 for x in names if x.startswith(m.prefix))
        if n > n_best:
            best, n_best = eng, n
    return best


@dataclass
class PhaseStat:
    """One server-side latency histogram differenced over the run (ms). Percentiles are bucket estimates."""

    count: float
    mean_ms: float | None
    p50_ms_est: float | None
    p90_ms_est: float | None
    p99_ms_est: float | None
    family: str

    @classmethod
    def of(cls, h: Histogram, family: str) -> "PhaseStat":
        def ms(v: float | None) -> float | None:
            return None if v is None else v * 1000

        return cls(h.count, ms(h.sum / h.count) if h.count > 0 else None, ms(h.quantile(0.5)), ms(h.quantile(0.9)),
                   ms(h.quantile(0.99)), family)


@dataclass
class TTFTSplit:
    """The client's mean TTFT, cut into what the server says it spent and the rest."""

    client_ttft_ms: float
    server_queue_ms: float | None
    server_prefill_ms: float | None
    rest_ms: float | None  # client TTFT - queue - prefill: HTTP, frontend, scheduling, network, client
    server_ttft_ms: float | None
    frontend_ms: float | None  # server TTFT - queue - prefill (tokenize, schedule, detokenize, first chunk)
    network_client_ms: float | None  # client TTFT - server TTFT


@dataclass
class ServerView:
    engine: str
    source: str
    scrapes: int
    window_s: float
    phases: dict[str, PhaseStat] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)  # differenced over the run
    families: dict[str, str] = field(default_factory=dict)  # counter -> the metric family it was read from
    gauges: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {max, mean, last}
    derived: dict[str, float] = field(default_factory=dict)
    ttft_split: TTFTSplit | None = None
    raw: dict[str, float] | None = None  # unknown engine: every differenced counter/histogram sum and count
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    series_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(snap: Snapshot, names: tuple[str, ...]) -> tuple[str, float] | None:
    for n in names:
        v = snap.get(n)
        if v is not None:
            return n, v
    return None


def series_row(engine: str) -> Any:
    """The time-series line for one scrape: running/waiting/KV usage as read, counters since 'before'."""
    m = ENGINES.get(engine)

    def row(snap: Snapshot, before: Snapshot) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if m is None:
            return out
        for k, names in m.gauges.items():
            got = _pick(snap, names)
            if got:
                out[k] = got[1]
        for k in ("preemptions", "prefix_cache_hits", "cached_tokens"):
            if k in m.counters:
                a, b = _pick(snap, m.counters[k]), _pick(before, m.counters[k])
                if a:
                    out[k] = a[1] - (b[1] if b else 0.0)
        return out

    return row


LATE_FIRST_TOKEN_MS = 50.0  # mean client TTFT - engine TTFT above which the first token left late


def build_view(scraper: Scraper, engine: str, client_ttft_ms: float | None, completed: int,
               cached_tokens_client: int | None = None, prompt_tokens_client: int | None = None,
               deliberate_prefix: bool = False) -> ServerView:
    """Difference ``scraper.before``/``after`` into a ``ServerView`` and split the client's mean TTFT."""
    b, a = scraper.before, scraper.after
    assert b is not None and a is not None
    view = ServerView(engine=engine, source=scraper.source, scrapes=scraper.scrapes, window_s=(a.t_ns - b.t_ns) / 1e9)
    view.notes.append("histograms and counters differenced between the scrape before and the one after the run "
                      "(warm-up excluded, warmup/cooldown seconds included); *_est percentiles are estimated from "
                      "histogram buckets")
    m = ENGINES.get(engine)
    if m is None:
        view.raw = _raw_delta(a, b)
        view.notes.append("engine not recognised from its metric names: raw families kept")
        return view
    for phase, fams in m.phases.items():
        for f in fams:
            h = a.hist(f)
            if h is not None:
                d = h.minus(b.hist(f))
                if d.count > 0:
                    view.phases[phase] = PhaseStat.of(d, f)
                break
    for k, names in m.counters.items():
        got = _pick(a, names)
        if got:
            old = b.get(got[0])
            view.counters[k] = got[1] - (old or 0.0)
            view.families[k] = got[0]
    for k in m.gauges:
        vals = [row[k] for row in scraper.series if k in row]
        if vals:
            view.gauges[k] = {"max": max(vals), "mean": sum(vals) / len(vals), "last": vals[-1]}
    c = view.counters
    if c.get("prefix_cache_queries"):
        view.derived["prefix_cache_hit_rate"] = c.get("prefix_cache_hits", 0.0) / c["prefix_cache_queries"]
    if c.get("prompt_tokens") and "cached_tokens" in c:
        view.derived["prefix_cache_hit_rate"] = c["cached_tokens"] / c["prompt_tokens"]
    if engine == "llamacpp":
        if c.get("generation_tokens") and c.get("generation_seconds") is not None:
            view.derived["decode_ms_per_token"] = 1000 * c["generation_seconds"] / c["generation_tokens"]
        if c.get("prompt_tokens") and c.get("prompt_seconds") is not None:
            view.derived["prefill_ms_per_token"] = 1000 * c["prompt_seconds"] / c["prompt_tokens"]
            if completed:
                view.derived["prefill_ms_per_request"] = 1000 * c["prompt_seconds"] / completed
        if c.get("decode_calls") and c.get("generation_tokens"):
            view.derived["tokens_per_decode_call"] = c["generation_tokens"] / c["decode_calls"]
    if client_ttft_ms is not None:
        view.ttft_split = _split(view, client_ttft_ms)
        late = view.ttft_split.network_client_ms
        server_ttft = view.ttft_split.server_ttft_ms
        if late is not None and server_ttft is not None and late > max(LATE_FIRST_TOKEN_MS, 0.2 * server_ttft):
            view.warnings.append(
                f"the client saw the first token {late:.0f} ms (mean) after the engine counted it: it waited in the "
                "server's HTTP frontend, behind the machine's other work, or (to a remote server) on the network, "
                "so the client's "
                "TTFT holds that time; where the backlog drains, the client's ITL/TPOT come out shorter by as much, "
                "else the whole stream (and E2E) is that much later; the engine's own TTFT is the cleaner prefill "
                "figure for this run")
    rate = view.derived.get("prefix_cache_hit_rate")
    if rate is None and cached_tokens_client is not None and prompt_tokens_client:
        rate = cached_tokens_client / prompt_tokens_client
        view.derived["prefix_cache_hit_rate_from_usage"] = rate
    if rate is not None and rate > 0.1 and not deliberate_prefix:
        view.warnings.append(
            f"the engine served {rate:.0%} of prompt tokens from its prefix cache: TTFT is not a cold prefill "
            "(run without --seed for fresh prompts, or measure caching on purpose with --prefix-tokens)")
    return view


def prompt_cache_from_counters(view: ServerView, completed: int) -> dict[str, Any] | None:
    """The ``prompt_cache`` block from the engine's own counters, differenced over the run, for a server that
    reports no cached tokens per request: vLLM's prefix-cache queries and hits (tokens), else cached / prompt
    token counters (SGLang, llama.cpp, vLLM's ``prompt_tokens_cached``), else SGLang's ``cache_hit_rate`` gauge
    (its mean over the run's scrapes, not windowed: approximate). None when the engine counts neither."""
    c, f = view.counters, view.families
    if c.get("prefix_cache_queries"):
        prompt, cached = c["prefix_cache_queries"], c.get("prefix_cache_hits", 0.0)
        used = [f["prefix_cache_hits"], f["prefix_cache_queries"]] if "prefix_cache_hits" in f else [f["prefix_cache_queries"]]
    elif c.get("prompt_tokens") and "cached_tokens" in c:
        prompt, cached, used = c["prompt_tokens"], c["cached_tokens"], [f["cached_tokens"], f["prompt_tokens"]]
    elif c.get("prompt_tokens") and "cache_hit_rate" in view.gauges:
        prompt = c["prompt_tokens"]
        cached = view.gauges["cache_hit_rate"]["mean"] * prompt
        used = ["sglang:cache_hit_rate (gauge: the mean of the run's scrapes, approximate)", f["prompt_tokens"]]
    else:
        return None
    cached = min(max(cached, 0.0), prompt)
    return {
        "source": "server counters",
        "counters": used,
        "requests_reporting": 0,
        "requests_not_reporting": completed,
        "prompt_tokens": round(prompt),
        "cached_tokens": round(cached),
        "new_tokens": round(prompt - cached),
        "cached_fraction": cached / prompt,
        "new_tokens_per_request": None,
        "prefill_new_tps": None,
        "note": "the server reports no cached tokens per request: run-level counts from its /metrics, differenced "
                "between the scrapes before and after the run (warm-up excluded)",
    }


def _split(view: ServerView, client: float) -> TTFTSplit:
    q = view.phases.get("queue")
    p = view.phases.get("prefill")
    t = view.phases.get("ttft")
    queue = q.mean_ms if q else None
    prefill = p.mean_ms if p else view.derived.get("prefill_ms_per_request")
    server_ttft = t.mean_ms if t else None
    known = (queue or 0.0) + (prefill or 0.0)
    have = queue is not None or prefill is not None
    return TTFTSplit(
        client_ttft_ms=client,
        server_queue_ms=queue,
        server_prefill_ms=prefill,
        rest_ms=client - known if have else None,
        server_ttft_ms=server_ttft,
        frontend_ms=server_ttft - known if (server_ttft is not None and have) else None,
        network_client_ms=client - server_ttft if server_ttft is not None else None,
    )


def _raw_delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, v in a.values.items():
        fam = name[: -len("_total")] if name.endswith("_total") else name
        base = fam.rsplit("_", 1)[0] if name.endswith(("_sum", "_count")) else fam
        typ = a.types.get(fam) or a.types.get(base) or a.types.get(name)
        if typ in ("counter", "histogram", "summary"):
            out[name] = v - b.values.get(name, 0.0)
        else:
            out[name] = v
    return out


def summary_lines(view: dict[str, Any]) -> list[str]:
    """Plain lines for the terminal: the server's phases beside the client's TTFT."""
    out = []
    ph = view.get("phases") or {}
    parts = [f"{k} {v['mean_ms']:.1f}" for k, v in ph.items() if v.get("mean_ms") is not None]
    if parts:
        out.append(f"server ({view['engine']}) means, ms: " + ", ".join(parts))
    s = view.get("ttft_split")
    if s and s.get("rest_ms") is not None:
        out.append(f"client TTFT {s['client_ttft_ms']:.1f} ms = server queue {s['server_queue_ms'] or 0:.1f} + "
                   f"prefill {s['server_prefill_ms'] or 0:.1f} + rest {s['rest_ms']:.1f} "
                   "(HTTP, frontend, scheduling, network, client)")
    d = view.get("derived") or {}
    if "decode_ms_per_token" in d:
        out.append(f"server decode {d['decode_ms_per_token']:.2f} ms/token, prefill "
                   f"{d.get('prefill_ms_per_token', 0):.3f} ms/token")
    if "prefix_cache_hit_rate" in d:
        out.append(f"prefix cache: {d['prefix_cache_hit_rate']:.0%} of prompt tokens served from cache")
    return out
