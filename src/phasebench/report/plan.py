"""The plan's terminal summary: printed at the end of ``phasebench run`` (embedded engine or ``--url --plan``)
and again by ``phasebench show`` on the plan folder, from the plan's ``summary.json`` and its steps."""

from __future__ import annotations

from rich.console import Console

from ..results import Run
from ..textsafe import markup as escape
from .blocks import rich_table
from .tables import plan_tables, quality_line, server_lines, utilization


def print_plan(run: Run, console: Console) -> None:
    s = run.result
    for t in plan_tables(run):
        console.print(rich_table(t.compact()))
    for line in server_lines(run):
        console.print(escape(line))
    for n in s.notes or []:
        console.print(f"[dim]  {escape(n)}[/]")
    q = quality_line(run)
    if q:
        console.print(escape(q))
    if s.verdicts or utilization(run):
        console.print("[bold]Where the phases sit[/]")
    for v in utilization(run) + list(s.verdicts or []):
        console.print(f"  • {escape(v)}")
    pb = s.phasebench
    for r in pb.reasons + pb.warnings:
        console.print(f"[yellow]  ! {escape(r)}[/]")
    state = "[green]VALID[/]" if run.valid else "[red]INVALID[/] (exit code 3; the reasons are above)"
    if run.partial:
        state = "[red]INVALID[/] (partial: the plan stopped before its last step)"
    console.print(f"plan: {state}")
    console.print(f"results: {escape(str(run.path))}")
