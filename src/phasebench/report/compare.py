"""Terminal output of ``phasebench compare``."""

from __future__ import annotations

from rich.console import Console
from ..textsafe import markup as escape
from rich.table import Table

from ..compare import Comparison
from . import fmt as F


def print_comparison(c: Comparison, console: Console) -> None:
    t = Table(title="Comparison (change against the first run)", title_justify="left")
    t.add_column("metric", justify="left")
    for i, n in enumerate(c.names):
        t.add_column(f"{i + 1}: {escape(n)}", justify="right", overflow="fold")
    for r in c.rows:
        cells = []
        for i, v in enumerate(r.values):
            cell = F.num(v, 3) if v is not None and abs(v) < 10 else F.num(v)
            if i > 0 and r.changes[i] is not None:
                verdict = r.verdicts[i] if i < len(r.verdicts) else ""
                if verdict == "not significant":
                    cell += " [dim](not significant)[/]"
                elif verdict == "significant":
                    lo, hi = r.ci[i]
                    colour = "green" if (r.changes[i] < 0) == _lower_is_better(r.metric) else "red"
                    cell += (f" [{colour}]{F.change(r.changes[i])}[/] [dim](95% CI {F.change(lo)}..{F.change(hi)}, "
                             f"p={r.p_values[i]:.1g})[/]")
                elif verdict.startswith("rank"):
                    cell += f" ({F.change(r.changes[i])}, {escape(verdict)})"
                else:
                    cell += f" ({F.change(r.changes[i])})"
            cells.append(cell)
        t.add_row(f"{r.metric} {r.stat}".strip(), *cells)
    console.print(t)
    console.print("significance: Mann-Whitney U on per-request samples (p < 0.01), a bootstrap 95% CI of the "
                  "median's change that excludes 0, and a change ≥ 1%; tested on medians only")
    if any(r.metric == "quality score" for r in c.rows):
        console.print("quality: exact paired sign-flip test on per-probe scores (p < 0.01 and a change ≥ 0.01)")
    for w in c.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def _lower_is_better(metric: str) -> bool:
    return metric.endswith("_ms")
