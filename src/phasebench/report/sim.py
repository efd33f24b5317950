"""Terminal output of ``phasebench disagg``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..results import CostBlock, as_summary
from ..textsafe import markup as escape
from .fmt import num as _n


def print_disagg(model: str, ps, ds, cs, link, point, grid: list[dict], ratio: dict, sims: dict | None,
                 console: Console) -> None:
    console.print(f"[bold]{escape(model)}[/]: prefill on {ps.devices}× {ps.hardware.key}, decode on {ds.devices}× "
                  f"{ds.hardware.key}, colocated baseline {cs.devices}× {cs.hardware.key}; link {escape(link.name)} "
                  f"({link.bandwidth / 1e9:g} GB/s, {link.latency_s * 1e6:g} µs)")
    shipped = point.input_tokens - point.cached_tokens
    console.print(f"KV cache per request: {shipped} tokens × {ds.model.kv_bytes_per_token(ds.precision.kv) / 1024:.0f} KiB "
                  f"= {point.kv_bytes / 2**20:,.1f} MiB → transfer {point.transfer_s * 1e3:.2f} ms"
                  + (f" ({point.cached_tokens} cached tokens already on the decode side: "
                     f"{point.kv_bytes_saved / 2**20:,.1f} MiB not shipped)" if point.cached_tokens else ""))
    t = Table(title=f"One request, {point.input_tokens} in / {point.output_tokens} out, no queueing", title_justify="left")
    for c in ("", "TTFT ms", "TPOT ms", "E2E s"):
        t.add_column(c, justify="right")
    c, d = point.colocated, point.disaggregated
    t.add_row("colocated", _n(c["ttft_ms"], 2), _n(c["tpot_ms"], 3), _n(c["e2e_s"], 3))
    t.add_row("disaggregated", f"{_n(d['ttft_ms'], 2)} ({_n(d['prefill_ms'], 2)} + {_n(d['transfer_ms'], 2)} transfer)",
              _n(d["tpot_ms"], 3), _n(d["e2e_s"], 3))
    console.print(t)
    be = point.break_even_ttft_gbps
    console.print("break-even bandwidth for TTFT: " + (f"{be:,.2f} GB/s (KV bytes ÷ TTFT saved)" if be else
                  "none: the prefill pool is not faster at prefill than the colocated one"))
    be = point.break_even_e2e_gbps
    console.print("break-even bandwidth for E2E: " + (f"{be:,.2f} GB/s" if be else "none: disaggregation does not shorten E2E"))
    if sims:
        t = Table(title="Simulated under load (Poisson)", title_justify="left")
        for col in ("", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "E2E p50 ms", "goodput req/s", "out tok/s", "$/1M tok", "$/1M tok at SLO"):
            t.add_column(col, justify="right")
        typed = {name: as_summary(s) for name, s in sims.items()}
        for name, s in typed.items():
            cb = s.phasebench.cost or CostBlock()
            cost, cost_slo = cb.usd_per_1m_tokens, cb.usd_per_1m_tokens_at_slo
            over = " [red](over capacity)[/]" if s.phasebench.over_capacity else ""
            t.add_row(name + over, f"{_n(s.median_ttft_ms)}/{_n(s.p99_ttft_ms)}",
                      f"{_n(s.median_tpot_ms, 2)}/{_n(s.p99_tpot_ms, 2)}", _n(s.median_e2el_ms),
                      _n(s.request_goodput, 2), _n(s.output_throughput), _n(cost, 3),
                      _n(cost_slo, 3) if cost is not None or not cb.note else escape(cb.note))
        console.print(t)
        dis = typed.get("disaggregated")
        kt = dis.phasebench.kv_transfer if dis else None
        if kt and kt.kv_bytes_needed:
            console.print(f"KV shipped to the decode pool: {kt.kv_bytes_shipped / 2**30:,.2f} of "
                          f"{kt.kv_bytes_needed / 2**30:,.2f} GiB ({kt.saved_fraction:.0%} saved: "
                          f"{kt.decode_cached_tokens:,} prompt tokens already there; routing {kt.routing})")
        ta = dis.phasebench.turn_arrivals if dis else None
        if ta:
            console.print(f"later turns' arrivals (previous answer + think time) "
                          f"{'settled' if ta.converged else '[yellow]did not settle[/]'} in {ta.passes} passes")
    t = Table(title="Where disaggregation wins (E2E / TTFT) by input length and link bandwidth", title_justify="left")
    t.add_column("input tokens", justify="right")
    bws = sorted({r["bandwidth_gbps"] for r in grid})
    for b in bws:
        t.add_column(f"{b:g} GB/s", justify="center")
    t.add_column("break-even GB/s (TTFT)", justify="right")
    for n in sorted({r["input_tokens"] for r in grid}):
        rows = {r["bandwidth_gbps"]: r for r in grid if r["input_tokens"] == n}
        cells = ["does not fit" if "error" in rows[b] else
                 ("[green]wins[/]" if rows[b]["wins_e2e"] else "[red]loses[/]") + " / " +
                 ("[green]wins[/]" if rows[b]["wins_ttft"] else "[red]loses[/]") for b in bws]
        be = rows[bws[0]].get("break_even_ttft_gbps")
        t.add_row(str(n), *cells, _n(be, 2))
    console.print(t)
    if "error" in ratio:
        console.print(f"[yellow]pool ratio:[/] {escape(ratio['error'])}")
    else:
        console.print(f"pool ratio at the TPOT SLO: one prefill replica serves {ratio['prefill_rps_per_replica']:.2f} req/s, "
                      f"one decode replica {ratio['decode_rps_per_replica']:.2f} req/s (batch {ratio['decode_batch']}, "
                      f"TPOT {ratio['decode_tpot_ms']:.1f} ms) → {ratio['prefill_replicas_per_decode_replica']:.2f} prefill "
                      f"replicas per decode replica ({ratio['prefill_devices_per_decode_device']:.2f} devices per device)")
