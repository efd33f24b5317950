"""Terminal output of the analytic side: predictions, catalogs, the probe, calibrations, a run's roofline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..model.arch import ModelArch
from ..model.fitcheck import MAX_FIT_ERROR
from ..model.hardware import Hardware
from ..model.phases import Prediction
from ..textsafe import markup as escape
from . import fmt as F
from .fmt import auto as _f


def print_predictions(preds: list[Prediction], console: Console) -> None:
    p0 = preds[0]
    e = p0.efficiency
    console.print(f"[bold]{escape(p0.model)}[/] on {p0.devices}× [bold]{escape(p0.hardware)}[/] "
                  f"(tp {p0.tp}, pp {p0.pp}), {escape(p0.precision.label())}, engine [bold]{escape(p0.engine or '-')}[/] · "
                  f"efficiency: memory {e.memory:.0%}, compute {e.compute:.0%}, {e.layer_overhead_us:.3g} µs/layer, "
                  f"{e.step_us:.3g} µs/step, {e.request_ms:.3g} ms/request ({escape(e.source)})")
    t = Table(title_justify="left", caption="bound: prefill/decode (mem = memory, comp = compute, comm = links, ovh = fixed "
              "overhead); (low–high): the 10th–90th percentile of held-out corpus residuals (range: below says whose)")
    for c in ("B", "in", "out", "TTFT ms (low–high)", "TPOT ms (low–high)", "E2E s", "out tok/s (low–high)", "bound",
              "GB/dev", "max B"):
        t.add_column(c, justify="right")
    short = {"memory": "mem", "compute": "comp", "communication": "comm", "overhead": "ovh"}
    for p in preds:
        mem = p.memory
        if not p.timed:
            t.add_row(str(p.batch), str(p.input_len), str(p.output_len), "[red]no fit[/]", "", "", "", "",
                      f"{mem.per_device / 1e9:.1f}>{mem.capacity / 1e9:.0f}", str(mem.max_batch))
            continue
        r = p.range or {}
        t.add_row(str(p.batch), str(p.input_len), str(p.output_len), _rng(p.ttft_s * 1e3, r.get("ttft_ms")),
                  _rng(p.tpot_s * 1e3, r.get("tpot_ms"), 3), _f(p.e2e_s, 3),
                  _rng(p.output_throughput, r.get("output_throughput"), 1),
                  f"{short[p.prefill.bound]}/{short[p.decode_last.bound]}",
                  _f(mem.per_device / 1e9, 1) if p.fits else f"[yellow]{p.concurrency} at a time[/]", str(mem.max_batch))
    console.print(t)
    m = p0.memory
    console.print(f"weights {m.weights_bytes / 1e9:.2f} GB ({m.per_device_weights / 1e9:.2f} GB per device), KV cache "
                  f"{m.kv_per_token / 1024:.0f} KiB per token, usable memory {m.capacity / 1e9:.1f} GB per device"
                  + (f" ({escape(m.policy)})" if m.policy else ""))
    if len(preds) == 1 and p0.timed:
        d = p0.decode_last
        console.print(f"decode step at the last context: {d.bytes / 1e9:.2f} GB read, {d.flops / 1e9:.1f} GFLOP, "
                      f"intensity {d.intensity:.1f} FLOP/byte → {d.bound}-bound")
        pf = p0.prefill
        console.print(f"prefill: {pf.flops / 1e12:.3f} TFLOP over {pf.bytes / 1e9:.2f} GB, intensity "
                      f"{pf.intensity:.0f} FLOP/byte → {pf.bound}-bound")
    for b in dict.fromkeys((p.range or {}).get("basis") for p in preds if p.timed):
        if b:
            console.print(f"[dim]range: {escape(b)}[/]")
    for n in dict.fromkeys(n for p in preds for n in p.notes):
        console.print(f"[yellow]note:[/] {escape(n)}")
    if not p0.timed and len(preds) == 1:
        console.print(f"[red]does not fit:[/] needs {m.per_device / 1e9:.1f} GB per device "
                      f"(weights {m.per_device_weights / 1e9:.1f} GB + KV {p0.batch * m.kv_per_device_per_seq / 1e9:.2f} GB), "
                      f"{m.capacity / 1e9:.1f} GB usable; no time is predicted")


def _rng(v: float | None, r: list[float] | None, nd: int = 2) -> str:
    if v is None:
        return "-"
    return _f(v, nd) + (f" ({_f(r[0], nd)}–{_f(r[1], nd)})" if r else "")


def print_hardware(hws: Iterable[Hardware], console: Console) -> None:
    """A compact table of peaks, memory, links, power and price, then each record's sources (full in `show`)."""
    hws = list(hws)
    t = Table(title="Hardware catalog (dense peaks)", title_justify="left")
    for c in ("key", "kind", "bf16 TFLOP/s", "fp8/int8", "mem GB", "GB/s", "SRAM MB", "link GB/s", "TDP W", "$/h"):
        t.add_column(c, justify="left" if c in ("key", "kind") else "right", no_wrap=c == "key")
    for h in hws:
        tf = h.tflops
        half = tf.get("bf16") or tf.get("fp16")
        t.add_row(h.key, h.kind, _f(half, 1) if half else f"fp32 {_f(tf.get('fp32'), 2)}",
                  f"{_f(tf.get('fp8'), 0)}/{_f(tf.get('int8'), 0)}", _f(h.memory_gb, 1), _f(h.memory_gbps, 0),
                  _f(h.sram_mb, 0), _f(h.interconnect_gbps, 0), _f(h.tdp_w, 0), _f(h.price_per_hour))
    console.print(t)
    console.print("[bold]sources[/] (specs; price)")
    for h in hws:
        console.print(f"  {h.key}: {escape(h.name)} — {escape(h.source)} ({escape(h.date)}); price: {escape(h.price_source)}",
                      soft_wrap=True)
    named = [h for h in hws if h.extra.get("aliases")]
    if named:
        console.print("[bold]aliases[/] (other spellings --hardware accepts; case, '_' and spaces are ignored)")
        for h in named:
            console.print(f"  {h.key}: {escape(', '.join(map(str, h.extra['aliases'])))}", soft_wrap=True)


def models_table(models: Iterable[ModelArch]) -> Table:
    t = Table(title="Model catalog", title_justify="left")
    for c in ("name", "layers", "hidden", "heads/kv", "attention", "ffn", "vocab", "experts", "params B",
              "published B", "KV KiB/token fp16"):
        t.add_column(c, justify="right" if c not in ("name", "attention") else "left")
    for m in models:
        t.add_row(m.name, str(m.layers), str(m.hidden), f"{m.heads}/{m.kv_heads}", m.attention_kind,
                  f"{m.ffn} {m.ffn_kind}", str(m.vocab), f"{m.experts_active}/{m.experts}" if m.experts > 1 else "-",
                  f"{m.params / 1e9:.3f}" + (f" ({m.active_params / 1e9:.1f} active)" if m.experts > 1 else ""),
                  _f(m.published_params, 3), f"{m.kv_bytes_per_token() / 1024:.0f}")
    return t


def print_record(d: dict[str, Any], console: Console, extra: dict[str, Any] | None = None) -> None:
    t = Table(show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in {**d, **(extra or {})}.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items())
        elif isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        t.add_row(escape(str(k)), escape(str(v)))
    console.print(t)


def print_probe(r, local: Hardware, near: list[tuple[Hardware, float]], path: Path, console: Console) -> None:
    console.print(f"memory bandwidth: copy {r.copy_gbps:.1f} GB/s, triad {r.triad_gbps:.1f} GB/s "
                  f"({r.threads} threads, {r.array_mib} MiB arrays per thread, best of repeats)")
    console.print(f"matmul fp32 (numpy BLAS, all cores): {r.matmul_gflops_fp32:.0f} GFLOP/s")
    for k, v in r.extra.items():
        if k in ("bf16_note", "bf16_source", "cpu_precision_flags", "torch_installed", "matmul_gflops_bf16"):
            continue
        console.print(f"{k}: {v if isinstance(v, str) else f'{v:.1f}'}")
    flags = r.extra.get("cpu_precision_flags") or []
    console.print(f"reduced-precision CPU units: {', '.join(flags) if flags else 'none found (/proc/cpuinfo)'}")
    if r.extra.get("matmul_gflops_bf16"):
        console.print(f"matmul bf16: {r.extra['matmul_gflops_bf16']:.0f} GFLOP/s ({escape(str(r.extra.get('bf16_source')))})")
    else:
        console.print(f"matmul bf16: not probed — {escape(str(r.extra.get('bf16_note', '')))}; MFU in bf16 is against "
                      "the fp32 peak and says so")
    console.print(f"ridge point: {r.matmul_gflops_fp32 / r.bandwidth_gbps:.1f} FLOP/byte (below it a kernel is memory-bound)")
    console.print(f"wrote the 'local' hardware record: {escape(str(path))}")
    t = Table(title="Nearest catalog devices", title_justify="left")
    for c in ("device", "GB/s", "fp32 TFLOP/s", "best TFLOP/s", "× this machine's bandwidth"):
        t.add_column(c, justify="right")
    t.add_row("[bold]local[/]", _f(local.memory_gbps, 1), _f(local.tflops.get("fp32"), 3), "", "1.0")
    for h, _ in near:
        t.add_row(escape(h.key), _f(h.memory_gbps, 0), _f(h.tflops.get("fp32"), 1), _f(max(h.tflops.values()), 0),
                  f"{h.memory_gbps / local.memory_gbps:.1f}")
    console.print(t)


def print_calibration(cal, console: Console, stored: bool) -> None:
    e = cal.efficiency
    console.print(f"[bold]calibration[/] {escape(cal.hardware)} with {escape(cal.engine)}: memory efficiency "
                  f"{e.memory:.1%}, compute efficiency {e.compute:.1%}, overhead {e.layer_overhead_us:.1f} µs/layer "
                  f"({len(cal.points)} points, median |error| {cal.fit_error:.1%}, mean {cal.mean_abs_error:.1%}, "
                  f"max {cal.max_abs_error:.1%})")
    if cal.efficiency.warning:
        console.print(f"[yellow]warning:[/] {escape(cal.efficiency.warning)}")
    t = Table()
    for c in ("phase", "run", "measured ms", "fitted ms", "error"):
        t.add_column(c, justify="right")
    for p, err in zip(cal.points, cal.errors):
        t.add_row(p.phase, escape(p.run), f"{p.measured_s * 1e3:.2f}", f"{p.measured_s * (1 + err) * 1e3:.2f}", f"{err:+.1%}")
    console.print(t)
    if e.memory >= 0.999 or e.compute >= 0.999:
        console.print("[yellow]note:[/] an efficiency hit 100%: the runs were faster than the record's peak; "
                      "the hardware record's peak is too low (run `phasebench probe` again)")
    console.print("stored: later `phasebench predict --hardware "
                  f"{escape(cal.hardware)}` uses these factors" if stored else "not stored (--dry-run)")
    if not stored and cal.fit_error > MAX_FIT_ERROR:
        console.print(f"[yellow]warning:[/] its median |error| {cal.fit_error:.0%} is above the {MAX_FIT_ERROR:.0%} "
                      "limit: storing it would be refused without --force")


def roofline_lines(block: dict[str, Any] | None) -> list[str]:
    """Plain-words lines for a run's roofline block (``summary.phasebench.roofline``)."""
    if not block:
        return []
    lines = []
    if block.get("error"):
        return [f"[yellow]roofline: {escape(block['error'])}[/]"]
    head = f"roofline: {escape(block['model'])} on {escape(block['hardware'])} ({escape(block['precision'])})" + \
        (f", step {escape(block['step'])}" if block.get("step") else "")
    lines.append(head)
    if "mbu" in block:
        lines.append(f"  decode MBU {F.pct(block['mbu'])}: {F.size(block['decode_bytes_per_step'])} per step at mean batch "
                     f"{F.num(block['mean_batch'])} → {F.num(block['decode_achieved_gbps'])} of "
                     f"{F.num(block['peak_bandwidth_gbps'], 0)} GB/s")
    if "mfu" in block:
        lines.append(f"  prefill MFU {F.pct(block['mfu'])}: {F.num(block['prefill_achieved_tflops'] * 1e3)} GFLOP/s of "
                     f"{F.num(block['peak_tflops'] * 1e3, 0)} — against the "
                     f"{escape(block.get('peak_flops_label') or 'catalog peak')}")
    pr, me = block.get("predicted"), block.get("measured")
    if pr and me and pr.get("tpot_ms"):
        lines.append(f"  predicted TTFT {_f(pr['ttft_ms'])} ms / TPOT {_f(pr['tpot_ms'])} ms  vs measured p50 "
                     f"{_f(me['ttft_ms'])} / {_f(me['tpot_ms'])} ms  ({escape(pr['efficiency']['source'])})")
    for n in block.get("notes", []):
        lines.append(f"  note: {escape(n)}")
    return lines
