"""When to send: arrival processes, as absolute offsets from the run's start, in nanoseconds.

Open-loop scenarios (server, offline) fix every send time before the run starts; the client sends at those
absolute deadlines and never "sleeps after send", so a slow response cannot delay the next arrival, and
latency is counted from the scheduled time. Closed-loop scenarios (single-stream, concurrency N) schedule a
request the moment a slot frees up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import RunSpec, Scenario


@dataclass(frozen=True)
class Schedule:
    kind: str  # "open" | "closed"
    concurrency: int | None  # closed loop: slots
    offsets_ns: np.ndarray | None  # open loop: send time of each request from t0
    count: int | None  # max requests (None: bounded by duration)
    duration_s: float | None
    target_rate: float | None  # requests/s the schedule aims at (open loop)
    first_index: int = 0  # request k of this schedule is the run's request first_index + k * index_step
    index_step: int = 1

    def index(self, k: int) -> int:
        return self.first_index + k * self.index_step

    def shard(self, w: int, n: int) -> "Schedule":
        """Worker ``w`` of ``n``'s part: every n-th request (open loop: at the same absolute send times, so the
        schedule is the same whatever n is; closed loop: its share of the slots and of the request count)."""
        if n <= 1:
            return self
        if self.kind == "open":
            assert self.offsets_ns is not None
            offs = self.offsets_ns[w::n]
            return Schedule("open", None, offs, len(offs), self.duration_s, self.target_rate, w, n)
        conc = self.concurrency or 1
        slots = conc // n + (1 if w < conc % n else 0)
        count = len(range(w, self.count, n)) if self.count is not None else None
        return Schedule("closed", slots, None, count, self.duration_s, None, w, n)


def gamma_gaps(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Inter-arrival gaps (s): gamma with shape=burstiness and mean 1/rate. burstiness 1 is Poisson
    (exponential gaps); < 1 is burstier, > 1 smoother (vLLM's convention)."""
    theta = 1.0 / (rate * burstiness)
    return rng.gamma(shape=burstiness, scale=theta, size=n)


def arrivals(rate: float, burstiness: float, seed: int, count: int | None, duration: float | None) -> np.ndarray:
    """Absolute arrival offsets (ns) of an open-loop server run; the first request goes at t=0."""
    rng = np.random.default_rng(seed)
    if count is not None:
        gaps = gamma_gaps(max(count - 1, 0), rate, burstiness, rng)
        t = np.concatenate([[0.0], np.cumsum(gaps)])
        if duration is not None:
            t = t[t < duration]
    else:
        assert duration is not None
        est = int(rate * duration * 1.5) + 16
        t = np.concatenate([[0.0], np.cumsum(gamma_gaps(est, rate, burstiness, rng))])
        while t[-1] < duration:
            more = np.cumsum(gamma_gaps(est, rate, burstiness, rng)) + t[-1]
            t = np.concatenate([t, more])
        t = t[t < duration]
    return (t * 1e9).astype(np.int64)


def trace_schedule(offsets_ns: np.ndarray) -> Schedule:
    """A recorded trace: open loop at the trace's own (scaled) send times."""
    return Schedule("open", None, offsets_ns, len(offsets_ns), None, None)


def make_schedule(spec: RunSpec) -> Schedule:
    sc = spec.scenario
    if sc == Scenario.trace:
        from .workload.traces import load_spec_trace

        return trace_schedule(load_spec_trace(spec).offsets_ns)
    if sc == Scenario.sweep:
        raise ValueError("a sweep is run point by point: use spec.sweep_points()")
    if sc == Scenario.server:
        rate = spec.rate[0]
        offs = arrivals(rate, spec.burstiness, spec.seed, spec.requests, spec.duration)
        return Schedule("open", None, offs, len(offs), spec.duration, rate)
    if sc == Scenario.offline:
        n = spec.requests or 0
        if not n:
            raise ValueError("offline needs --requests (all are issued at t=0)")
        return Schedule("open", None, np.zeros(n, dtype=np.int64), n, spec.duration, None)
    conc = 1 if sc == Scenario.single_stream else spec.concurrency[0]
    return Schedule("closed", conc, None, spec.requests, spec.duration, None)
