"""The terminal summary of a run or a sweep: rich tables, which print plainly when output is not a TTY.

Any text that came from a server, a dataset or a run folder is passed through ``textsafe.markup``: no rich
markup, no terminal escape sequences, no control characters.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..metrics import min_samples
from ..results import Run, Stat, Summary, Workload
from ..spec import redact_url
from ..textsafe import markup as escape
from . import fmt as F

ROWS = (
    ("TTFT (from schedule)", "ttft_ms"),
    ("TTFT (from send)", "ttft_sent_ms"),
    ("send lag", "send_lag_ms"),
    ("TTFOT (answer)", "ttfot_ms"),
    ("TPOT", "tpot_ms"),
    ("ITL per chunk", "itl_chunk_ms"),
    ("ITL per token", "itl_token_ms"),
    ("E2E", "e2e_ms"),
)


SMALL_SAMPLE_MARK = "*"


def flag_percentile(text: str, stat: str, count: int | None, flagged: set[str] | None = None) -> str:
    """A printed percentile ``text`` of percentile ``stat`` ("p99", "p99.9") marked with SMALL_SAMPLE_MARK when
    its ``count`` samples are fewer than the percentile needs (``metrics.min_samples``: p90 10, p95 20, p99 100);
    the stat goes into ``flagged`` for :func:`small_sample_footnote`. Every table that prints a percentile
    (show, the sweep table, the report, compare, the plan) flags it here."""
    if count is None or text == "-" or count >= min_samples(float(stat.lstrip("p"))):
        return text
    if flagged is not None:
        flagged.add(stat)
    return text + SMALL_SAMPLE_MARK


def small_sample_footnote(flagged: set[str]) -> str | None:
    """The footnote under a table with flagged percentiles: "* fewer than 100 samples for p99, …"."""
    if not flagged:
        return None
    parts = [f"fewer than {min_samples(float(s[1:]))} samples for {s}" for s in sorted(flagged, key=lambda s: float(s[1:]))]
    return (f"{SMALL_SAMPLE_MARK} {', '.join(parts)}: near the sample max, not an estimate of the tail "
            "(a percentile q needs n ≥ 1/(1 − q))")


def latency_table(summary: Summary, flagged: set[str] | None = None) -> Table:
    m = summary.phasebench.metrics
    t = Table(title="Latency (ms)", title_justify="left")
    for col in ("metric", "n", "mean", "p50", "p90", "p99", "p99 95% CI", "max"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for label, key in ROWS:
        s: Stat = getattr(m, key)
        if not s.count:
            continue
        ci = s.p99_ci95
        ci_txt = F.MISSING if not ci else f"{F.num(ci[0])}–{'∞' if ci[1] is None else F.num(ci[1])}"
        t.add_row(label, F.count(s.count), F.auto(s.mean),
                  *(flag_percentile(F.auto(getattr(s, p)), p, s.count, flagged) for p in ("p50", "p90", "p99")), ci_txt,
                  F.auto(s.max))
    return t


def throughput_table(summary: Summary) -> Table:
    pb = summary.phasebench
    m = pb.metrics
    t = Table(title="Throughput", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("requests completed / failed", F.ratio(summary.completed, summary.failed))
    t.add_row("measurement window (s)", F.auto(summary.duration, 2))
    t.add_row("request throughput (req/s)", F.auto(summary.request_throughput))
    t.add_row("output token throughput (tok/s)", F.auto(summary.output_throughput))
    t.add_row("total token throughput (tok/s)", F.auto(summary.total_token_throughput))
    t.add_row("prefill per request, median (tok/s)", F.auto(m.prefill_tps.p50, 1))
    t.add_row("decode per request, median (tok/s)", F.auto(m.decode_tps.p50, 1))
    if summary.request_goodput is not None:
        t.add_row("goodput (req/s meeting SLO)", F.auto(summary.request_goodput))
        t.add_row("SLO attainment", F.pct(pb.slo.attainment if pb.slo else None))
    st = pb.server_timing
    if st.prompt_ms.count:
        t.add_row("server-side prefill, median (ms)", F.auto(st.prompt_ms.p50))
    if st.tpot_ms.count:
        t.add_row("server-side TPOT, median (ms)", F.auto(st.tpot_ms.p50))
    cl = pb.client
    if cl.cpu_fraction is not None:
        t.add_row("client CPU (of one core)", F.pct(cl.cpu_fraction, 0))
    t.add_row("max in flight", F.count(cl.max_in_flight))
    return t


def verdict_lines(summary: Summary) -> list[str]:
    pb = summary.phasebench
    lines = []
    state = "VALID" if pb.valid else "INVALID"
    if pb.partial:
        state += " (partial: interrupted)"
    lines.append(f"[bold {'green' if pb.valid else 'red'}]{state}[/]")
    for r in pb.reasons:
        lines.append(f"[red]  ✗ {escape(str(r))}[/]")
    for w in pb.warnings:
        lines.append(f"[yellow]  ! {escape(str(w))}[/]")
    return lines


def print_run(run: Run, console: Console | None = None) -> None:
    console = console or Console()
    m = run.meta
    target = m.target
    what = m.kind if run.is_plan else (m.spec.scenario if m.spec and "scenario" in m.spec.model_fields_set else m.kind)
    head = f"[bold]{escape(str(what))}[/]"
    if target:
        head += f" · {escape(str(target.model))} @ {escape(str(redact_url(str(target.url or '')) or '-'))}"
    if m.simulated:
        head += " · [magenta]simulated[/]"
    if run.path:
        head += f" · {escape(str(run.path))}"
    console.print(head)
    for w in run.load_warnings:
        console.print(f"[yellow]! {escape(w)}[/]", soft_wrap=True)
    if run.skipped_lines and not run.load_warnings:
        console.print(f"[yellow]! {run.skipped_lines} unreadable lines in requests.jsonl were skipped[/]")
    if run.is_plan:
        from .plan import print_plan

        print_plan(run, console)
        return
    flagged: set[str] = set()
    s = run.result
    if run.is_sweep:
        from .blocks import rich_table
        from .tables import sweep_table

        console.print(rich_table(sweep_table(run).compact()))
        for line in verdict_lines(s):
            console.print(line)
        return
    console.print(latency_table(s, flagged))
    if note := small_sample_footnote(flagged):
        console.print(note)
    console.print(throughput_table(s))
    for line in verdict_lines(s):
        console.print(line)
    for line in workload_lines(s.phasebench.workload):
        console.print(line)
    from .model import roofline_lines

    pb = s.phasebench
    for line in roofline_lines(pb.roofline.model_dump(exclude_unset=True) if pb.roofline else None):
        console.print(line)
    from ..serverview.view import summary_lines

    for line in summary_lines(pb.server_view.model_dump(exclude_unset=True) if pb.server_view else {}):
        console.print(escape(line))
    c = pb.cost
    if c and c.usd_per_1m_tokens:
        slo = c.usd_per_1m_tokens_at_slo
        console.print(f"cost: {F.usd(c.usd_per_1m_tokens)} per 1M tokens (input + output, blended) on {c.devices}× "
                      f"{escape(str(c.hardware))} at {F.usd(c.price_per_hour, 2)}/h"
                      + (f", {F.usd(slo)} counting only requests that met the SLO" if slo else "")
                      + (f"; {F.num(c.output_tokens_per_joule, 2)} output tokens/J ({escape(str(c.power_source))})"
                         if c.output_tokens_per_joule else ""))
    elif c and c.note:
        console.print(f"cost: {escape(c.note)}")


def workload_lines(w: Workload | None) -> list[str]:
    """The prompt's cached/new split and TTFT by turn (multi-turn runs, traces), when the run has them."""
    if not w:
        return []
    out = []
    pc = w.prompt_cache
    if pc and pc.prompt_tokens:
        tps = pc.prefill_new_tps.p50 if pc.prefill_new_tps else None
        counters = pc.source == "server counters"
        out.append(("prompt cache (server counters): " if counters else "prompt cache: ")
                   + f"{F.pct(pc.cached_fraction, 0)} of {F.count(pc.prompt_tokens)} prompt tokens cached, "
                   f"{F.count(pc.new_tokens)} new" + (f"; prefill {F.num(tps, 0)} new tokens/s (p50)" if tps else "")
                   + (f" ({pc.requests_not_reporting} requests without a cache report)"
                      if pc.requests_not_reporting and not counters else ""))
    turns = w.by_turn
    if turns:
        shown = list(turns.items())[:8]
        parts = []
        for k, v in shown:
            t = v.ttft_ms.p50 if v.ttft_ms else None
            c = v.cached_tokens.mean if v.cached_tokens else None
            n = v.prompt_tokens.mean if v.prompt_tokens else None
            parts.append(f"{escape(k)}: {F.ms(t, 0, unit=True)}")
            if n is not None:
                parts[-1] += f" ({F.num(n, 0)} tok" + (f", {F.num(c, 0)} cached)" if c is not None else ")")
        more = f" … {len(turns) - len(shown)} more" if len(turns) > len(shown) else ""
        out.append("TTFT p50 by turn: " + " · ".join(parts) + more)
    return out
