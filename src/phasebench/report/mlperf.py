"""``phasebench show --mlperf``: the run's ``mlperf_log_summary.txt``, the file written beside its summary.json.

One writer (:func:`phasebench.loadgen.log_summary`): the file is printed as it is on disk; a folder written
before the file existed (or a run not on disk) gets the same text made from its summary now.
"""

from __future__ import annotations

from ..loadgen import LOG_SUMMARY, log_summary
from ..results import Run


def summary_text(run: Run) -> str:
    if run.path is not None and (run.path / LOG_SUMMARY).is_file():
        try:
            return (run.path / LOG_SUMMARY).read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass  # unreadable: made again from summary.json below
    return log_summary(run.meta, run.result)
