"""Each scenario's arrival process, checked on what was really sent."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from phasebench.results import Run
from phasebench.runner import run
from phasebench.schedule import arrivals

from .conftest import spec


def test_poisson_schedule_passes_ks_test():
    offs = arrivals(rate=50, burstiness=1.0, seed=3, count=2000, duration=None) / 1e9
    gaps = np.diff(offs)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 50)).pvalue > 0.01
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.1)
    bursty = np.diff(arrivals(rate=50, burstiness=0.25, seed=3, count=2000, duration=None))
    assert bursty.std() / bursty.mean() > 1.5  # gamma shape 0.25: CV = 2
    assert np.array_equal(arrivals(5, 1, 9, 50, None), arrivals(5, 1, 9, 50, None))  # seeded


@pytest.mark.slow
def test_server_run_sends_at_absolute_deadlines(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=2)
    r = run(spec(server, tmp_path, scenario="server", rate=[40], requests=120, output_tokens=4))
    sched = sorted(x.scheduled_ns for x in r.records)
    gaps = np.diff(sched) / 1e9
    assert stats.kstest(gaps, "expon", args=(0, 1 / 40)).pvalue > 0.01
    lag = r.summary["phasebench"]["metrics"]["send_lag_ms"]
    # sends happen at their deadlines (p50); the tail is the OS scheduler's on a busy 2-core machine, so it gets
    # a wide margin here (10 ms was seen exceeded with other jobs on the cores); the tight figure is a benchmark's
    assert lag["p50"] < 3 and lag["p99"] < 50
    # latency from the schedule is never below latency from the actual send
    assert all(x.first_token_ns - x.scheduled_ns >= x.first_token_ns - x.sent_ns for x in r.records)
    assert r.summary["request_rate"] == 40


def test_concurrency_never_exceeds_n(server, tmp_path):
    server.configure(ttft_ms=10, itl_ms=3, itl_jitter_ms=2)
    r = run(spec(server, tmp_path, scenario="concurrency", concurrency=[3], requests=15))
    assert server.stats()["max_in_flight"] <= 3
    assert r.summary["phasebench"]["client"]["max_in_flight"] == 3
    assert r.summary["completed"] == 15


def test_offline_issues_everything_at_t0(server, tmp_path):
    server.configure(ttft_ms=20, itl_ms=2)
    r = run(spec(server, tmp_path, scenario="offline", requests=12))
    assert {x.scheduled_ns for x in r.records} == {0}
    assert server.stats()["max_in_flight"] == 12


def test_duration_bounded_closed_loop(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=5)
    r = run(spec(server, tmp_path, scenario="concurrency", concurrency=[2], requests=None, duration=0.6))
    assert 4 <= r.summary["completed"] <= 40
    assert max(x.scheduled_ns for x in r.records) < 0.6e9


def test_warmup_window_excludes_by_timestamp(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=5)
    r = run(spec(server, tmp_path, scenario="server", rate=[20], requests=30, warmup=0.5, output_tokens=4))
    w0, _ = r.summary["phasebench"]["window_ns"]
    in_window = [x for x in r.records if x.scheduled_ns >= w0]
    assert r.summary["completed"] == len(in_window) < 30


def test_sweep_writes_one_block_per_point(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=2)
    r = run(spec(server, tmp_path, scenario="sweep", concurrency=[1, 2, 4], requests=4))
    assert [p["max_concurrency"] for p in r.summary["points"]] == [1, 2, 4]
    back = Run.load(tmp_path / "run")
    assert back.is_sweep and len(back.children) == 3 and back.children[2].summary["completed"] == 4


def test_warmup_requests_are_not_recorded(server, tmp_path):
    r = run(spec(server, tmp_path, requests=3, warmup_requests=2))
    assert len(r.records) == 3 and server.stats()["count"] == 5 + 0  # 2 warm-up + 3 measured
