"""What every ``cli*.py`` module shares: the two consoles, one-line errors and warnings, the user-error types,
printing a run, and the names of the help panels. It imports no ``cli*`` module, so none of them import
each other (``cli.py`` alone registers the others' commands)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

# not a terminal (CI logs, pipes): wide enough that tables keep whole numbers instead of folding them
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

# `phasebench --help` groups its commands into these panels
PANEL_MEASURE = "Measure"
PANEL_RESULTS = "Results"
PANEL_MODEL = "Model and predict"
PANEL_SIMULATE = "Simulate"
PANEL_QUALITY = "Quality"
PANEL_ENGINE = "Engines and test servers"


def fail(msg: str, code: int = 2) -> None:
    """One line on stderr (outside text in ``msg`` is made terminal-safe), then exit with ``code``."""
    from .textsafe import markup

    err.print(f"[red]error:[/] {markup(msg)}", soft_wrap=True)
    raise typer.Exit(code)


def warn(msg: str) -> None:
    from .textsafe import markup

    err.print(f"[yellow]warning:[/] {markup(msg)}", soft_wrap=True)


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that are the user's mistake: each becomes a one-line error and exit 2 (``fail``)."""
    from .engine.errors import EngineError
    from .model.errors import ModelError
    from .results import NotARunError
    from .runner import RunError
    from .spec import SpecError

    return (SpecError, RunError, NotARunError, FileExistsError, EngineError, ModelError)


def print_result(result, json_out: bool) -> None:  # result: a results.Run
    """A run (or sweep) as tables, or its summary.json with ``--json``; its tags on a line of their own."""
    if json_out:
        import orjson

        sys.stdout.write(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from .report.terminal import print_run

    print_run(result, out)
    sp = result.meta.spec
    tags = (sp.tags if sp else None) or {}
    if tags:
        from .textsafe import markup

        out.print("tags: " + "  ".join(f"{markup(str(k))}={markup(str(v))}" for k, v in sorted(tags.items())))
