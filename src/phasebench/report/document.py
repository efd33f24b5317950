"""Self-contained reports: one HTML file (plots inline as data: URIs, no script, no external style or font),
or Markdown with PNG plots beside it, both rendered from one list of blocks (``blocks.py``).

The report leads with the answer: per run its verdict, the plain-words lines (each figure labelled with the
step it comes from) and the per-point table of every sweep with the chosen point marked; then the key figures
side by side, the plots, and last the run's description and environment, folded. Every piece of text that came
from a dataset, a server or a spec is escaped by the renderer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..compare import compare
from ..results import Run
from . import fmt as F
from . import plots as P
from .blocks import (
    Block,
    Bullets,
    Details,
    Figure,
    Heading,
    Para,
    Table,
    figures,
    md_escape,
    to_html,
    to_markdown,
)
from .compare import comparison_blocks
from .tables import headline, is_plan, key_figures, lead_lines, plan_tables, step_name, sweep_table

__all__ = ["build_blocks", "describe", "md_escape", "write_report"]


def describe(run: Run) -> dict[str, str]:
    """Plain facts about a run for its "what was run" table, every value as text (no Python reprs)."""
    m = run.meta
    sp = m.spec
    tgt = m.target or run.leaves()[0].meta.target
    eng, mf = m.engine, m.model_file
    sim = {k: v for k, v in (m.simulation.model_dump(exclude_unset=True) if m.simulation else {}).items()
           if not isinstance(v, (dict, list))}
    what = {
        "kind": str(m.kind or "run") + (" (simulated)" if m.simulated else ""),
        "scenario": sp and sp.scenario,
        "model": (tgt and tgt.model) or (mf and mf.name) or (sp and sp.model_spec),
        "target": (tgt and tgt.url) or (eng and eng.name and f"embedded {eng.name}"),
        "created": m.created,
        "input / output tokens": sp and f"{F.text(sp.input_tokens and sp.input_tokens.mean)} / "
                                        f"{F.text(sp.output_tokens and sp.output_tokens.mean)}",
        "concurrency / rate": sp and f"{F.text(sp.concurrency)} / {F.text(sp.rate)}",
        "SLO": F.slo(sp.slo) if sp and sp.slo else None,
        "steps": m.children and F.text(m.children),
        "model file": mf and f"{mf.file} ({mf.quantization}, {F.num((mf.parameters or 0) / 1e6)} M params)",
        "engine": eng and f"{eng.name} {eng.version or ''} · {eng.slots} slots",
        "simulation": sim and F.text(sim),
    }
    return {k: F.text(v) for k, v in what.items() if v and F.text(v) not in (F.MISSING, f"{F.MISSING} / {F.MISSING}")}


def _kv_table(title: str, d: dict[str, Any]) -> Table:
    return Table(title, ("item", "value"), [[str(k), F.text(v)] for k, v in d.items()], left=True).compact()


def _run_blocks(name: str, run: Run) -> list[Block]:
    pb = run.result.phasebench
    d = describe(run)
    out: list[Block] = [Heading(name),
                        Para(" · ".join(x for x in (d.get("kind"), d.get("model"), d.get("target")) if x), "small")]
    state = "VALID" if run.valid else "INVALID" + (" (partial: stopped early)" if run.partial else "")
    out.append(Para(f"Result: {state}", "ok" if run.valid else "bad"))
    reasons = [str(r) for r in pb.reasons] or [
        f"{step_name(c, i)}: {r}" for i, c in enumerate(run.children) for r in c.result.phasebench.reasons]
    out.append(Bullets(reasons, "bad"))
    out.append(Bullets([str(w) for w in pb.warnings], "warn"))
    out.append(Bullets(lead_lines(run)))
    if is_plan(run):
        out += [t.compact() for t in plan_tables(run)]
        out.append(Bullets([str(n) for n in run.result.notes or []], "small"))
    elif run.children:
        out.append(sweep_table(run).compact())
    return out


def build_blocks(runs: list[Run], names: list[str], plots: list[P.Plot]) -> list[Block]:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out: list[Block] = [Heading(f"phasebench report: {', '.join(names)}", 1),
                        Para(f"{len(runs)} run(s) · generated {now}", "small")]
    for name, run in zip(names, runs):
        out += _run_blocks(name, run)
    figs = key_figures(runs, names)
    figs.title = ""
    out += [Heading("Key figures" + (" side by side" if len(runs) > 1 else "")), figs]
    if any(r.children for r in runs):
        out.append(Para("For a plan the column is its server step, for a sweep its highest-throughput point; a "
                        "plan's MBU and MFU are the ones its verdicts state, each with its step.", "small"))
    if len(runs) > 1:   # the headline steps compared, as `phasebench compare` does
        c = compare([headline(r)[0] for r in runs], names)
        if any(is_plan(r) for r in runs):   # a plan's MBU is its verdicts' (key figures), not its server step's
            c = replace(c, rows=[row for row in c.rows if row.metric not in ("decode MBU", "prefill MFU")])
        out += comparison_blocks(c)
    if plots:
        out.append(Heading("Plots"))
    for p in plots:
        out += [Heading(p.title, 3), Figure(p.key, p.title, p.caption, p.png)]
    out.append(Heading("What was run, and on what"))
    for name, run in zip(names, runs):
        env = run.meta.environment or run.leaves()[0].meta.environment or {}
        out.append(Details(f"{name}: the run and its environment",
                           [_kv_table("What was run", describe(run)), _kv_table("On what (environment)", env)]))
    out.append(Para("Metric definitions: docs/metrics.md in phasebench; MBU and MFU: docs/model.md. This file is "
                    "self-contained: it loads nothing from the network.", "small"))
    return out


def build_plots(runs: list[Run], names: list[str], tick: Callable[[str], None] | None = None) -> list[P.Plot]:
    out = []
    for fn in P.ALL:
        if tick:
            tick(fn.__name__)
        p = fn(runs, names)
        if p:
            out.append(p)
    return out


def write_report(runs: list[Run], out: Path, names: list[str] | None = None,
                 tick: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``out`` (.html or .md); returns every file written."""
    names = names or [str(r.path.name if r.path else f"run {i + 1}") for i, r in enumerate(runs)]
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".md"):
        raise ValueError(f"report file must end in .html or .md, got {out.name}")
    blocks = build_blocks(runs, names, build_plots(runs, names, tick))
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        out.write_text(to_html(f"phasebench report: {', '.join(names)}", blocks), encoding="utf-8")
        return [out]
    img_dir = out.with_name(out.stem + "_files")
    img_dir.mkdir(exist_ok=True)
    written = []
    for f in figures(blocks):
        path = img_dir / f"{f.key}.png"
        path.write_bytes(f.png)
        written.append(path)
    out.write_text(to_markdown(blocks, img_dir.name), encoding="utf-8")
    return [out, *written]
