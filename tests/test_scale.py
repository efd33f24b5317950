"""All cores and beyond: the schedule sharded over client worker processes, and over Ray actors on a local
Ray instance bound to 127.0.0.1. Real processes, real HTTP to the mock server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

import phasebench
from phasebench.client.workers import auto_workers
from phasebench.records import read_records
from phasebench.results import Run
from phasebench.schedule import make_schedule

from .conftest import ENV, MockProc, spec


def test_workers_share_one_run_folder(server, tmp_path):
    server.configure(ttft_ms=15, itl_ms=5)
    r = phasebench.run(spec(server, tmp_path, requests=60, output_tokens=8, concurrency=[6], workers=2))
    recs = read_records(tmp_path / "run" / "requests.jsonl").records
    assert sorted(x.index for x in recs) == list(range(60))  # every request once, in the one requests.jsonl
    assert all(x.ok for x in recs) and r.summary["completed"] == 60
    w = r.manifest["client_workers"]
    assert w["count"] == 2 and sum(x["records"] for x in w["workers"]) == 60
    assert len({x["pid"] for x in w["workers"]}) == 2
    assert r.summary["median_ttft_ms"] >= 15  # the server's programmed TTFT, measured from the schedule
    assert r.summary["phasebench"]["client"]["loop_lag_ms"]["count"] > 0  # the workers' heartbeats come back
    assert server.stats()["max_in_flight"] <= 6


@pytest.mark.slow
def test_open_loop_schedule_is_the_same_whatever_the_worker_count(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=2)
    s = spec(server, tmp_path, scenario="server", rate=[40], requests=40, output_tokens=4, workers=3)
    r = phasebench.run(s)
    want = make_schedule(s).offsets_ns.tolist()
    got = [x.scheduled_ns for x in sorted(r.records, key=lambda x: x.index)]
    assert got == want
    lag = r.summary["phasebench"]["metrics"]["send_lag_ms"]
    assert lag["p50"] < 5


def _worker_pids(parent: int, timeout: float = 60) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            kids = [c for c in psutil.Process(parent).children(recursive=True)
                    if "spawn_main" in " ".join(c.cmdline())]
        except psutil.NoSuchProcess:
            return []
        if len(kids) >= 2:
            return [k.pid for k in kids]
        time.sleep(0.05)
    return []


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phasebench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.slow
def test_a_dead_worker_loses_only_what_it_had_in_flight(tmp_path):
    m = MockProc("--ttft-ms", "5", "--itl-ms", "10")
    out = tmp_path / "run"
    try:
        proc = _cli("run", "--url", m.url, "--concurrency", "4", "--requests", "200", "--output-tokens", "10",
                    "--input-tokens", "8", "--workers", "2", "--out", str(out))
        pids = _worker_pids(proc.pid)
        assert len(pids) == 2
        end = time.monotonic() + 60
        while time.monotonic() < end and not ((out / "requests.jsonl").exists()
                                              and len((out / "requests.jsonl").read_bytes().splitlines()) >= 10):
            time.sleep(0.05)
        psutil.Process(pids[0]).kill()
        _, err = proc.communicate(timeout=120)
    finally:
        m.kill()
    assert proc.returncode == 3, err  # finished, but partial: INVALID
    back = Run.load(out)
    assert back.partial and any("died" in x for x in back.summary["phasebench"]["reasons"])
    recs = read_records(out / "requests.jsonl").records
    assert 10 <= len(recs) < 200 and len({x.index for x in recs}) == len(recs)
    assert any(w["died"] for w in back.manifest["client_workers"]["workers"])


@pytest.mark.slow
def test_sigterm_stops_every_worker(tmp_path):
    m = MockProc("--ttft-ms", "5", "--itl-ms", "20")
    out = tmp_path / "run"
    try:
        proc = _cli("run", "--url", m.url, "--concurrency", "4", "--requests", "400", "--output-tokens", "20",
                    "--input-tokens", "8", "--workers", "2", "--out", str(out))
        pids = _worker_pids(proc.pid)
        end = time.monotonic() + 60
        while time.monotonic() < end and not ((out / "requests.jsonl").exists()
                                              and len((out / "requests.jsonl").read_bytes().splitlines()) >= 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        sent = m.stats()["count"]
    finally:
        m.kill()
    assert proc.returncode == 143
    back = Run.load(out)
    recs = read_records(out / "requests.jsonl").records
    assert len(recs) == sent - back.summary["phasebench"]["warmup"]["requests"]
    assert any(x.error_type == "cancelled" for x in recs)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_auto_workers():
    assert auto_workers(64, cores=16) == 1  # light load: one process
    assert auto_workers(1000, cores=16) == 8
    assert auto_workers(1000, cores=4) == 3  # one core left to the parent
    assert auto_workers(1000, cores=2) == 1


@pytest.mark.slow
def test_ray_actors_on_a_local_loopback_instance(server, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    server.configure(ttft_ms=10, itl_ms=5)
    r = phasebench.run(spec(server, tmp_path, requests=24, output_tokens=6, concurrency=[4], workers=2, ray="auto"))
    recs = read_records(tmp_path / "run" / "requests.jsonl").records
    assert sorted(x.index for x in recs) == list(range(24)) and all(x.ok for x in recs)
    w = r.manifest["client_workers"]
    assert w["ray"] == "auto" and w["count"] == 2
    for x in w["workers"]:
        # one machine: the measured offset is within its own uncertainty (half a round trip) of zero, plus slack
        assert x["clock_offset_uncertainty_ns"] > 0 and abs(x["clock_offset_ns"]) <= x["clock_offset_uncertainty_ns"] + 2_000_000
    assert r.summary["median_ttft_ms"] >= 10
