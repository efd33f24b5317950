"""Terminal output of ``phasebench compare``."""

from __future__ import annotations

from rich.console import Console
from ..textsafe import markup as escape
from rich.table import Table

from ..compare import Comparison


def _v(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"


def print_comparison(c: Comparison, console: Console) -> None:
    t = Table(title="Comparison (change against the first run)", title_justify="left")
    t.add_column("metric", justify="left")
    for i, n in enumerate(c.names):
        t.add_column(f"{i + 1}: {escape(n)}", justify="right", overflow="fold")
    for r in c.rows:
        cells = []
        for i, v in enumerate(r.values):
            cell = _v(v)
            if i > 0 and r.changes[i] is not None:
                verdict = r.verdicts[i] if i < len(r.verdicts) else ""
                if verdict == "not significant":
                    cell += " [dim](not significant)[/]"
                elif verdict == "significant":
                    lo, hi = r.ci[i]
                    colour = "green" if (r.changes[i] < 0) == _lower_is_better(r.metric) else "red"
                    cell += f" [{colour}]{r.changes[i]:+.1%}[/] [dim](95% CI {lo:+.1%}..{hi:+.1%}, p={r.p_values[i]:.1g})[/]"
                elif verdict.startswith("rank"):
                    cell += f" ({r.changes[i]:+.1%}, {verdict})"
                else:
                    cell += f" ({r.changes[i]:+.1%})"
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
