"""``phasebench compare`` rendered: the terminal table, and the comparison section of the HTML/Markdown report.

Each cell of a later run shows its value and, against the first run, one of: the change with its 95% CI and p
(✓, significant), "n.s." with the CI (not significant: no percentage that could mislead), "untested" (too few
samples for that percentile), or the bare change of a per-run figure, which has no test. A value from fewer
samples than its percentile needs carries ``*`` (``terminal.flag_percentile``). The verdict lines under the
table count only the tested changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from ..compare import ALPHA, MIN_EFFECT, STATS, UNTESTED, Comparison, Row, lower_is_better
from ..metrics import min_samples
from ..textsafe import markup as escape
from . import fmt as F
from .blocks import Block, Bullets, Heading, Para, Table
from .terminal import flag_percentile, small_sample_footnote

SIGNIFICANT_MARK = "✓"


@dataclass
class Cell:
    value: str
    note: str = ""
    tone: str = ""   # "better" | "worse" | "" (for colour)


def cell(r: Row, i: int, flagged: set[str] | None = None) -> Cell:
    """Run ``i``'s cell of row ``r`` in plain text."""
    x = r.values[i]
    value = F.num(x, 3) if x is not None and abs(x) < 10 else F.num(x)
    if r.counts:
        value = flag_percentile(value, r.stat, r.counts[i], flagged)
    verdict = r.verdicts[i] if i < len(r.verdicts) else ""
    change = r.changes[i]
    if i == 0:
        return Cell(value)
    if verdict in UNTESTED:
        return Cell(value, "untested")
    if change is None:
        return Cell(value)
    if verdict in ("significant", "not significant") and r.ci[i] is not None:
        lo, hi = r.ci[i]
        p = r.p_values[i]
        ci = f"95% CI {F.change(lo)}..{F.change(hi)}" + ("" if p is None else f", p={p:.1g}")
        if verdict == "not significant":
            return Cell(value, f"n.s. ({ci})")
        tone = "better" if (change < 0) == lower_is_better(r.metric) else "worse"
        return Cell(value, f"{F.change(change)} {SIGNIFICANT_MARK} ({ci})", tone)
    if verdict.startswith("rank"):
        return Cell(value, f"({F.change(change)}, {verdict})")
    return Cell(value, f"({F.change(change)})")


def legend() -> str:
    need = ", ".join(f"{s} {min_samples(q)}" for s, q in STATS[1:])
    return (f"{SIGNIFICANT_MARK} significant: p < {ALPHA:g} (Mann-Whitney U for p50, a seeded bootstrap for the tails), "
            f"the bootstrap 95% CI of the percentile's change excludes 0, and the change is ≥ {F.pct(MIN_EFFECT, 0)}; "
            f"n.s. = not significant; untested = fewer samples than the percentile needs in either run ({need}); "
            "a change in (brackets) is a per-run figure with one value per run, not tested")


def verdict_lines(c: Comparison) -> list[str]:
    """Per later run: the tested changes, counted (the untested and the per-run figures apart)."""
    out = []
    for t in c.tally():
        sig = t["better"] + t["worse"]
        out.append(f"run {t['run']} against run 1: {sig} significant change(s) ({t['better']} better, {t['worse']} "
                   f"worse) and {t['not_significant']} not significant among {sig + t['not_significant']} tested; "
                   f"{t['untested']} percentile change(s) untested (too few samples), {t['per_run']} per-run "
                   "figure(s) not tested")
    return out


def _rows(c: Comparison) -> tuple[list[tuple[str, list[Cell]]], set[str]]:
    flagged: set[str] = set()
    return [(f"{r.metric} {r.stat}".strip(), [cell(r, i, flagged) for i in range(len(r.values))]) for r in c.rows], flagged


def _notes(c: Comparison, flagged: set[str]) -> list[str]:
    notes = [legend()]
    if foot := small_sample_footnote(flagged):
        notes.append(foot)
    if any(r.metric == "quality score" for r in c.rows):
        notes.append("quality: exact paired sign-flip test on per-probe scores (p < 0.01 and a change ≥ 0.01)")
    return notes


def print_comparison(c: Comparison, console: Console) -> None:
    from rich.table import Table

    t = Table(title="Comparison (change against the first run)", title_justify="left")
    t.add_column("metric", justify="left")
    for i, n in enumerate(c.names):
        t.add_column(f"{i + 1}: {escape(n)}", justify="right", overflow="fold")
    rows, flagged = _rows(c)
    colour = {"better": "green", "worse": "red"}
    for label, cells in rows:
        texts = []
        for x in cells:
            note = f"[{colour[x.tone]}]{escape(x.note)}[/]" if x.tone else (f"[dim]{escape(x.note)}[/]" if x.note else "")
            texts.append(f"{escape(x.value)} {note}".strip())
        t.add_row(label, *texts)
    console.print(t)
    for line in _notes(c, flagged):
        console.print(escape(line))
    for line in verdict_lines(c):
        console.print(f"[bold]{escape(line)}[/]")
    for w in c.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def comparison_blocks(c: Comparison) -> list[Block]:
    """The report's comparison section, for its HTML and Markdown alike (each cell: the value, then its change)."""
    rows, flagged = _rows(c)
    table = Table("", ["metric", *(f"{i + 1}: {n}" for i, n in enumerate(c.names))],
                  [[label, *(f"{x.value} {x.note}".strip() for x in cells)] for label, cells in rows])
    return [Heading("Comparison (change against the first run)"), table,
            *(Para(n, "small") for n in _notes(c, flagged)), *(Para(v, "lead") for v in verdict_lines(c)),
            Bullets([f"warning: {w}" for w in c.warnings], "warn")]
