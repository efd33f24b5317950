"""Self-contained reports: one HTML file (plots inline as data: URIs, no script, no external style or font),
or Markdown with PNG plots beside it. Every piece of text that came from a dataset, a server or a spec is
escaped (HTML entities, or Markdown's special characters), after ``textsafe.clean`` drops control characters.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..compare import Comparison, compare
from ..results import Run
from ..textsafe import clean
from . import plots as P
from .compare import comparison_html, comparison_markdown
from .terminal import flag_percentile, small_sample_footnote

SUMMARY_ROWS = (
    ("requests completed / failed", lambda s: f"{s.get('completed', '-')} / {s.get('failed', '-')}"),
    ("TTFT p50 / p99 (ms)", lambda s: _p50_p99(s, "ttft")),
    ("TPOT p50 / p99 (ms)", lambda s: _p50_p99(s, "tpot")),
    ("ITL p50 / p99 (ms)", lambda s: _p50_p99(s, "itl")),
    ("E2E p50 / p99 (ms)", lambda s: _p50_p99(s, "e2el")),
    ("request throughput (req/s)", lambda s: _n(s.get("request_throughput"), 2)),
    ("output throughput (tok/s)", lambda s: _n(s.get("output_throughput"))),
    ("goodput (req/s)", lambda s: _n(s.get("request_goodput"), 2)),
    ("SLO attainment", lambda s: _pct(((s.get("phasebench") or {}).get("slo") or {}).get("attainment"))),
    ("decode MBU", lambda s: _pct(((s.get("phasebench") or {}).get("roofline") or {}).get("mbu"))),
    ("prefill MFU", lambda s: _pct(((s.get("phasebench") or {}).get("roofline") or {}).get("mfu"))),
    ("$ per 1M tokens (blended)", lambda s: _usd(((s.get("phasebench") or {}).get("cost") or {}).get("usd_per_1m_tokens"))),
    ("$ per 1M tokens at the SLO",
     lambda s: _usd(((s.get("phasebench") or {}).get("cost") or {}).get("usd_per_1m_tokens_at_slo"))),
    ("output tokens per joule", lambda s: _n(((s.get("phasebench") or {}).get("cost") or {}).get("output_tokens_per_joule"), 2)),
)


_SAMPLES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_chunk_ms", "e2el": "e2e_ms"}  # summary key → metric


def _p50_p99(s: dict[str, Any], short: str, flagged: set[str] | None = None) -> str:
    """"p50 / p99" of a summary's top-level keys, each flagged when its metric has too few samples."""
    n = ((((s.get("phasebench") or {}).get("metrics") or {}).get(_SAMPLES[short])) or {}).get("count")
    return " / ".join(flag_percentile(_n(s.get(key)), stat, n, flagged)
                      for stat, key in (("p50", f"median_{short}_ms"), ("p99", f"p99_{short}_ms")))


def _small_sample_note(heads: list[Run]) -> str | None:
    flagged: set[str] = set()
    for r in heads:
        for short in _SAMPLES:
            _p50_p99(r.summary, short, flagged)
    return small_sample_footnote(flagged)


def _comparison(heads: list[Run], names: list[str]) -> Comparison | None:
    """The headline runs compared (two or more), as ``phasebench compare`` does."""
    return compare(heads, names) if len(heads) > 1 else None


def _usd(v: Any) -> str:
    return "-" if v is None else f"${v:,.3f}"


def _n(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def _headline(run: Run) -> Run:
    """The run whose summary stands for the whole in the table: itself, or a plan's server step / a sweep's best."""
    if not run.children:
        return run
    by = {c.path.name if c.path else str(i): c for i, c in enumerate(run.children)}
    if "server" in by:
        return by["server"]
    return max(run.leaves(), key=lambda r: r.summary.get("output_throughput") or 0)


def describe(run: Run) -> dict[str, Any]:
    """Plain facts about a run for the report header (all later escaped)."""
    m = run.manifest
    sp = m.get("spec") or {}
    first = run.leaves()[0].manifest
    tgt = m.get("target") or first.get("target") or {}
    eng = m.get("engine") or {}
    mf = m.get("model_file") or {}
    what = {
        "kind": m.get("kind", "run") + (" (simulated)" if m.get("simulated") else ""),
        "scenario": sp.get("scenario"),
        "model": tgt.get("model") or mf.get("name") or sp.get("model_spec"),
        "target": tgt.get("url") or (eng.get("name") and f"embedded {eng.get('name')}"),
        "created": m.get("created"),
        "input / output tokens": f"{(sp.get('input_tokens') or {}).get('mean', '-')} / {(sp.get('output_tokens') or {}).get('mean', '-')}" if sp else None,
        "concurrency / rate": f"{sp.get('concurrency')} / {sp.get('rate')}" if sp else None,
        "steps": ", ".join(m.get("children", [])) or None,
        "model file": mf and f"{mf.get('file')} ({mf.get('quantization')}, {mf.get('parameters', 0) / 1e6:.1f} M params)",
        "engine": eng and f"{eng.get('name')} {eng.get('version', '')} · {eng.get('slots')} slots",
        "simulation": m.get("simulation") and ", ".join(f"{k}={v}" for k, v in m["simulation"].items() if not isinstance(v, dict)),
    }
    return {k: v for k, v in what.items() if v}


def verdict(run: Run) -> tuple[bool, list[str], list[str]]:
    pb = run.summary.get("phasebench") or {}
    return run.valid, list(pb.get("reasons", [])), list(pb.get("warnings", [])) + list(run.summary.get("verdicts", []))


def build_plots(runs: list[Run], names: list[str], tick: Callable[[str], None] | None = None) -> list[P.Plot]:
    out = []
    for fn in P.ALL:
        if tick:
            tick(fn.__name__)
        p = fn(runs, names)
        if p:
            out.append(p)
    return out


# --- HTML ------------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right;font-size:.9em}
th{background:#f5f5f5}td.l,th.l{text-align:left}.ok{color:#11772b;font-weight:600}.bad{color:#b00020;font-weight:600}
.warn{color:#8a5a00}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}.env td{text-align:left}
"""


def _e(v: Any) -> str:
    """Outside text as HTML: control characters and escape sequences removed, then entity-escaped."""
    return html.escape(clean(v), quote=True)


def to_html(runs: list[Run], names: list[str], plots: list[P.Plot]) -> str:
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>phasebench report: {_e(', '.join(names))}</title><style>{CSS}</style></head><body>",
         "<h1>phasebench report</h1>",
         f"<p>{len(runs)} run(s) · generated {_e(dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds'))}</p>"]
    for name, run in zip(names, runs):
        ok, reasons, notes = verdict(run)
        h.append(f"<h2>{_e(name)}</h2>")
        h.append('<p>Result: <span class="ok">VALID</span></p>' if ok else '<p>Result: <span class="bad">INVALID</span></p>')
        if reasons:
            h.append("<ul>" + "".join(f'<li class="bad">{_e(r)}</li>' for r in reasons) + "</ul>")
        if notes:
            h.append("<ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in notes) + "</ul>")
        h.append('<table class="env"><tr><th class="l" colspan="2">What was run</th></tr>'
                 + "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>' for k, v in describe(run).items())
                 + "</table>")
        env = run.manifest.get("environment") or {}
        if env:
            h.append('<table class="env"><tr><th class="l" colspan="2">On what (environment)</th></tr>'
                     + "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>' for k, v in env.items())
                     + "</table>")
    h.append("<h2>Summary</h2><table><tr><th class='l'>metric</th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
    heads = [_headline(r) for r in runs]
    for label, fn in SUMMARY_ROWS:
        h.append(f"<tr><td class='l'>{_e(label)}</td>" + "".join(f"<td>{_e(fn(r.summary))}</td>" for r in heads) + "</tr>")
    h.append("</table>")
    if note := _small_sample_note(heads):
        h.append(f"<p><small>{_e(note)}</small></p>")
    if c := _comparison(heads, names):
        h.append(comparison_html(c, _e))
    if any(r.children for r in runs):
        h.append("<p>For sweeps and plans the table shows the server step (plans) or the highest-throughput point.</p>")
    for p in plots:
        b64 = base64.b64encode(p.png).decode()
        h.append(f'<h2>{_e(p.title)}</h2><figure><img alt="{_e(p.title)}" src="data:image/png;base64,{b64}">'
                 f"<figcaption>{_e(p.caption)}</figcaption></figure>")
    h.append("<p><small>Metric definitions: docs/metrics.md in phasebench. This file is self-contained: it loads "
             "nothing from the network.</small></p></body></html>")
    return "\n".join(h)


# --- Markdown --------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md_escape(v: Any) -> str:
    """Escape Markdown syntax and raw HTML in text that came from outside."""
    s = html.escape(clean(v), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def to_markdown(runs: list[Run], names: list[str], plots: list[P.Plot], image_dir: str) -> str:
    md = ["# phasebench report", "",
          f"{len(runs)} run(s) · generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}", ""]
    for name, run in zip(names, runs):
        ok, reasons, notes = verdict(run)
        md += [f"## {md_escape(name)}", "", f"**Result: {'VALID' if ok else 'INVALID'}**", ""]
        md += [f"- ✗ {md_escape(r)}" for r in reasons] + [f"- {md_escape(w)}" for w in notes] + [""]
        md += ["| what was run | |", "|---|---|"] + [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in describe(run).items()] + [""]
        env = run.manifest.get("environment") or {}
        if env:
            md += ["| environment | |", "|---|---|"] + [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in env.items()] + [""]
    md += ["## Summary", "", "| metric | " + " | ".join(md_escape(n) for n in names) + " |",
           "|---|" + "---|" * len(names)]
    heads = [_headline(r) for r in runs]
    for label, fn in SUMMARY_ROWS:
        md.append(f"| {md_escape(label)} | " + " | ".join(md_escape(fn(r.summary)) for r in heads) + " |")
    md.append("")
    if note := _small_sample_note(heads):
        md += [f"*{md_escape(note)}*", ""]
    if c := _comparison(heads, names):
        md += comparison_markdown(c, md_escape)
    for p in plots:
        md += [f"## {md_escape(p.title)}", "", f"![{md_escape(p.title)}]({image_dir}/{p.key}.png)", "",
               f"*{md_escape(p.caption)}*", ""]
    return "\n".join(md)


def write_report(runs: list[Run], out: Path, names: list[str] | None = None,
                 tick: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``out`` (.html or .md); returns every file written."""
    names = names or [str(r.path.name if r.path else f"run {i + 1}") for i, r in enumerate(runs)]
    plots = build_plots(runs, names, tick)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".html", ".htm"):
        out.write_text(to_html(runs, names, plots), encoding="utf-8")
        return [out]
    if out.suffix.lower() == ".md":
        img_dir = out.with_name(out.stem + "_files")
        img_dir.mkdir(exist_ok=True)
        written = []
        for p in plots:
            f = img_dir / f"{p.key}.png"
            f.write_bytes(p.png)
            written.append(f)
        out.write_text(to_markdown(runs, names, plots, img_dir.name), encoding="utf-8")
        return [out, *written]
    raise ValueError(f"report file must end in .html or .md, got {out.name}")
