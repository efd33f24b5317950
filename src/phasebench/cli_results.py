"""Commands over finished runs: ``history``, ``import``, ``export``, ``compare``, ``report``."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .cli_common import PANEL_RESULTS, err, fail, out, warn
from .report import fmt as F
from .results import NotARunError, Run
from .store import StoreError
from .textsafe import markup as escape

DB_HELP = "Results database (default $PHASEBENCH_DB or ~/.phasebench/results.db)."


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL_RESULTS)(history)
    app.command("import", rich_help_panel=PANEL_RESULTS)(import_runs)
    app.command(rich_help_panel=PANEL_RESULTS)(export)
    app.command(rich_help_panel=PANEL_RESULTS)(compare)
    app.command(rich_help_panel=PANEL_RESULTS)(report)


def _store(db: Optional[Path]):
    from .paths import home
    from .store import Store, default_path

    return Store(db or default_path() or home() / "results.db")


def _load(ref: str, db: Optional[Path]) -> Run:
    """A run folder, or a run id (prefix) in the database; what the folder had damaged is a warning each."""
    if Path(ref).exists():
        run = Run.load(ref)
        for w in run.load_warnings:
            warn(w)
        return run
    with _store(db) as st:
        return st.load(st.find(ref))


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str | None, flag: str, end_of_day: bool = False) -> str | None:
    """``--since``/``--until``: an ISO date or date-time (``2026-12-01``, ``2026-12-01T14:00``, with or without an
    offset; UTC if none), or an age such as ``30m``, ``12h``, ``7d``, ``2w`` (that long before now). Returns an
    ISO timestamp in UTC; a date alone is the day's start (``--since``) or end (``--until``)."""
    if text is None or not text.strip():
        return None
    t = text.strip().lower()
    now = dt.datetime.now(dt.timezone.utc)
    m = _RELATIVE.fullmatch(t)
    if m:
        when = now - dt.timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    else:
        try:
            if len(t) == 10:
                day = dt.date.fromisoformat(t)
                when = dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min, dt.timezone.utc)
            else:
                when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            fail(f"{flag} {text!r}: use an ISO date or date-time (2026-12-01, 2026-12-01T14:00) or an age "
                 "(30m, 12h, 7d, 2w)")
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def history(
    model: Optional[str] = typer.Option(None, help="Filter: model name contains."),
    target: Optional[str] = typer.Option(None, help="Filter: target URL contains."),
    hardware: Optional[str] = typer.Option(None, help="Filter: hardware."),
    scenario: Optional[str] = typer.Option(None, help="Filter: scenario."),
    tag: list[str] | None = typer.Option(None, metavar="K=V", help="Filter: runs tagged key=value (`run --tag`); "
                                            "repeat for all of several."),
    since: Optional[str] = typer.Option(None, help="Filter: created on or after: an ISO date/date-time, or an age (7d, 12h)."),
    until: Optional[str] = typer.Option(None, help="Filter: created on or before: an ISO date/date-time, or an age."),
    all_runs: bool = typer.Option(False, "--all", help="Include the steps of sweeps and plans."),
    limit: int = typer.Option(50, help="At most this many rows."),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List recorded runs, newest first."""
    since, until = parse_when(since, "--since"), parse_when(until, "--until", end_of_day=True)
    if limit < 1:
        fail(f"--limit {limit}: must be at least 1")
    from .spec import SpecError, parse_tags

    try:
        tags = parse_tags(tag or [])
        with _store(db) as st:
            rows = st.history(model, target, hardware, scenario, since, until, top_only=not all_runs, limit=limit,
                              tags=tags)
    except (StoreError, SpecError) as e:
        fail(str(e))
    if json_out:
        _json(rows)
        return
    t = Table(title=f"{len(rows)} run(s)", title_justify="left")
    show_tags = any(r["tags"] for r in rows)
    for c in ("id", "created", "kind", "scenario", "model", "hardware", "valid", "done/failed", "TTFT p50", "TPOT p50",
              "out tok/s", *(("tags",) if show_tags else ()), "path"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(escape(str(r["id"])[:10]), escape(str(r["created"] or "")[:19]),
                  escape(str(r["kind"]) + (" (sim)" if r["simulated"] else "")),
                  escape(str(r["scenario"] or "-")), escape(str(r["model"] or "-")), escape(str(r["hardware"] or "-")),
                  "yes" if r["valid"] else "[red]no[/]", escape(f"{r['completed']}/{r['failed']}"),
                  F.num(r["median_ttft_ms"]), F.num(r["median_tpot_ms"]), F.num(r["output_throughput"]),
                  *((escape(" ".join(f"{k}={v}" for k, v in r["tags"].items())),) if show_tags else ()),
                  escape(str(r["path"] or "")))
    out.print(t)


def _json(obj) -> None:
    """JSON on stdout, every non-ASCII and control character \\u-escaped (rich's print_json would unescape them)."""
    import sys

    sys.stdout.write(json.dumps(obj, default=str, indent=2) + "\n")


def import_runs(
    paths: list[Path] = typer.Argument(..., help="Run folders to add (sweeps and plans bring their steps), or "
                                       "`vllm bench serve --save-result` JSON files (each becomes a run folder beside it)."),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
) -> None:
    """Add existing run folders (or vLLM bench result files) to the results database."""
    from .store import import_folder

    for p in paths:
        try:
            rid, notes = import_folder(p, db)
        except (NotARunError, StoreError) as e:
            fail(str(e))
        for w in notes:
            warn(w)
        out.print(f"imported {escape(str(p))} as {escape(rid)}" + (f" ({len(notes)} warning(s))" if notes else ""))


def export(
    runs: Optional[list[str]] = typer.Argument(None, help="Run folders or ids: export their requests (or, with "
                                               "--format openmetrics, their summaries). Omit with --summaries."),
    summaries: bool = typer.Option(False, help="Export a table of run summaries (filtered like history)."),
    fmt: str = typer.Option("csv", "--format", help="csv | jsonl | parquet | openmetrics (the runs' summaries as "
                            "OpenMetrics text, for a Pushgateway or a textfile collector)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="File to write (openmetrics: stdout if omitted)."),
    model: Optional[str] = typer.Option(None, help="With --summaries: model contains."),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
) -> None:
    """Write runs' per-request table, a table of recorded runs' summaries, or runs' summaries as OpenMetrics."""
    from .store import REQUEST_COLUMNS, SUMMARY_COLUMNS, request_table, write_table

    if fmt == "openmetrics":
        _export_openmetrics(runs or [], output, db)
        return
    if fmt not in ("csv", "jsonl", "parquet"):
        fail(f"unknown export format {fmt!r} (csv, jsonl, parquet, openmetrics)")
    if output is None:
        fail(f"--format {fmt}: give the file to write with -o/--output")
    try:
        if summaries:
            with _store(db) as st:
                rows = st.history(model=model, top_only=False, limit=1_000_000)
            write_table(rows, SUMMARY_COLUMNS, output, fmt)
        elif runs:
            recs = [x for ref in runs for leaf in _load(ref, db).leaves() for x in leaf.records]
            rows = request_table(recs)
            write_table(rows, REQUEST_COLUMNS, output, fmt)
        else:
            fail("give a run to export its requests, or --summaries")
    except (StoreError, NotARunError) as e:
        fail(str(e))
    out.print(f"wrote {len(rows)} rows to {escape(str(output))}")


def _export_openmetrics(runs: list[str], output: Optional[Path], db: Optional[Path]) -> None:
    import sys

    from .openmetrics import exposition

    if not runs:
        fail("--format openmetrics: give the runs to export (folders or ids)")
    try:
        text = exposition([_load(r, db) for r in runs])
    except (StoreError, NotARunError) as e:
        fail(str(e))
    if output is None:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(text)
    except OSError as e:
        fail(f"{output}: cannot be written ({e.strerror or e})")
    out.print(f"wrote the OpenMetrics text of {len(runs)} run(s) to {escape(str(output))}")


def compare(
    runs: list[str] = typer.Argument(..., help="Two or more run folders or ids; the first is the baseline."),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Metric by metric, side by side, with the change against the first run and whether it is significant."""
    from .compare import compare as do_compare
    from .report.compare import print_comparison

    if len(runs) < 2:
        fail("compare needs at least two runs")
    try:
        loaded = [_load(r, db) for r in runs]
    except (StoreError, NotARunError) as e:
        fail(str(e))
    c = do_compare(loaded, runs)
    if json_out:
        _json(c.to_dict())
        return
    print_comparison(c, out)


def report(
    runs: list[str] = typer.Argument(..., help="Run folders or ids; several overlay on shared axes."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="report.html (one self-contained file) or report.md (+ PNGs)."),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
) -> None:
    """Write a self-contained HTML report (or Markdown with PNG plots beside it)."""
    from rich.progress import Progress

    from .report.document import write_report
    from .report.plots import ALL

    try:
        loaded = [_load(r, db) for r in runs]
    except (StoreError, NotARunError) as e:
        fail(str(e))
    names = [Path(r).name if Path(r).exists() else r for r in runs]
    try:
        with Progress(console=err, transient=True) as prog:
            task = prog.add_task("plots", total=len(ALL))
            files = write_report(loaded, output, names, tick=lambda name: prog.update(task, advance=1, description=name))
    except (ValueError, RuntimeError) as e:
        fail(str(e))
    out.print(f"wrote {escape(str(files[0]))}" + (f" and {len(files) - 1} plot(s) beside it" if len(files) > 1 else ""))
