"""An ``mlperf_log_summary.txt``-like text for a run (``phasebench show --mlperf``).

The MLPerf rules checked: the latency constraints at their percentile (TTFT and TPOT, from the run's SLO or
an MLPerf preset), the minimum duration (600 s) and query count for server and offline, and, for server, the
achieved against the target rate. phasebench measures with these rules; it is not an MLPerf submission.
"""

from __future__ import annotations

from typing import Any

from ..metrics import MLPERF_MIN_DURATION_S, MLPERF_MIN_QUERIES
from ..results import Run

SCENARIO = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline", "concurrency": "Server (closed loop)",
            "sweep": "Sweep"}


def _ns(ms: float | None) -> str:
    return "-" if ms is None else str(int(round(ms * 1e6)))


def rules(run: Run) -> list[tuple[str, bool, str]]:
    """(rule, satisfied, detail) for the checks that apply to the run's scenario."""
    s = run.summary
    pb = s.get("phasebench") or {}
    scen = pb.get("scenario") or (run.manifest.get("spec") or {}).get("scenario")
    out = []
    for c in (pb.get("slo") or {}).get("constraints", []):
        v = c.get("value")
        out.append((f"{c['metric']} p{c['percentile']:g} latency constraint", bool(c["ok"]),
                    f"{'-' if v is None else f'{v:.1f}'} ms ≤ {c['limit']:g} ms"))
    if scen in ("server", "offline"):
        dur = s.get("duration") or 0
        out.append(("min duration", dur >= MLPERF_MIN_DURATION_S, f"{dur:.0f} s ≥ {MLPERF_MIN_DURATION_S:.0f} s"))
        n = s.get("completed") or 0
        out.append(("min query count", n >= MLPERF_MIN_QUERIES, f"{n} ≥ {MLPERF_MIN_QUERIES}"))
    cl = pb.get("client") or {}
    tr, ar = cl.get("target_rate"), s.get("request_throughput")
    if scen == "server" and tr:
        out.append(("achieved vs target rate", bool(ar) and ar >= 0.9 * tr, f"completed {ar or 0:.3f}/s vs scheduled {tr:.3f}/s (≥ 90%)"))
    if not pb.get("valid", True):
        for r in pb.get("reasons", []):
            if "latency constraint" not in r and "MLPerf" not in r:
                out.append(("measurement validity", False, r))
    return out


def summary_text(run: Run) -> str:
    s = run.summary
    pb = s.get("phasebench") or {}
    m = pb.get("metrics") or {}
    scen = pb.get("scenario") or (run.manifest.get("spec") or {}).get("scenario") or "?"
    checks = rules(run)
    ok = all(c[1] for c in checks)
    tgt = run.manifest.get("target") or {}
    lines = [
        "================================================", "MLPerf Results Summary (phasebench)",
        "================================================",
        f"SUT name : {tgt.get('model') or (run.manifest.get('model_file') or {}).get('name') or '-'}",
        f"Scenario : {SCENARIO.get(scen, scen)}", "Mode     : PerformanceOnly",
    ]
    metric: dict[str, Any] = {
        "server": ("Completed samples per second", f"{s.get('request_throughput') or 0:.2f}"),
        "offline": ("Samples per second", f"{s.get('request_throughput') or 0:.2f}"),
        "single-stream": ("90th percentile latency (ns)", _ns((m.get("e2e_ms") or {}).get("p90"))),
    }.get(scen, ("Completed samples per second", f"{s.get('request_throughput') or 0:.2f}"))
    lines += [f"{metric[0]} : {metric[1]}", f"Tokens per second : {s.get('output_throughput') or 0:.2f}",
              f"Result is : {'VALID' if ok else 'INVALID'}"]
    for name, good, detail in checks:
        lines.append(f"  {name} satisfied : {'Yes' if good else 'NO'}  ({detail})")
    lines += ["", "================================================", "Additional Stats",
              "================================================"]
    for key, label in (("ttft_ms", "first token latency"), ("tpot_ms", "time per output token"), ("e2e_ms", "latency")):
        d = m.get(key) or {}
        lines += [f"Min {label} (ns) : {_ns(d.get('min'))}", f"Max {label} (ns) : {_ns(d.get('max'))}",
                  f"Mean {label} (ns) : {_ns(d.get('mean'))}"]
        for q in ("p50", "p90", "p95", "p99", "p99.9"):
            lines.append(f"{q[1:]} percentile {label} (ns) : {_ns(d.get(q))}")
    sp = run.manifest.get("spec") or {}
    slo = (pb.get("slo") or {}).get("slo") or {}
    lines += ["", "================================================", "Test Parameters Used",
              "================================================",
              f"target_qps : {(pb.get('client') or {}).get('target_rate') or '-'}",
              f"ttft_latency (ns) : {_ns(slo.get('ttft_ms'))}", f"tpot_latency (ns) : {_ns(slo.get('tpot_ms'))}",
              f"latency percentile : {slo.get('percentile', '-')}",
              f"min_duration (ms) : {int(MLPERF_MIN_DURATION_S * 1000)}", f"min_query_count : {MLPERF_MIN_QUERIES}",
              f"input / output tokens : {(sp.get('input_tokens') or {}).get('mean', '-')} / {(sp.get('output_tokens') or {}).get('mean', '-')}",
              f"seed : {sp.get('seed', '-')}", ""]
    return "\n".join(lines)
