"""Scraping a Prometheus ``/metrics`` endpoint: one parsed ``Snapshot`` per scrape, and a ``Scraper`` thread
that takes one before the run, one about every second during it (off the event loop, so the client's hot
path is not touched), and one after.

The exposition text is parsed with ``prometheus_client``'s own parser. Samples are summed over their label
sets (a single-model server labels them by model and engine index), except the histogram ``le`` label,
which is kept as buckets, and ratio-like gauges (``*_perc``, ``*usage*``, ``*ratio``), which are averaged.
trtllm-serve's ``/metrics`` answers JSON iteration statistics instead; those become gauges too.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

import orjson

from ..spec import redact_url

now_ns = time.perf_counter_ns


class ScrapeError(RuntimeError):
    """The metrics endpoint could not be read or parsed."""


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last
    sum: float
    count: float

    def minus(self, before: "Histogram | None") -> "Histogram":
        if before is None:
            return self
        old = dict(before.buckets)
        return Histogram([(le, c - old.get(le, 0.0)) for le, c in self.buckets], self.sum - before.sum,
                         self.count - before.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus ``histogram_quantile``: linear within the bucket holding rank q·count. A rank in the
        +Inf bucket returns the highest finite bound (the value is at least that)."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lo, prev = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lo
                width = cum - prev
                return lo + (le - lo) * ((rank - prev) / width if width > 0 else 1.0)
            lo, prev = (le if not math.isinf(le) else lo), cum
        return lo


@dataclass
class Snapshot:
    t_ns: int
    types: dict[str, str] = field(default_factory=dict)  # family name -> counter|gauge|histogram|summary|untyped
    values: dict[str, float] = field(default_factory=dict)  # sample name (labels summed away) -> value
    histograms: dict[str, Histogram] = field(default_factory=dict)  # family name -> buckets/sum/count
    fmt: str = "prometheus"  # or "trtllm-json"

    def get(self, *names: str) -> float | None:
        """The first of ``names`` present (counters may be given with or without ``_total``)."""
        for n in names:
            for k in (n, n + "_total") if not n.endswith("_total") else (n, n[: -len("_total")]):
                if k in self.values:
                    return self.values[k]
        return None

    def hist(self, *names: str) -> Histogram | None:
        for n in names:
            if n in self.histograms:
                return self.histograms[n]
        return None

    def names(self) -> list[str]:
        return sorted(set(self.values) | set(self.histograms))


_RATIO = ("_perc", "usage", "ratio", "_rate", "utilization")


def parse_metrics(text: str, t_ns: int | None = None) -> Snapshot:
    """Parse Prometheus exposition text (or trtllm-serve's JSON iteration stats) into a ``Snapshot``."""
    snap = Snapshot(now_ns() if t_ns is None else t_ns)
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        return _parse_trtllm_json(stripped, snap)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    buckets: dict[str, dict[float, float]] = {}
    # imported here: a run that never scrapes never loads it
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as e:
        raise ScrapeError(f"not Prometheus text: {e}") from None
    for fam in families:
        if fam.name.endswith("_created"):
            continue
        snap.types[fam.name] = fam.type
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            if not isinstance(s.value, (int, float)) or math.isnan(s.value):
                continue
            if s.name.endswith("_bucket") and "le" in s.labels:
                le = float(s.labels["le"])
                b = buckets.setdefault(s.name[: -len("_bucket")], {})
                b[le] = b.get(le, 0.0) + s.value
                continue
            sums[s.name] = sums.get(s.name, 0.0) + float(s.value)
            counts[s.name] = counts.get(s.name, 0) + 1
    for name, v in sums.items():
        ratio = snap.types.get(name) == "gauge" and any(r in name for r in _RATIO)
        snap.values[name] = v / counts[name] if ratio else v
    for name, b in buckets.items():
        snap.histograms[name] = Histogram(sorted(b.items()), snap.values.get(name + "_sum", 0.0),
                                          snap.values.get(name + "_count", 0.0))
    return snap


def _parse_trtllm_json(text: str, snap: Snapshot) -> Snapshot:
    """trtllm-serve ``/metrics``: a JSON list of per-iteration stats; the last iteration becomes gauges."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ScrapeError(f"neither Prometheus text nor JSON: {e}") from None
    snap.fmt = "trtllm-json"
    last = data[-1] if isinstance(data, list) and data else data if isinstance(data, dict) else {}

    def flat(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flat(f"{prefix}{k}.", v) if isinstance(v, dict) else flat(prefix + str(k), v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            snap.values["trtllm_iter:" + prefix.rstrip(".")] = float(obj)
            snap.types["trtllm_iter:" + prefix.rstrip(".")] = "gauge"

    flat("", last)
    return snap


MAX_BODY = 32 * 2**20


@cache
def _opener() -> Any:
    """urllib's opener that takes a redirect as an error: following it would send the scrape's Authorization
    header to another place. Built on first use (urllib.request brings http.client and ssl, ~50 ms of imports a
    process that never scrapes, as a simulation or a report, does not pay)."""
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to {redact_url(newurl)} not followed", headers,
                                         fp)

    return urllib.request.build_opener(_NoRedirect)


def fetch(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> Snapshot:
    """GET and parse one scrape; the time stamp is the middle of the request (perf_counter_ns)."""
    import urllib.error
    import urllib.request

    opener = _opener()
    req = urllib.request.Request(url, headers={"Accept": "text/plain", **(headers or {})})
    shown = redact_url(url)
    t1 = now_ns()
    try:
        with opener.open(req, timeout=timeout) as r:
            raw = r.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        raise ScrapeError(f"{shown} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise ScrapeError(f"cannot read {shown}: {getattr(e, 'reason', e)}") from None
    t2 = now_ns()
    if len(raw) > MAX_BODY:
        raise ScrapeError(f"{shown} answered more than {MAX_BODY // 2**20} MiB: not read (a partial scrape would "
                          "difference wrongly)")
    body = raw.decode("utf-8", "replace")
    if not body.strip():
        raise ScrapeError(f"{shown} answered an empty body")
    return parse_metrics(body, (t1 + t2) // 2)


class Scraper:
    """Before / every ``interval`` s during / after a run. ``row`` turns a scrape into one time-series line
    (written to ``series_path`` as JSON Lines as it comes, times in seconds from ``t0``)."""

    def __init__(self, url: str, series_path: Path | None = None, interval: float = 1.0, timeout: float = 2.0,
                 headers: dict[str, str] | None = None,
                 row: Callable[[Snapshot, Snapshot], dict[str, Any]] | None = None) -> None:
        self.url = url
        self.source = redact_url(url)  # what results and messages show: no credentials, query or fragment
        self.series_path = series_path
        self.interval = interval
        self.timeout = timeout
        self.headers = headers or {}
        self.row = row
        self.engine = "unknown"  # set from the metric names of the first scrape
        self.before: Snapshot | None = None
        self.after: Snapshot | None = None
        self.series: list[dict[str, Any]] = []
        self.scrapes = 0
        self.failures = 0
        self.error: str | None = None
        self.t0 = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: Any = None

    def take(self) -> Snapshot:
        s = fetch(self.url, self.timeout, self.headers)
        self.scrapes += 1
        return s

    def begin(self) -> bool:
        """The 'before' scrape (blocking). False (and ``error`` set) when the endpoint is not usable."""
        try:
            self.before = self.take()
        except ScrapeError as e:
            self.error = str(e)
            return False
        return True

    def start(self, t0_ns: int) -> None:
        """Start the periodic scrapes (after ``begin`` succeeded)."""
        if self.before is None:
            return
        self.t0 = t0_ns
        if self.series_path is not None:
            self._file = open(self.series_path, "ab")
        self._thread = threading.Thread(target=self._loop, name="phasebench-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # the first periodic scrape comes one interval after the start ('before' was just taken): a run shorter
        # than that is not disturbed by scrapes at all
        next_t = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t += self.interval
            try:
                self._record(self.take())
            except ScrapeError:
                self.failures += 1

    def _record(self, snap: Snapshot) -> None:
        if self.row is None or self.before is None:
            return
        line = {"t_s": round((snap.t_ns - self.t0) / 1e9, 3), **self.row(snap, self.before)}
        self.series.append(line)
        if self._file is not None:
            self._file.write(orjson.dumps(line) + b"\n")
            self._file.flush()

    def finish(self) -> None:
        """Stop the thread and take the 'after' scrape (blocking); a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + self.interval + 1)
        if self.before is not None:
            try:
                self.after = self.take()
                self._record(self.after)
            except ScrapeError as e:
                self.error = f"after the run: {e}"
        if self._file is not None:
            self._file.close()
            self._file = None
