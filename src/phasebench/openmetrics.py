"""Runs' summaries as the OpenMetrics text exposition (``phasebench export --format openmetrics RUN...``).

One family per figure, one sample set per run (each step of a sweep or plan), labelled ``run_id`` (the results
database's id), ``model``, ``scenario``, ``concurrency``, ``rate``, ``step`` and ``simulated``. Latencies are
summaries in seconds (quantiles 0.5 … 0.999, ``_count``, ``_sum``); throughput, goodput, validity and counts are
gauges. ``prometheus_client`` writes the text (a registry of its own, ``openmetrics.exposition.generate_latest``),
so the escaping of label values and the closing ``# EOF`` are the library's. For a Pushgateway or the
node-exporter textfile collector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .results import Run, Stat

PREFIX = "phasebench"
LATENCIES = (  # summary key, family name, help
    ("ttft_ms", "ttft", "Time to first token, from the scheduled send"),
    ("tpot_ms", "tpot", "Time per output token after the first"),
    ("itl_chunk_ms", "itl", "Inter-token latency, per token-bearing chunk"),
    ("e2e_ms", "e2e", "End-to-end request latency, from the scheduled send"),
)
QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.97", "p97"), ("0.99", "p99"), ("0.999", "p99.9"))
GAUGES = (  # family name, help, unit, value of (summary, phasebench block)
    ("request_throughput", "Completed requests per second in the measurement window", "",
     lambda s, pb: s.request_throughput),
    ("output_throughput", "Output tokens per second in the measurement window", "",
     lambda s, pb: s.output_throughput),
    ("total_token_throughput", "Input and output tokens per second in the measurement window", "",
     lambda s, pb: s.total_token_throughput),
    ("goodput", "Requests per second that met the run's SLO", "",
     lambda s, pb: pb.slo and pb.slo.goodput),
    ("slo_attainment", "Fraction of requests that met the run's SLO", "ratio",
     lambda s, pb: pb.slo and pb.slo.attainment),
    ("valid", "1 when the run passed phasebench's validity checks, else 0", "",
     lambda s, pb: None if pb.valid is None else float(pb.valid)),
    ("completed_requests", "Requests that completed in the measurement window", "",
     lambda s, pb: s.completed),
    ("failed_requests", "Requests that failed in the measurement window", "",
     lambda s, pb: s.failed),
    ("duration", "Length of the measurement window", "seconds", lambda s, pb: s.duration),
)


def run_labels(run: Run, step: str) -> dict[str, str]:
    """The labels of one run's samples (values are outside text: the library escapes them)."""
    from .store import run_id

    sp, tgt = run.meta.spec, run.meta.target
    conc = sp.concurrency if run.scenario == "concurrency" else None
    rate = sp.rate if run.scenario == "server" else None
    return {
        "run_id": run_id(run),
        "model": str((tgt and tgt.model) or run.result.model_id or ""),
        "scenario": str(run.result.phasebench.scenario or run.scenario or ""),
        "concurrency": "" if not conc else str(conc[0]),
        "rate": "" if not rate else f"{rate[0]:g}",
        "step": step,
        "simulated": "true" if run.meta.simulated else "false",
    }


def leaves(run: Run) -> Iterator[tuple[str, Run]]:
    """(step name, run) for each run holding requests: the run itself (step ""), or each step of a sweep/plan
    by its folder path under the top."""
    if not run.children:
        yield "", run
        return
    for c in run.children:
        for name, leaf in leaves(c):
            here = c.path.name if c.path is not None else ""
            yield (f"{here}/{name}" if name else here), leaf


def _value(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class RunsCollector(Collector):
    """A prometheus_client collector of finished runs' summaries."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.samples = [(run_labels(leaf, step), leaf.result) for run in runs for step, leaf in leaves(run)]

    def collect(self) -> Iterable[Metric]:
        for key, short, doc in LATENCIES:
            fam = Metric(f"{PREFIX}_{short}_seconds", doc, "summary", unit="seconds")
            for labels, s in self.samples:
                st: Stat = getattr(s.phasebench.metrics, key)
                if not st.count:
                    continue
                for q, k in QUANTILES:
                    v = _value(getattr(st, k) if k.isidentifier() else (st.model_extra or {}).get(k))  # p99.9: kept as read
                    if v is not None:
                        fam.add_sample(fam.name, {**labels, "quantile": q}, v / 1e3)
                fam.add_sample(fam.name + "_count", labels, float(st.count))
                fam.add_sample(fam.name + "_sum", labels, (_value(st.mean) or 0.0) * st.count / 1e3)
            yield fam
        for short, doc, unit, get in GAUGES:
            name = f"{PREFIX}_{short}" + (f"_{unit}" if unit else "")
            fam = Metric(name, doc, "gauge", unit=unit)
            for labels, s in self.samples:
                v = _value(get(s, s.phasebench))
                if v is not None:
                    fam.add_sample(name, labels, v)
            yield fam


def exposition(runs: Sequence[Run]) -> bytes:
    """The OpenMetrics text of ``runs`` (ends with ``# EOF``)."""
    from prometheus_client.openmetrics.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunsCollector(runs))
    return generate_latest(registry)
