"""The report's plots, drawn with matplotlib (Agg, no display) into PNG bytes. Several runs share each axis.

Each function takes the runs being reported (each may be a single run, a sweep or a plan) and returns a
:class:`Plot` or None when the runs hold nothing to draw for it.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .. import metrics as M
from ..metrics import mean_in_flight
from ..records import RequestRecord
from ..results import Run


def _mpl():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("reports need matplotlib: pip install 'phasebench[plots]'") from None
    return plt


@dataclass
class Plot:
    key: str
    title: str
    caption: str
    png: bytes


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def ok_records(run: Run) -> list[RequestRecord]:
    return [r for leaf in run.leaves() for r in leaf.records if r.ok and not r.warmup]


def _png(fig) -> bytes:
    plt = _mpl()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _discard(fig) -> None:  # noqa: ANN001 - a figure with nothing to show is closed, not left open
    _mpl().close(fig)
    return None


def _fig(ncols: int = 1):
    plt = _mpl()
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols if ncols > 1 else 7.5, 4.2))
    return fig, axes


def zero_based(a) -> None:
    """Linear axes start at 0, so a 1% change looks like 1% and not like a cliff; log axes say so in their label."""
    for axis, lim, label, get in (("x", a.set_xlim, a.set_xlabel, a.get_xlabel), ("y", a.set_ylim, a.set_ylabel,
                                                                               a.get_ylabel)):
        scale = a.get_xscale() if axis == "x" else a.get_yscale()
        if scale == "linear":
            lo, hi = (a.get_xlim() if axis == "x" else a.get_ylim())
            if lo > 0 or hi > 0:
                lim(min(lo, 0), max(hi, 0))
        elif "log scale" not in get():
            label(f"{get()} (log scale)")


def _axes(axes, *labels: tuple[str, str]) -> None:  # noqa: ANN001
    """Label each axis (x, y), start it at zero, add a light grid and a small legend."""
    for a, (x, y) in zip(axes, labels):
        a.set_xlabel(x)
        a.set_ylabel(y)
        zero_based(a)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)


def prefill(runs: list[Run], names: list[str]) -> Plot | None:
    fig, ax = _fig()
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        alone = [leaf for leaf in run.leaves() if leaf.ran_alone]
        recs = [r for leaf in alone for r in leaf.records if r.ok and not r.warmup] if alone else ok_records(run)
        pts = [((r.prompt_tokens or r.input_tokens), M.ttft_ms(r)) for r in recs]
        pts = [(x, y) for x, y in pts if x and y is not None]
        if len({x for x, _ in pts}) < 2:
            continue
        c = COLORS[i % len(COLORS)]
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=8, alpha=0.35, color=c)
        by: dict[int, list[float]] = defaultdict(list)
        for x, y in pts:
            by[x].append(y)
        ks = sorted(by)
        ax.plot(ks, [float(np.median(by[k])) for k in ks], "-o", color=c, label=f"{name} (median)")
        drawn = True
    if not drawn:
        return _discard(fig)
    _axes([ax], ("input tokens", "TTFT (ms)"))
    return Plot("prefill", "Prefill: TTFT against input length",
                "Each dot is one request; the line joins medians. Prefill is compute-bound: TTFT grows with the prompt.",
                _png(fig))


def _conc(leaf: Run) -> float | None:
    """Closed loop: its concurrency; open loop: the mean in flight."""
    sp = leaf.manifest.get("spec") or {}
    if leaf.closed_loop and sp.get("concurrency"):
        return float(sp["concurrency"][0]) if sp.get("scenario") == "concurrency" else 1.0
    return mean_in_flight(leaf.summary)


def _decode_leaves(run: Run, closed: bool | None = None) -> list[tuple[float, float, float, float]]:
    """(concurrency, median TPOT, output throughput, p50 E2E) for each leaf that decoded more than one token
    (only closed-loop leaves, or only open-loop ones, when ``closed`` says so)."""
    out = []
    for leaf in run.leaves():
        if closed is not None and leaf.closed_loop != closed:
            continue
        s = leaf.summary
        c, tpot = _conc(leaf), s.get("median_tpot_ms")
        if c and tpot and s.get("output_throughput"):
            out.append((c, tpot, s["output_throughput"], s.get("median_e2el_ms") or 0))
    return sorted(out)


def decode(runs: list[Run], names: list[str]) -> Plot | None:
    fig, ax = _fig(2)
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        c = COLORS[i % len(COLORS)]
        pts = _decode_leaves(run, closed=True)
        if pts:
            xs = [p[0] for p in pts]
            ax[0].plot(xs, [p[1] for p in pts], "-o", color=c, label=name)
            ax[1].plot(xs, [p[2] for p in pts], "-o", color=c, label=name)
            drawn = True
        opn = _decode_leaves(run, closed=False)   # open-loop runs: placed at their mean in-flight count
        if opn:
            ax[0].plot([p[0] for p in opn], [p[1] for p in opn], "x", ms=9, color=c, label=f"{name} (open loop)")
            ax[1].plot([p[0] for p in opn], [p[2] for p in opn], "x", ms=9, color=c, label=f"{name} (open loop)")
            drawn = True
    if not drawn:
        return _discard(fig)
    _axes(ax, ("concurrency (requests in flight)", "TPOT p50 (ms)"), ("concurrency (requests in flight)", "output tokens/s"))
    return Plot("decode", "Decode: TPOT and throughput against concurrency",
                "Decode is memory-bound: batching shares each weight read among sequences, so throughput rises "
                "while TPOT grows slowly, until compute or the KV cache binds.", _png(fig))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (latency, throughput) no other point beats on both (lower latency and higher throughput)."""
    front = []
    best = -np.inf
    for lat, thr in sorted(points, key=lambda p: (p[0], -p[1])):
        if thr > best:
            front.append((lat, thr))
            best = thr
    return front


def tradeoff(runs: list[Run], names: list[str]) -> Plot | None:
    fig, ax = _fig()
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        pts = [(p[1], p[2]) for p in _decode_leaves(run)]
        if len(pts) < 2:
            continue
        c = COLORS[i % len(COLORS)]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=c, alpha=0.6, label=name)
        f = pareto_front(pts)
        ax.plot([p[0] for p in f], [p[1] for p in f], "--", color=c, label=f"{name}: Pareto front")
        drawn = True
    if not drawn:
        return _discard(fig)
    _axes([ax], ("TPOT p50 (ms)  — latency", "output tokens/s  — throughput"))
    return Plot("tradeoff", "Throughput against latency across the sweep",
                "Up and left is better; the dashed line is the Pareto front: no other point is both faster and "
                "higher-throughput.", _png(fig))


def cdfs(runs: list[Run], names: list[str]) -> Plot | None:
    fig, ax = _fig(3)
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        recs = ok_records(run)
        c = COLORS[i % len(COLORS)]
        for a, (label, fn) in zip(ax, (("TTFT (ms)", M.ttft_ms), ("TPOT (ms)", M.tpot_ms), ("E2E (ms)", M.e2e_ms))):
            v = np.sort([x for x in (fn(r) for r in recs) if x is not None])
            if len(v):
                a.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=c, label=name)
                a.set_xlabel(label)
                drawn = True
    if not drawn:
        return _discard(fig)
    ax[0].set_ylabel("fraction of requests ≤ x")
    for a in ax:
        zero_based(a)
        a.grid(alpha=0.3)
        a.axhline(0.99, color="grey", lw=0.6, ls=":")
    ax[0].legend(fontsize=8)
    return Plot("cdf", "Latency distributions (CDF)", "The dotted line marks p99: the tail an SLO is usually set on.",
                _png(fig))


def _clock_leaf(run: Run) -> Run:
    """The step whose clock a timeline shows: each step of a sweep or plan has its own, so one is drawn: the
    server step, or else the longest."""
    ls = run.leaves()
    return next((x for x in ls if x.path and x.path.name == "server"), None) or \
        max(ls, key=lambda x: x.summary.get("duration") or 0)


def timeline(runs: list[Run], names: list[str]) -> Plot | None:
    fig, ax = _fig(2)
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        leaf = _clock_leaf(run)
        if run.children and leaf.path:
            name = f"{name}: {leaf.path.name}"
        recs = [r for r in leaf.records if r.sent_ns]
        if not recs:
            continue
        t0 = min(r.scheduled_ns or r.sent_ns for r in recs)
        ev = sorted([(r.sent_ns, 1) for r in recs] + [(r.end_ns or r.sent_ns, -1) for r in recs])
        xs, ys, cur = [], [], 0
        for t, d in ev:
            cur += d
            xs.append((t - t0) / 1e9)
            ys.append(cur)
        c = COLORS[i % len(COLORS)]
        ax[0].step(xs, ys, where="post", color=c, label=name)
        chunks = [((ns - t0) / 1e9, n) for r in recs for ns, n in zip(r.chunk_ns, r.chunk_tokens or [1] * len(r.chunk_ns))]
        if chunks:
            end = max(t for t, _ in chunks)
            width = max(end / 60, 0.1)  # ~60 bins over the run, never finer than 100 ms
            bins = np.arange(0, end + width, width)
            h, _ = np.histogram([t for t, _ in chunks], bins=bins, weights=[n for _, n in chunks])
            ax[1].step(bins[:-1], h / width, where="post", color=c, label=name)
        drawn = True
    if not drawn:
        return _discard(fig)
    _axes(ax, ("time (s)", "requests in flight"), ("time (s)", "output tokens/s"))
    return Plot("timeline", "Load over time", "In-flight requests and the token rate the client saw, second by second.",
                _png(fig))


def roofline(runs: list[Run], names: list[str]) -> Plot | None:
    blocks = [(name, i, leaf, (leaf.summary.get("phasebench") or {}).get("roofline"))
              for i, (run, name) in enumerate(zip(runs, names)) for leaf in run.leaves()]
    blocks = [b for b in blocks if b[3] and not b[3].get("error") and ("mbu" in b[3] or "mfu" in b[3])]
    if not blocks:
        return None
    fig, ax = _fig()
    seen_hw = set()
    for name, i, leaf, b in blocks:
        c = COLORS[i % len(COLORS)]
        bw, peak = b["peak_bandwidth_gbps"] * 1e9, b["peak_tflops"] * 1e12
        if b["hardware"] not in seen_hw:
            xs = np.geomspace(0.1, 1e4, 200)
            ax.plot(xs, np.minimum(peak, bw * xs), color="black" if not seen_hw else "grey", lw=1.2,
                    label=f"roofline: {b['hardware']} ({b['peak_bandwidth_gbps']:.0f} GB/s, {b['peak_tflops']:.2f} TFLOP/s)")
            seen_hw.add(b["hardware"])
        if "mbu" in b and b.get("decode_flops_per_step"):
            ax.scatter(b["decode_flops_per_step"] / b["decode_bytes_per_step"], b["decode_achieved_tflops"] * 1e12,
                       marker="o", color=c, s=30)
        if "mfu" in b and b.get("prefill_bytes") and (leaf.ran_alone or len(blocks) == 1):
            ax.scatter(b["prefill_flops"] / b["prefill_bytes"], b["prefill_achieved_tflops"] * 1e12, marker="^",
                       color=c, s=30)
    ax.scatter([], [], marker="o", color="grey", label="decode (measured)")
    ax.scatter([], [], marker="^", color="grey", label="prefill (measured)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    zero_based(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return Plot("roofline", "Where each phase sits against the roofline",
                "Decode (circles) sits far left, under the bandwidth slope: memory-bound. Prefill (triangles) sits "
                "to the right, toward the compute roof. The gap to the line is what the stack leaves on the table. "
                "Each point is one step's own roofline block (at its mean batch); the decode MBU and prefill MFU a "
                "plan states are its verdicts' figures, from the steps named there. Both axes are logarithmic.",
                _png(fig))


def server_timeline(runs: list[Run], names: list[str]) -> Plot | None:
    """The engine's own view over time (``server_metrics.jsonl``): its running and waiting requests beside the
    client's in-flight count, and its KV-cache usage and preemptions."""
    import orjson

    fig, ax = _fig(2)
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        leaf = _clock_leaf(run)
        f = leaf.path / "server_metrics.jsonl" if leaf.path else None
        if f is None or not f.is_file():
            continue
        rows = [orjson.loads(x) for x in f.read_bytes().splitlines() if x.strip()]
        if not rows:
            continue
        name = f"{name}: {leaf.path.name}" if run.children else name
        c = COLORS[i % len(COLORS)]
        t = [r["t_s"] for r in rows]
        if any("running" in r for r in rows):
            ax[0].step(t, [r.get("running", 0) for r in rows], where="post", color=c, label=f"{name} running (server)")
        if any("waiting" in r for r in rows):
            ax[0].step(t, [r.get("waiting", 0) for r in rows], where="post", color=c, ls="--", label=f"{name} waiting (server)")
        recs = [r for r in leaf.records if r.sent_ns and r.end_ns]
        if recs:  # client in flight sampled at the scrape times (the same run clock)
            inflight = [sum(1 for r in recs if r.sent_ns <= x * 1e9 <= r.end_ns) for x in t]
            ax[0].plot(t, inflight, color=c, ls=":", marker=".", label=f"{name} in flight (client)")
        if any("kv_usage" in r for r in rows):
            ax[1].plot(t, [100 * r.get("kv_usage", 0) for r in rows], color=c, label=f"{name} KV cache used %")
        if any("preemptions" in r for r in rows):
            ax[1].step(t, [r.get("preemptions", 0) for r in rows], where="post", color=c, ls="--",
                       label=f"{name} preemptions (cumulative)")
        drawn = True
    if not drawn:
        return None
    _axes(ax, ("time (s)", "requests"), ("time (s)", "% / count"))
    return Plot("server_timeline", "The engine over time (its own metrics)",
                "From the engine's Prometheus metrics, scraped about once a second: its running and waiting "
                "requests beside the client's in-flight count, its KV-cache usage and preemptions.", _png(fig))


def prefill_new(runs: list[Run], names: list[str]) -> Plot | None:
    """TTFT against the *new* (uncached) prompt tokens beside TTFT against the whole prompt, for runs whose server
    reported cached tokens (multi-turn conversations, traces with shared prefixes)."""
    fig, axes = _fig(2)
    drawn = False
    for i, (run, name) in enumerate(zip(runs, names)):
        recs = [r for r in ok_records(run) if r.cached_tokens is not None]
        pts = [(r.prompt_tokens or r.input_tokens, M.new_prompt_tokens(r), M.ttft_ms(r)) for r in recs]
        pts = [(a, b, y) for a, b, y in pts if a and b is not None and y is not None]
        if len(pts) < 2 or not any(a != b for a, b, _ in pts):
            continue
        c = COLORS[i % len(COLORS)]
        axes[0].scatter([a for a, _, _ in pts], [y for *_, y in pts], s=8, alpha=0.4, color=c, label=name)
        axes[1].scatter([b for _, b, _ in pts], [y for *_, y in pts], s=8, alpha=0.4, color=c, label=name)
        drawn = True
    if not drawn:
        _mpl().close(fig)
        return None
    _axes(axes, ("prompt tokens", "TTFT (ms)"), ("new (uncached) prompt tokens", "TTFT (ms)"))
    return Plot("prefill_new", "Prefill: TTFT against prompt length and against the new tokens",
                "Each dot is one request. With a prefix cache, TTFT follows the tokens the server had to prefill "
                "(prompt − cached, as the server reported), not the prompt length.", _png(fig))


ALL = (prefill, prefill_new, decode, tradeoff, cdfs, timeline, roofline, server_timeline)
