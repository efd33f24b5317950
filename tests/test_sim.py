"""The serving simulator, disaggregation and cost: queueing theory, scheduling, hand-worked cases, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from phasebench.compare import compare
from phasebench.cost import cost_block
from phasebench.model.arch import load_model
from phasebench.model.errors import ModelError
from phasebench.model.hardware import load_hardware
from phasebench.model.phases import Precision, Setup, predict
from phasebench.report.document import write_report
from phasebench.results import Run
from phasebench.runner import run
from phasebench.sim import disagg as D
from phasebench.sim.profile import AnalyticProfile, FittedProfile, fit_profile
from phasebench.sim.replica import NeverFits, SchedulerConfig, simulate, token_times
from phasebench.sim.run import simulate_run
from phasebench.spec import RunSpec
from phasebench.store import Store

from .conftest import ENV, spec

CONST = 0.1  # seconds per iteration in the constant-time profile


def const_profile() -> FittedProfile:
    return FittedProfile((CONST, 0.0, 0.0), (CONST, 0.0, 0.0))


@pytest.mark.slow
def test_md1_mean_wait_matches_queueing_theory():
    # one server, deterministic service D, Poisson arrivals: Wq = ρ·D / (2(1−ρ))  (Pollaczek–Khinchine)
    for lam in (5.0, 8.0):
        rho = lam * CONST
        rng = np.random.default_rng(7)
        arr = np.cumsum(rng.exponential(1 / lam, 100_000))
        res = simulate(arr, [16] * len(arr), [1] * len(arr), const_profile(), SchedulerConfig(batching=False, max_queue=10**9))
        wait = np.mean([r.first_token - r.arrival - CONST for r in res.reqs])
        assert wait == pytest.approx(rho * CONST / (2 * (1 - rho)), rel=0.05), lam


def test_continuous_batching_beats_static_on_the_same_trace():
    rng = np.random.default_rng(3)
    n = 600
    arr = np.cumsum(rng.exponential(1 / 15, n))
    outs = [int(x) for x in rng.integers(4, 200, n)]
    prof = FittedProfile((0.01, 2e-5, 0.0), (0.008, 1e-7, 2e-4))
    cont = simulate(arr, [100] * n, outs, prof, SchedulerConfig(max_seqs=16))
    stat = simulate(arr, [100] * n, outs, prof, SchedulerConfig(max_seqs=16, static=True))
    e2e = lambda res: np.mean([r.end - r.arrival for r in res.reqs])
    assert e2e(cont) < 0.5 * e2e(stat)
    assert cont.sim_seconds < stat.sim_seconds  # the same work finishes sooner
    for res in (cont, stat):
        assert all(len(token_times(res, r)) == r.n_out for r in res.reqs)


def test_kv_pressure_preempts_and_recomputes_without_losing_tokens():
    prof = FittedProfile((0.01, 1e-5, 0.0), (0.005, 1e-7, 1e-4))
    res = simulate(np.zeros(40), [400] * 40, [300] * 40, prof, SchedulerConfig(max_seqs=64, kv_blocks=400))
    assert res.preemptions > 0
    for r in res.reqs:
        ts = token_times(res, r)
        assert len(ts) == 300 and ts == sorted(ts) and r.end == pytest.approx(ts[-1])
    with pytest.raises(NeverFits, match="can never fit"):
        simulate(np.zeros(1), [10_000], [10], prof, SchedulerConfig(kv_blocks=100))


def test_the_simulator_pauses_the_garbage_collector_and_gives_it_back():
    import gc

    prof = FittedProfile((0.01, 1e-5, 0.0), (0.005, 1e-7, 1e-4))
    seen = []

    class Spy:   # records whether the collector runs while the loop asks for iteration times
        def iteration(self, *a):
            seen.append(gc.isenabled())
            return prof.iteration(*a)

    assert gc.isenabled()
    simulate(np.zeros(3), [10] * 3, [5] * 3, Spy(), SchedulerConfig())
    assert seen and not any(seen) and gc.isenabled()
    with pytest.raises(NeverFits):   # an error inside gives it back too
        simulate(np.zeros(1), [10_000], [10], prof, SchedulerConfig(kv_blocks=100))
    assert gc.isenabled()
    gc.disable()
    try:   # a caller that paused it keeps it paused
        simulate(np.zeros(2), [10] * 2, [5] * 2, prof, SchedulerConfig())
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_chunked_prefill_keeps_decode_flowing():
    prof = FittedProfile((0.005, 2e-5, 0.0), (0.005, 1e-7, 1e-4))
    arr = np.array([0.0] + [0.05 * i for i in range(1, 40)])
    ins = [64] + [8000] * 39
    outs = [200] + [4] * 39
    chunked = simulate(arr, ins, outs, prof, SchedulerConfig(max_batched_tokens=512))
    whole = simulate(arr, ins, outs, prof, SchedulerConfig(max_batched_tokens=16384, chunked_prefill=False))
    gaps = lambda res: np.diff(token_times(res, res.reqs[0])).max()
    assert gaps(chunked) < gaps(whole) / 2   # a long prompt never stalls the running decode for its whole prefill


def test_over_capacity_is_stopped_and_said(tmp_path):
    s = RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[200], requests=20_000, input_tokens=64,
                output_tokens=64, out=tmp_path / "sim")
    r = simulate_run(s, FittedProfile((0.05, 0, 0), (0.05, 0, 0)), SchedulerConfig(max_seqs=2, max_queue=500))
    assert r.manifest["simulation"]["over_capacity"] and not r.valid
    assert "over capacity" in r.summary["phasebench"]["reasons"][0]
    assert r.summary["failed"] > 0


@pytest.mark.slow
def test_simulated_run_folder_is_a_run_like_any_other(server, tmp_path, monkeypatch):
    db = tmp_path / "r.db"
    monkeypatch.setenv("PHASEBENCH_DB", str(db))
    setup = Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))
    s = RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[10], requests=300, input_tokens="256:64",
                output_tokens="128:32", out=tmp_path / "sim", slo="ttft=200,tpot=30", hardware="h100-sxm")
    sim = simulate_run(s, AnalyticProfile(setup), SchedulerConfig())
    back = Run.load(tmp_path / "sim")
    assert back.manifest["simulated"] and all(r.simulated for r in back.records)
    assert back.summary["completed"] == 300 and back.summary["median_tpot_ms"] > 0
    cost = back.summary["phasebench"]["cost"]
    assert cost["usd_per_1m_output_tokens_all_in"] == pytest.approx(2.99 / 3600 / back.summary["output_throughput"] * 1e6)
    assert cost["usd_per_1m_tokens"] == pytest.approx(2.99 / 3600 / back.summary["total_token_throughput"] * 1e6)
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "show", str(tmp_path / "sim")], capture_output=True,
                       text=True, env={**ENV, "PHASEBENCH_DB": str(db)}, timeout=60)
    assert p.returncode == 0 and "simulated" in p.stdout
    measured = run(spec(server, tmp_path / "m", requests=5, input_tokens=256, output_tokens=16))
    c = compare([measured, sim])
    assert any("simulated" in w for w in c.warnings)
    write_report([sim, measured], tmp_path / "r.html")
    assert "(simulated)" in (tmp_path / "r.html").read_text()
    with Store(db) as st:
        rows = st.history(top_only=False)
        assert any(r["simulated"] and r["engine"] == "simulator" for r in rows)


def test_break_even_bandwidth_hand_worked():
    # Llama-2-7B, 2,048 prompt tokens, fp16 KV: 2048 × 512 KiB = 1 GiB to ship
    m = load_model("llama-2-7b")
    pre = Setup(m, load_hardware("h100-sxm"), precision=Precision.uniform("fp16"))
    col = Setup(m, load_hardware("a100-80gb-sxm"), precision=Precision.uniform("fp16"))
    dec = Setup(m, load_hardware("a100-80gb-sxm"), precision=Precision.uniform("fp16"))
    kv = 2048 * 512 * 1024
    assert D.kv_bytes(dec, 2048) == kv
    saved = predict(col, 1, 2048, 64).ttft_s - predict(pre, 1, 2048, 1).ttft_s
    assert saved > 0
    link = D.Link("x", 12.5e9, 0.0)
    pt = D.analytic_point(pre, dec, col, link, 2048, 64)
    assert pt.break_even_ttft_gbps * 1e9 == pytest.approx(kv / saved, rel=0.01)
    # at exactly that bandwidth disaggregated TTFT equals colocated TTFT
    at = D.analytic_point(pre, dec, col, D.Link("be", kv / saved, 0.0), 2048, 64)
    assert at.disaggregated["ttft_ms"] == pytest.approx(at.colocated["ttft_ms"], rel=0.01)
    # layer-by-layer overlap hides most of it
    assert D.transfer_s(kv, link, 0.05, 32, overlap=True) < D.transfer_s(kv, link) / 2
    # KV converted to fp8 on the decode side halves the bytes
    dec8 = Setup(m, load_hardware("h100-sxm"), precision=Precision("fp16", "fp16", "fp8"))
    assert D.kv_bytes(dec8, 2048) == kv / 2


def test_disagg_sweep_and_pool_ratio():
    m = load_model("llama-2-7b")
    pre = Setup(m, load_hardware("h100-sxm"))
    groq = Setup(m, load_hardware("groq-rack"))
    rows = D.sweep(pre, groq, pre, [128, 2048], [1.25, 450], 128, 10e-6)
    assert {r["input_tokens"] for r in rows} == {128, 2048}
    slow = next(r for r in rows if r["input_tokens"] == 2048 and r["bandwidth_gbps"] == 1.25)
    fast = next(r for r in rows if r["input_tokens"] == 2048 and r["bandwidth_gbps"] == 450)
    assert slow["disagg_e2e_s"] > fast["disagg_e2e_s"]
    ratio = D.pool_ratio(pre, Setup(m, load_hardware("a100-80gb-sxm")), 512, 128, tpot_slo_ms=50)
    assert ratio["decode_batch"] > 1 and ratio["prefill_replicas_per_decode_replica"] > 0


def test_bad_network_and_rate():
    for bad in ("0", "-5", "nonsense-net"):
        with pytest.raises(ModelError):
            D.parse_network(bad)
    assert D.parse_network("100gbe").bandwidth == 12.5e9
    assert D.parse_network("50,3").latency_s == pytest.approx(3e-6)
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "disagg", "--model", "llama-2-7b", "--prefill", "h100-sxm",
                        "--decode", "a100-80gb-sxm", "--network", "0"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 2 and "bandwidth must be > 0" in p.stderr
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "simulate", "--model", "llama-2-7b", "--hardware", "h100-sxm",
                        "--rate", "0", "--requests", "10"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 2 and "rate" in p.stderr


def test_profile_fit_needs_enough_points(server, tmp_path):
    r = run(spec(server, tmp_path, scenario="single-stream", requests=3, input_tokens=32, output_tokens=4))
    with pytest.raises(ModelError, match="too few prefill points"):
        fit_profile([r])


def test_cost_of_a_measured_run(server, tmp_path):
    r = run(spec(server, tmp_path, requests=6, hardware="h100-sxm", devices=2, slo="ttft=5000,tpot=500"))
    c = r.summary["phasebench"]["cost"]
    out_tps = r.summary["output_throughput"]
    assert c["usd_per_1m_output_tokens_all_in"] == pytest.approx(2.99 * 2 / 3600 / out_tps * 1e6)
    assert c["output_tokens_per_usd"] == pytest.approx(out_tps / (2.99 * 2 / 3600))
    # energy: no roofline block on a mock-server run, so utilisation is the busy fraction from Little's law
    busy = min(r.summary["request_throughput"] * r.summary["mean_e2el_ms"] / 1e3, 1.0)
    assert c["utilisation"] == pytest.approx(busy)
    assert c["output_tokens_per_joule"] == pytest.approx(out_tps / (2 * (210 + (700 - 210) * busy)))
    assert c["usd_per_1m_output_tokens_at_slo"] >= c["usd_per_1m_output_tokens"] * 0.99
    assert cost_block(None, 1, r.summary) is None
    local_price = cost_block("h100-sxm", 1, r.summary, price_per_hour=1.0)
    assert local_price["price_source"] == "given"


@pytest.mark.slow
def test_simulate_and_disagg_commands(tmp_path):
    env = {**ENV, "PHASEBENCH_DB": "off"}
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "simulate", "--model", "llama-3-8b", "--hardware", "l40s",
                        "--rate", "5", "--requests", "200", "--out", str(tmp_path / "s")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "requests per CPU-second" in p.stdout and (tmp_path / "s" / "summary.json").exists()
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "simulate", "--model", "llama-3-8b", "--hardware", "l40s",
                        "--rate", "5000", "--requests", "20000", "--max-seqs", "2", "--summary-only",
                        "--out", str(tmp_path / "over")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 3, p.stderr  # finished and written, but over capacity: INVALID, not an internal error
    assert Run.load(tmp_path / "over").manifest["simulation"]["over_capacity"]
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "disagg", "--model", "llama-2-7b", "--prefill", "h100-sxm",
                        "--decode", "groq-rack", "--network", "100gbe", "--input-tokens", "512", "--output-tokens", "128",
                        "--rate", "2", "--requests", "100", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["point"]["disaggregated"]["tpot_ms"] < d["point"]["colocated"]["tpot_ms"]   # Groq decodes faster
    assert set(d["simulated"]) == {"colocated", "disaggregated"}


def _same(a, b, path=""):  # noqa: ANN001
    """Equal summaries: the same keys and types, floats to 1e-9 (summation order differs)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and b == pytest.approx(a, rel=1e-9, abs=1e-9), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def test_columnar_summary_and_records_equal_the_per_record_path(tmp_path):
    """sim/columns.py computes summary.json from arrays and writes requests.jsonl without asdict: the same
    summary as metrics.summarize on the records, and records read_records reads back field for field."""
    from dataclasses import asdict

    import orjson

    from phasebench.metrics import RunContext, summarize
    from phasebench.records import read_records
    from phasebench.sim.columns import (
        _Lists,
        _record_dict,
        _row_tokens,
        _rows,
        concat,
        db_rows,
        from_result,
        summarize_columns,
        to_records,
        write_jsonl,
    )
    from phasebench.spec import SLO

    prof = FittedProfile((0.01, 1e-5, 0.0), (0.005, 1e-7, 1e-4))
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(1 / 30, 400))
    ins = [int(x) for x in rng.integers(10, 900, 400)]
    outs = [int(x) for x in rng.integers(1, 60, 400)]
    cases = {
        "preemption": [simulate(np.zeros(40), [400] * 40, [300] * 40, prof, SchedulerConfig(max_seqs=64, kv_blocks=400))],
        "poisson": [simulate(arr, ins, outs, prof, SchedulerConfig(max_seqs=16))],
        "two replicas": [simulate(arr[0::2], ins[0::2], outs[0::2], prof, SchedulerConfig()),
                         simulate(arr[1::2], ins[1::2], outs[1::2], prof, SchedulerConfig())],
        "over capacity": [simulate(np.cumsum(rng.exponential(1 / 3000, 3000)), [500] * 3000, [50] * 3000, prof,
                                   SchedulerConfig(max_seqs=8, max_queue=100))],
        "decode only": [simulate(arr, ins, outs, prof, SchedulerConfig(), decode_only=True)],
        "no batching": [simulate(arr[:60], ins[:60], outs[:60], prof, SchedulerConfig(batching=False))],
        "closed loop": [simulate(None, ins[:80], outs[:80], prof, SchedulerConfig(), closed_concurrency=4)],
    }
    slo = SLO(ttft_ms=500, tpot_ms=8, itl_ms=9)
    for name, results in cases.items():
        n = sum(len(r.reqs) for r in results)
        cols = concat([from_result(r, list(range(k, n, len(results)))) for k, r in enumerate(results)])
        recs = to_records(cols)
        for r, res in zip(recs[:: len(results)], results[0].reqs):    # token times as token_times() gives them
            if res.end >= 0:
                assert r.chunk_ns == [int(round(x * 1e9)) for x in token_times(results[0], res)], name
        for ctx in (RunContext("server", slo), RunContext("server", slo, warmup_s=0.5, cooldown_s=0.3)):
            _same(summarize(recs, ctx), summarize_columns(cols, ctx), name)
        write_jsonl(cols, tmp_path / "r.jsonl")
        # the writer's byte templates give what orjson writes for each row's record dict, byte for byte
        lists, ones = _Lists(cols), np.ones(int(cols.n_tok.max()), dtype=np.int64)
        want = [orjson.dumps(_record_dict(lists, k, t, ones), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                for k, t in _row_tokens(cols, lists.served)]
        assert [b"".join(pieces) for pieces in _rows(cols, lists)] == want, name
        # the database's request rows from the arrays: what recording the records would store (store._metrics)
        from phasebench.records import parse_record
        from phasebench.store import _metrics

        got = list(db_rows(cols))
        assert [(i, *m) for i, _, *m in got] == [(r.index, *_metrics(r)) for r in recs], name
        assert [parse_record(j) for _, j, *_ in got] == recs, name
        back = read_records(tmp_path / "r.jsonl")
        assert back.skipped == 0
        strip = lambda r: {k: v for k, v in asdict(r).items() if k != "request_id"}  # noqa: E731
        assert [strip(r) for r in back.records] == [strip(r) for r in recs], name
        assert [type(v) for v in asdict(back.records[0]).values()] == [type(v) for v in asdict(recs[0]).values()]
    assert len(cases["preemption"][0].reqs) and any(r.preemptions for r in cases["preemption"][0].reqs)


def test_a_recorded_simulation_stores_the_records_its_folder_holds(tmp_path, monkeypatch):
    """The database's rows come from the arrays (columns.db_rows), not from RequestRecords: the same records as
    requests.jsonl, request ids included, and the same per-request metrics as recording the records gives."""
    from phasebench.records import read_records
    from phasebench.store import _metrics

    db = tmp_path / "r.db"
    monkeypatch.setenv("PHASEBENCH_DB", str(db))
    s = RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[200], requests=300, input_tokens="300:200",
                output_tokens="40:30", out=tmp_path / "s", hardware="h100-sxm", seed=3)
    setup = Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))
    run = simulate_run(s, AnalyticProfile(setup), SchedulerConfig(max_seqs=8, max_queue=20))   # some not served
    on_disk = read_records(tmp_path / "s" / "requests.jsonl").records
    assert on_disk == run.records and any(r.error_type for r in on_disk) and any(not r.error for r in on_disk)
    with Store(db) as st:
        rid = st.find(str(tmp_path / "s"))
        assert st.load(rid).records == on_disk
        rows = st.db.execute("SELECT idx, ttft_ms, tpot_ms, e2e_ms, error_type FROM requests WHERE run_id=? "
                             "ORDER BY idx", (rid,)).fetchall()
    assert rows == [(r.index, *_metrics(r)) for r in on_disk]


def test_summary_only_mode_writes_no_records(tmp_path, monkeypatch):
    monkeypatch.setenv("PHASEBENCH_DB", "off")
    s = RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[20], requests=200, input_tokens=128,
                output_tokens=32, out=tmp_path / "s", hardware="h100-sxm")
    setup = Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))
    r = simulate_run(s, AnalyticProfile(setup), SchedulerConfig(), summary_only=True)
    assert not (tmp_path / "s" / "requests.jsonl").exists() and not r.records
    assert (tmp_path / "s" / "summary.json").exists() and r.summary["completed"] == 200
    assert r.manifest["simulation"]["summary_only"]
