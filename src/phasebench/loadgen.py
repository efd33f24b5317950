"""A run's figures in MLPerf LoadGen's ``mlperf_log_summary.txt``, so MLPerf's own scripts and parsers read it.

The key spellings, spacing and order are LoadGen's, copied from mlcommons/inference (commit b66003e1):
``loadgen/results.cc`` (``PerformanceSummary::LogSummary``), ``loadgen/test_settings_internal.cc``
(``TestSettingsInternal::LogSummary``, the "Test Parameters Used" lines) and ``loadgen/logging.cc`` (the warning and
error counts at the end); numbers as ``loadgen/utils.cc`` ``DoubleToString`` (fixed, 2 decimals) and C++ streams
(6 significant digits) print them. MLPerf's tools read the file line by line: ``re.match(key, line)``, then
``line.split(": ", 1)[1]`` (``compliance/TEST04/verify_performance.py``).

The values are phasebench's (``summary.json``): its percentiles (linear interpolation, not LoadGen's nearest
rank), its measurement window, its SLO. The rules are MLPerf's (600 s, the minimum query count, the latency
constraints at their percentile) plus phasebench's own validity; LoadGen's early-stopping estimate is not
computed (the constraint is checked on the requests directly; the text says so). This is not an MLPerf
submission. ``phasebench show --mlperf`` prints this file.
"""

from __future__ import annotations

from .metrics import MLPERF_MIN_DURATION_S, MLPERF_MIN_QUERIES
from .results import Constraint, Manifest, PhasebenchBlock, SLOTarget, SpecRecord, Stat, Summary
from .textsafe import clean

LOG_SUMMARY = "mlperf_log_summary.txt"
RULE = "================================================"
SCENARIOS = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline",
             "concurrency": "Server (closed loop)", "trace": "Server (trace replay)"}
PERCENTILES = ((50, "p50"), (90, "p90"), (95, "p95"), (97, "p97"), (99, "p99"), (99.9, "p99.9"))  # LoadGen's six


def double(x: float | None) -> str:
    """LoadGen's ``DoubleToString``: fixed point, 2 decimals."""
    return f"{x or 0.0:.2f}"


def stream(x: float | None) -> str:
    """A C++ ``ostream << double`` with its default precision (6 significant digits)."""
    return f"{x or 0.0:g}"


def ns(ms: float | None) -> str | None:
    """A latency in integer nanoseconds (LoadGen's ``QuerySampleLatency``), from phasebench's milliseconds."""
    return None if ms is None else str(round(ms * 1e6))


def _constraints(pb: PhasebenchBlock) -> list[Constraint]:
    return list(pb.slo.constraints) if pb.slo else []


def _latency_lines(stat: Stat, min_key: str, max_key: str, mean_key: str, pct: str) -> list[str]:
    out = [f"{k}{v}" for k, v in ((min_key, ns(stat.min)), (max_key, ns(stat.max)),
                                   (mean_key, ns(stat.mean))) if v is not None]
    for p, key in PERCENTILES:
        v = ns(getattr(stat, key) if key.isidentifier() else (stat.model_extra or {}).get(key))  # p99.9: kept as read
        if v is not None:  # a summary written before p97 was kept has no p97 line
            out.append(f"{p:.2f}{pct}{v}")
    return out


def _count(n: int, one: str, many: str, none: str) -> str:
    return none if n == 0 else (f"1 {one} encountered. See detailed log." if n == 1
                                else f"{n} {many} encountered. See detailed log.")


def log_summary(manifest: Manifest, summary: Summary) -> str:
    """The ``mlperf_log_summary.txt`` text of one run (not a sweep: each of its steps has its own), from its typed
    manifest and summary (``Run.meta``, ``Run.result``; ``results.as_manifest``/``as_summary`` for dicts)."""
    pb = summary.phasebench
    m = pb.metrics
    spec = manifest.spec or SpecRecord()
    scen = pb.scenario or spec.scenario or "?"
    name = SCENARIOS.get(scen, str(scen))
    # outside text on one line, without escapes: a model id must not break a key : value line or the terminal
    model = clean((manifest.target and manifest.target.model) or (manifest.model_file and manifest.model_file.name)
                  or "-")
    imported = manifest.imported_from.tool if manifest.imported_from else None
    sut = (f"{model} (simulated by phasebench)" if manifest.simulated else
           f"{model} (imported from {clean(imported)})" if imported else f"{model} (phasebench)")
    e2e, ttft, tpot = m.e2e_ms, m.ttft_ms, m.tpot_ms
    rps, tps = summary.request_throughput, summary.output_throughput

    lines = [RULE, "MLPerf Results Summary", RULE, f"SUT name : {sut}", f"Scenario : {name}", "Mode     : PerformanceOnly"]
    if name == "SingleStream":
        lines += [f"90.0th percentile latency (ns) : {ns(e2e.p90) or 0}",
                  f"90.0th first token percentile latency (ns) : {ns(ttft.p90) or 0}"]
    elif name == "Offline":
        lines += [f"Samples per second: {stream(rps)}", f"Tokens per second: {stream(tps)}"]
    else:
        lines += [f"Completed samples per second    : {double(rps)}", f"Completed tokens per second: {double(tps)}"]

    duration = summary.duration or 0.0
    queries = (summary.completed or 0) + (summary.failed or 0)
    cons = _constraints(pb)
    perf_ok = all(c.ok for c in cons)
    duration_ok, queries_ok = duration >= MLPERF_MIN_DURATION_S, queries >= MLPERF_MIN_QUERIES
    own = [r for r in pb.reasons if "latency constraint" not in r and not r.startswith("MLPerf")]
    valid = perf_ok and duration_ok and queries_ok and not own
    lines.append(f"Result is : {'VALID' if valid else 'INVALID'}")
    if cons:
        lines.append(f"  Performance constraints satisfied : {'Yes' if perf_ok else 'NO'}")
    lines += [f"  Min duration satisfied : {'Yes' if duration_ok else 'NO'}",
              f"  Min queries satisfied : {'Yes' if queries_ok else 'NO'}",
              f"  Early stopping satisfied: {'Yes' if perf_ok else 'NO'}"]
    if not valid:
        lines.append("Recommendations:")
        for c in cons:
            if not c.ok:
                v = "none" if c.value is None else f"{c.value:.1f}"
                lines.append(f" * Reduce target QPS to improve latency: p{c.percentile:g} {c.metric} {v} ms "
                             f"> {c.limit:g} ms.")
        if not duration_ok:
            lines.append(f" * The run lasted {duration:.1f} s; MLPerf asks for at least {MLPERF_MIN_DURATION_S:.0f} s.")
        if not queries_ok:
            lines.append(f" * {queries} queries were measured; MLPerf asks for at least {MLPERF_MIN_QUERIES}.")
        lines += [f" * phasebench: {clean(r)}" for r in own]
    if name in ("SingleStream", "Server") or name.startswith("Server"):
        n = ttft.count
        for what, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms")):
            c = next((c for c in cons if c.metric == key), None)
            lines.append(f"{what} Early Stopping Result:")
            lines.append(f" * not estimated (phasebench checks the p{c.percentile:g} constraint on the {n} "
                         f"requests directly: {'met' if c.ok else 'not met'})." if c else
                         " * not estimated (phasebench does not compute LoadGen's early-stopping bound; no "
                         "constraint was set).")

    lines += ["", RULE, "Additional Stats", RULE]
    client = pb.client
    if name == "SingleStream":
        mean_s = (e2e.mean or 0) / 1e3
        lines += [f"QPS w/ loadgen overhead         : {double(rps)}",
                  f"QPS w/o loadgen overhead        : {double(1 / mean_s if mean_s else 0)}", ""]
    elif name.startswith("Server"):
        lines.append(f"Scheduled samples per second : {double(client.scheduled_rate)}")
    lines += _latency_lines(e2e, "Min latency (ns)                : ", "Max latency (ns)                : ",
                            "Mean latency (ns)               : ", " percentile latency (ns)   : ")
    lines.append("")
    if name == "SingleStream":
        out_mean = m.output_tokens.mean or 0
        lines += [f"TPS w/ loadgen overhead         : {double(tps)}",
                  f"TPS w/o loadgen overhead        : {double(out_mean / mean_s if mean_s else 0)}"]
    elif name.startswith("Server"):
        lines.append(f"Completed tokens per second                 : {double(tps)}")
    if name != "Offline":
        lines += _latency_lines(ttft, "Min First Token latency (ns)                : ",
                                "Max First Token latency (ns)                : ",
                                "Mean First Token latency (ns)               : ",
                                " percentile first token latency (ns)   : ")
        lines.append("")
        lines += _latency_lines(tpot, "Min Time per Output Token (ns)                : ",
                                "Max Time per Output Token (ns)                : ",
                                "Mean Time per Output Token (ns)               : ",
                                " percentile time to output token (ns)   : ")

    slo = (pb.slo and pb.slo.slo) or SLOTarget()
    lines += ["", RULE, "Test Parameters Used", RULE,
              "samples_per_query : 1",
              f"target_qps : {stream(client.target_rate)}",
              f"ttft_latency (ns): {ns(slo.ttft_ms) or 0}",
              f"tpot_latency (ns): {ns(slo.tpot_ms) or 0}",
              f"min_duration (ms): {int(MLPERF_MIN_DURATION_S * 1000)}",
              f"min_query_count : {MLPERF_MIN_QUERIES}",
              f"max_query_count : {spec.requests or 0}",
              f"schedule_rng_seed : {spec.seed if 'seed' in spec.model_fields_set else 0}",
              "",
              _count(len(pb.warnings), "warning", "warnings", "No warnings encountered during test."),
              "",
              _count(summary.failed or 0, "ERROR", "ERRORS", "No errors encountered during test."),
              "",
              "phasebench: the detailed log is summary.json and requests.jsonl beside this file; see docs/formats.md.",
              ""]
    return "\n".join(lines)
