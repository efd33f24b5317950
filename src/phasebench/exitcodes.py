"""phasebench's exit codes: one meaning each, so a CI pipeline can gate on a run (docs/metrics.md, README)."""

from __future__ import annotations

OK = 0  # the run finished and is VALID
INTERNAL = 1  # a bug in phasebench (a traceback): please report it
USAGE = 2  # a bad flag, spec, dataset or run folder: nothing was run (one-line error)
INVALID = 3  # the run finished, its records and summary are written, but it is INVALID (reasons printed)
SERVER_GONE = 4  # the target could not be reached, or stopped answering during the run (partial results kept)
# 128 + N: stopped by signal N (130 Ctrl-C / SIGINT, 143 SIGTERM, 129 SIGHUP); partial results kept


def for_signal(signum: int) -> int:
    return 128 + int(signum)


HELP = (
    "Exit codes: 0 finished and VALID · 2 bad input (nothing run) · 3 finished but INVALID · "
    "4 server unreachable or gone mid-run (partial kept) · 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM) · "
    "1 internal error."
)
