"""Rendering of ``phasebench study``: PNG figures (matplotlib, Agg), ``study.html`` (self-contained: figures as
data: URIs, the report's inline CSS, no script, all text escaped), ``study.md`` with the PNGs beside it, CSV
tables and ``study.json``; and the terminal summary. Every figure is labelled *predicted*."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..sim.gain import CSV_COLUMNS, GainTable
from ..study import Point, Study
from ..textsafe import markup as escape
from . import fmt as F
from .blocks import Block, Bullets, Figure, Heading, Para
from .blocks import Table as DocTable
from .blocks import to_html as page_html
from .blocks import to_markdown as page_markdown
from .plots import COLORS, Plot, _mpl, zero_based


def _png(fig, dpi: int = 80) -> bytes:
    """PNG bytes; the layout is set by each figure (no tight bounding box pass: many panels draw twice as slow)."""
    import io

    plt = _mpl()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()

PREDICTED = "predicted"


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _series(points: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.platform if not p.measured else f"{p.platform} (measured)", []).append(p)
    return out


def _band(ax, pts: list[Point], color: str, y=lambda p, v: v) -> None:
    have = [p for p in pts if p.low is not None and p.high is not None]
    if len(have) >= 2:
        ax.fill_between([p.x for p in have], [y(p, p.low) for p in have], [y(p, p.high) for p in have], color=color,
                        alpha=0.15, linewidth=0)


def plot_prefill(st: Study) -> Plot:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, (name, pts) in enumerate(_series(st.prefill).items()):
        c = _color(i)
        if pts[0].measured:
            ax.plot([p.x for p in pts], [p.value for p in pts], "s", color="black", label=f"{name}")
            continue
        ax.plot([p.x for p in pts], [p.value for p in pts], "o-", color=c, label=name, ms=3)
        _band(ax, pts, c)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("TTFT (ms), predicted")
    ax.set_title(f"{st.model}: prefill, TTFT against input length ({PREDICTED})")
    zero_based(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return Plot("ttft_vs_input", f"Prefill: TTFT against input length ({PREDICTED})",
                "Batch 1, no queueing. Shaded: the model's range where it gives one. Lower is better.", _png(fig))


def plot_decode(st: Study) -> Plot:
    plt = _mpl()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.4))
    ref_best = None
    for i, (name, pts) in enumerate(_series(st.decode).items()):
        c = _color(i)
        xs = [p.x for p in pts]
        if pts[0].measured:
            a1.plot(xs, [p.value for p in pts], "s", color="black", label=name)
            a2.plot(xs, [p.throughput for p in pts], "s", color="black", label=name)
            continue
        a1.plot(xs, [p.value for p in pts], "-", color=c, label=name)
        _band(a1, pts, c)
        a2.plot(xs, [p.throughput for p in pts], "-", color=c, label=name)
        _band(a2, pts, c, y=lambda p, v: p.x / (v / 1e3))
        if name == st.reference:
            ref_best = max(p.throughput for p in pts)
        cb = st.crossover.get(name)
        if cb:
            at = next(p for p in pts if p.x == cb)
            a2.plot([cb], [at.throughput], "o", color=c, ms=7, mfc="none", mew=2)
            a2.annotate(f"{cb}", (cb, at.throughput), textcoords="offset points", xytext=(4, -12), fontsize=8, color=c)
    if ref_best:
        a2.axhline(ref_best, color="gray", ls=":", lw=1)
        a2.text(1, ref_best, f" {st.reference} best", fontsize=8, color="gray", va="bottom")
    for ax, yl in ((a1, "TPOT (ms), predicted"), (a2, "decode throughput (output tokens/s), predicted")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (sequences decoding together)")
        ax.set_ylabel(yl)
        zero_based(ax)
        ax.grid(True, which="both", alpha=0.3)
    a1.set_title(f"TPOT against batch ({PREDICTED})")
    a2.set_title(f"decode throughput against batch ({PREDICTED}); ○ = crossover")
    a2.legend(fontsize=8)
    return Plot("decode_vs_batch", f"Decode: TPOT and throughput against batch ({PREDICTED})",
                f"Input {st.input_len}, output {st.output_len} tokens; curves end where the batch no longer fits. "
                f"Circles mark the crossover batch: the smallest batch at which a platform's decode throughput reaches "
                f"{st.reference}'s best.", _png(fig))


def plot_normalised(st: Study) -> Plot:
    plt = _mpl()
    metrics = list(dict.fromkeys(w.metric for w in st.winners))
    norms = ["raw", "per chip", "per watt", "per dollar"]
    fig, axes = plt.subplots(len(metrics), len(norms), figsize=(3.4 * len(norms), 2.6 * len(metrics)), squeeze=False)
    keys = [p.key for p in st.platforms]
    for i, m in enumerate(metrics):
        for j, n in enumerate(norms):
            ax = axes[i][j]
            w = next(x for x in st.winners if x.metric == m and x.normalisation == n)
            vals = [w.values.get(k) or 0.0 for k in keys]
            ax.bar(range(len(keys)), vals, color=[_color(k) for k in range(len(keys))])
            for k, key in enumerate(keys):
                if w.values.get(key) is None:
                    ax.text(k, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
            ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{m}\n{n} ({PREDICTED})" if j == 0 else f"{n} ({PREDICTED})", fontsize=8)
    fig.subplots_adjust(hspace=0.9, wspace=0.3, bottom=0.12)
    return Plot("normalised", f"Per phase, per chip, per watt and per dollar ({PREDICTED})",
                "Higher is better in every panel. Per watt uses TDP; per dollar the catalog's hourly price "
                "(n/a: no price).", _png(fig))


def _grid_axes(n: int):
    plt = _mpl()
    cols = min(5, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.axis("off")
    return fig, flat


def plot_gain_grid(gains: list[GainTable]) -> Plot | None:
    """One heat map per pair: goodput gain over bandwidth × input length, with the break-even line."""
    if not gains:
        return None
    import numpy as np

    fig, axes = _grid_axes(len(gains))
    for ax, g in zip(axes, gains):
        ins = sorted({c.input_tokens for c in g.grid})
        bws = sorted({c.bandwidth_gbps for c in g.grid})
        if not ins:
            ax.set_title(f"{g.prefill} → {g.decode}: no cell fits", fontsize=8)
            ax.axis("off")
            continue
        z = np.full((len(ins), len(bws)), np.nan)
        for c in g.grid:
            v = c.goodput_gain
            z[ins.index(c.input_tokens), bws.index(c.bandwidth_gbps)] = np.nan if v is None else min(v, 4.0)
        ax.imshow(np.log2(np.clip(z, 0.25, 4.0)), cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto", origin="lower")
        for (r, k), v in np.ndenumerate(z):
            ax.text(k, r, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
        # the break-even line: per input length, the break-even bandwidth in grid coordinates (log-interpolated)
        xs, ys = [], []
        for r, n in enumerate(ins):
            be = g.break_even_gbps.get(n)
            if be is not None:
                xs.append(float(np.interp(math.log(be), [math.log(b) for b in bws], range(len(bws)))))
                ys.append(r)
        if xs:
            ax.plot(xs, ys, "k--", lw=1.5)
        ax.set_xticks(range(len(bws)), [f"{b:g}" for b in bws], fontsize=7)
        ax.set_yticks(range(len(ins)), [str(n) for n in ins], fontsize=7)
        ax.set_xlabel("link GB/s", fontsize=7)
        ax.set_ylabel("input tokens", fontsize=7)
        ax.set_title(f"{g.prefill} → {g.decode}", fontsize=8)
    fig.suptitle(f"Disaggregation goodput gain at the SLO over the better colocated deployment ({PREDICTED}, simulated); "
                 "dashed: break-even", fontsize=9)
    fig.subplots_adjust(hspace=0.55, wspace=0.35, top=0.9)
    return Plot("disagg_gain_grid", f"Disaggregation gain over bandwidth × input length ({PREDICTED})",
                "Each panel: prefill platform → decode platform. Cell = disaggregated ÷ colocated goodput (requests/s "
                "meeting the SLO) under Poisson load at the stated fraction of the deployment's capacity; green > 1 "
                "(disaggregation serves more), red < 1. Dashed: where the gain reaches 1.", _png(fig))


def plot_gain_rate(gains: list[GainTable]) -> Plot | None:
    """One panel per pair: goodput gain and cost gain against request rate."""
    if not gains or not any(g.by_rate for g in gains):
        return None
    fig, axes = _grid_axes(len(gains))
    for k, (ax, g) in enumerate(zip(axes, gains)):
        xs = [c.rate for c in g.by_rate]
        gg = [c.goodput_gain if c.goodput_gain is not None and math.isfinite(c.goodput_gain) else float("nan")
              for c in g.by_rate]
        cg = [c.cost_gain if c.cost_gain is not None and math.isfinite(c.cost_gain) else float("nan") for c in g.by_rate]
        ax.plot(xs, gg, "o-", color=COLORS[0], label="goodput gain", ms=3)
        if any(not math.isnan(v) for v in cg):
            ax.plot(xs, cg, "s--", color=COLORS[2], label="cost gain", ms=3)
        ax.axhline(1.0, color="black", lw=1, ls=":")
        for r in g.break_even_rates:
            ax.axvline(r, color="gray", lw=1, ls="--")
        ax.set_title(f"{g.prefill} → {g.decode} ({g.ref_input} in, {g.ref_gbps:g} GB/s)", fontsize=8)
        ax.set_xlabel("requests/s offered", fontsize=7)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"Disaggregation gain against request rate ({PREDICTED}, simulated); dotted: break-even (gain 1)",
                 fontsize=9)
    fig.subplots_adjust(hspace=0.55, wspace=0.3, top=0.9)
    return Plot("disagg_gain_rate", f"Disaggregation gain against request rate ({PREDICTED})",
                "Goodput gain = disaggregated ÷ colocated goodput; cost gain = colocated ÷ disaggregated $/1M tokens "
                "at the SLO (> 1: disaggregation is cheaper; missing where a platform has no price). Dashed "
                "verticals: the rates where the goodput gain crosses 1.", _png(fig))


def build_plots(st: Study) -> list[Plot]:
    out = [plot_prefill(st), plot_decode(st), plot_normalised(st)]
    for p in (plot_gain_grid(st.gains), plot_gain_rate(st.gains)):
        if p:
            out.append(p)
    return out


# --- tables -----------------------------------------------------------------------------------------------
PREFILL_COLUMNS = ("platform", "input_tokens", "ttft_ms", "ttft_ms_low", "ttft_ms_high", "prefill_tokens_per_s",
                   "bound", "measured")
DECODE_COLUMNS = ("platform", "batch", "tpot_ms", "tpot_ms_low", "tpot_ms_high", "decode_tokens_per_s", "bound",
                  "measured", "crossover_batch")
WINNER_COLUMNS = ("metric", "normalisation", "unit", "winner", "platform", "value", "missing")


def tables(st: Study) -> dict[str, tuple[tuple[str, ...], list[dict[str, Any]]]]:
    pre = [{"platform": p.platform, "input_tokens": p.x, "ttft_ms": p.value, "ttft_ms_low": p.low, "ttft_ms_high": p.high,
            "prefill_tokens_per_s": p.throughput, "bound": p.bound, "measured": p.measured} for p in st.prefill]
    dec = [{"platform": p.platform, "batch": p.x, "tpot_ms": p.value, "tpot_ms_low": p.low, "tpot_ms_high": p.high,
            "decode_tokens_per_s": p.throughput, "bound": p.bound, "measured": p.measured,
            "crossover_batch": st.crossover.get(p.platform)} for p in st.decode]
    win = [{"metric": w.metric, "normalisation": w.normalisation, "unit": w.unit, "winner": w.winner, "platform": k,
            "value": v, "missing": w.missing.get(k)} for w in st.winners for k, v in w.values.items()]
    gains = [r for g in st.gains for r in g.rows()]
    return {"prefill.csv": (PREFILL_COLUMNS, pre), "decode.csv": (DECODE_COLUMNS, dec),
            "winners.csv": (WINNER_COLUMNS, win), "disagg.csv": (CSV_COLUMNS, gains)}


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _pair_rows(st: Study) -> list[list[str]]:
    out = []
    for g in st.gains:
        ref = next((c for c in g.by_rate if abs(c.rate - g.load * g.capacity_rps.get(g.ref_input, 0)) < 1e-9), None) \
            or (g.by_rate[len(g.by_rate) // 2] if g.by_rate else None)
        be = "; ".join(f"{n}: {g.break_even_note.get(n, '-')}" for n in sorted(g.break_even_gbps))
        out.append([f"{g.prefill} → {g.decode}", be or "-",
                    F.sig(ref.goodput_gain) if ref else "-", F.sig(ref.cost_gain) if ref else "-",
                    ", ".join(F.sig(r) for r in g.break_even_rates) or "none in range"])
    return out


PAIR_HEAD = ("prefill → decode", "break-even bandwidth per input length (goodput gain = 1)",
             "goodput gain (ref)", "cost gain (ref)", "break-even request rates (req/s)")


def _winner_rows(st: Study) -> tuple[list[str], list[list[str]]]:
    keys = [p.key for p in st.platforms]
    rows = []
    for w in st.winners:
        rows.append([w.metric, w.normalisation, *[F.sig(w.values.get(k)) if w.values.get(k) is not None
                                                   else f"n/a ({w.missing.get(k, '-')})" for k in keys],
                     w.winner or "-"])
    return ["metric", "normalisation", *keys, "winner"], rows


def _crossover_rows(st: Study) -> list[list[str]]:
    return [[k, "-" if v is None else str(v)] for k, v in st.crossover.items()]


# --- documents -------------------------------------------------------------------------------------------
def blocks(st: Study, plots: list[Plot]) -> list[Block]:
    """The study as report blocks: one source for ``study.html`` and ``study.md``."""
    head, rows = _winner_rows(st)
    out: list[Block] = [
        Heading(f"phasebench study: {st.model} (predicted)", 1),
        Para(f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}. Every figure is predicted by "
             "phasebench's phase model and serving simulator, not measured, except points marked measured.", "lead"),
        Heading("Assumptions"), Bullets(list(st.assumptions)), Bullets(list(st.notes), "warn"),
        Heading("Platforms"),
        DocTable("", ("platform", "name", "kind", "chips", "TDP W", "$ per hour", "efficiency", "notes"),
              [[p.key, p.name, p.kind, str(p.chips), F.sig(p.tdp_w),
                F.sig(p.price_per_hour) if p.price_per_hour is not None else "no price in the catalog", p.efficiency,
                "; ".join(p.notes)] for p in st.platforms], labels=3),
        Heading("Per-phase winners (predicted)"), DocTable("", head, rows, labels=2),
        Heading(f"Crossover batch against {st.reference} (predicted)"),
        DocTable("", ("platform", "smallest batch reaching its decode throughput"), _crossover_rows(st)),
    ]
    if st.gains:
        out += [Heading("Disaggregation under load (predicted, simulated)"), DocTable("", PAIR_HEAD, _pair_rows(st))]
    for p in plots:
        out += [Heading(p.title), Figure(p.key, p.title, p.caption, p.png)]
    out.append(Para("Tables: prefill.csv, decode.csv, winners.csv, disagg.csv and study.json beside this file. "
                    "This file is self-contained: it loads nothing from the network.", "small"))
    return out


def to_html(st: Study, plots: list[Plot]) -> str:
    return page_html(f"phasebench study: {st.model}", blocks(st, plots))


def to_markdown(st: Study, plots: list[Plot]) -> str:
    return page_markdown(blocks(st, plots), "")


def write_study(st: Study, out: Path) -> list[Path]:
    """Write the study into folder ``out``; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    plots = build_plots(st)
    written = []
    for p in plots:
        f = out / f"{p.key}.png"
        f.write_bytes(p.png)
        written.append(f)
    for name, (cols, rows) in tables(st).items():
        write_csv(out / name, cols, rows)
        written.append(out / name)
    (out / "study.json").write_text(json.dumps(st.to_dict(), indent=1, default=str), encoding="utf-8")
    (out / "study.html").write_text(to_html(st, plots), encoding="utf-8")
    (out / "study.md").write_text(to_markdown(st, plots), encoding="utf-8")
    return [*written, out / "study.json", out / "study.html", out / "study.md"]


def print_study(st: Study, console: Console) -> None:
    console.print(f"[bold]{escape(st.model)}[/] on {', '.join(escape(p.key) for p in st.platforms)}: "
                  "[italic]every figure predicted[/]")
    head, rows = _winner_rows(st)
    t = Table(title="Per-phase winners (predicted)", title_justify="left")
    for c in head:
        t.add_column(escape(c), justify="right" if c not in ("metric", "normalisation") else "left")
    for r in rows:
        t.add_row(*[escape(x) for x in r])
    console.print(t)
    if st.crossover:
        console.print(f"crossover batch (decode throughput reaches {escape(str(st.reference))}'s best): "
                      + ", ".join(f"{escape(k)} {v if v is not None else 'never (within memory)'}"
                                  for k, v in st.crossover.items()))
    if st.gains:
        t = Table(title="Disaggregation under load (predicted, simulated)", title_justify="left")
        for c in PAIR_HEAD:
            t.add_column(c)
        for r in _pair_rows(st):
            t.add_row(*[escape(x) for x in r])
        console.print(t)
    for n in st.notes:
        console.print(f"[yellow]note:[/] {escape(n)}")


def print_gain(g: GainTable, console: Console) -> None:
    """The gain table of one pair: bandwidth × input length, then request rate."""
    console.print(f"[bold]Disaggregated {escape(g.prefill)} → {escape(g.decode)} against the better colocated "
                  f"deployment[/] ({g.prefill_replicas}+{g.decode_replicas} replicas, {g.requests} Poisson requests per "
                  f"cell, {g.output_tokens} output tokens; predicted, simulated)")
    bws = sorted({c.bandwidth_gbps for c in g.grid})
    t = Table(title=f"goodput gain (cost gain) at {g.load:g} × capacity", title_justify="left")
    t.add_column("input tokens", justify="right")
    t.add_column("req/s", justify="right")
    for b in bws:
        t.add_column(f"{b:g} GB/s", justify="right")
    t.add_column("break-even", justify="left")
    for n in sorted({c.input_tokens for c in g.grid}):
        cells = {c.bandwidth_gbps: c for c in g.grid if c.input_tokens == n}
        first = next(iter(cells.values()))

        def cell(c) -> str:
            col = "green" if c.goodput_gain is not None and c.goodput_gain >= 1 else "red"
            return f"[{col}]{F.sig(c.goodput_gain)}[/] ({F.sig(c.cost_gain)})"
        t.add_row(str(n), F.sig(first.rate), *[cell(cells[b]) for b in bws], escape(g.break_even_note.get(n, "-")))
    console.print(t)
    t = Table(title=f"against request rate ({g.ref_input} input tokens, {g.ref_gbps:g} GB/s)", title_justify="left")
    for c in ("req/s", "colocated (best)", "goodput col / dis", "gain", "$/1M at SLO col / dis", "cost gain",
              "p99 TTFT col / dis ms", "p99 TPOT col / dis ms"):
        t.add_column(c, justify="right")
    for c in g.by_rate:
        t.add_row(F.sig(c.rate), escape(c.colocated_platform), f"{F.sig(c.colocated_goodput)} / {F.sig(c.disagg_goodput)}",
                  F.sig(c.goodput_gain), f"{F.sig(c.colocated_usd_per_1m_at_slo)} / {F.sig(c.disagg_usd_per_1m_at_slo)}",
                  F.sig(c.cost_gain), f"{F.sig(c.colocated_p99_ttft_ms)} / {F.sig(c.disagg_p99_ttft_ms)}",
                  f"{F.sig(c.colocated_p99_tpot_ms)} / {F.sig(c.disagg_p99_tpot_ms)}")
    console.print(t)
    console.print("break-even request rates (gain crosses 1): "
                  + (", ".join(f"{F.sig(r)} req/s" for r in g.break_even_rates) or "none in the range"))
    for n in g.notes:
        console.print(f"[yellow]note:[/] {escape(n)}")


def write_gain(g: GainTable, out: Path) -> list[Path]:
    """``gain.json``, ``gain.csv`` and ``gain.png`` (both sweeps) for one pair into folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gain.json").write_text(json.dumps(g.to_dict(), indent=1, default=str), encoding="utf-8")
    write_csv(out / "gain.csv", CSV_COLUMNS, g.rows())
    plt = _mpl()
    files = [out / "gain.json", out / "gain.csv"]
    grid, rate = plot_gain_grid([g]), plot_gain_rate([g])
    for p, name in ((grid, "gain_grid.png"), (rate, "gain_rate.png")):
        if p:
            (out / name).write_bytes(p.png)
            files.append(out / name)
    plt.close("all")
    return files
