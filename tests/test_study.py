"""Cost and energy on hand-worked cases, the disaggregation gain under load, and `phasebench study` end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from phasebench.cost import IDLE_FRACTION, cost_block, power_w
from phasebench.model.errors import ModelError
from phasebench.model.phases import setup_for
from phasebench.runner import run
from phasebench.sim.gain import CSV_COLUMNS, GainStudy, break_even, crossings
from phasebench.sim.run import analytic_profile, scheduler_for, simulate_run
from phasebench.spec import SLO, RunSpec
from phasebench.study import run_study

from .conftest import ENV, spec


def _summary(out_tps: float, in_tps: float, ttft_ms: float, tpot_ms: float, mean_out: float, **pb) -> dict:
    return {"output_throughput": out_tps, "total_token_throughput": out_tps + in_tps,
            "phasebench": {"metrics": {"ttft_sent_ms": {"mean": ttft_ms}, "tpot_ms": {"mean": tpot_ms},
                                       "output_tokens": {"mean": mean_out}, "input_tokens": {"mean": 20.0}}, **pb}}


def test_cost_is_split_by_phase_time_without_double_counting():
    # $3.60/h on one device = $0.001/s; 200 input + 100 output tokens/s; prefill 100 ms, decode 10 × 10 ms = 100 ms
    s = _summary(100.0, 200.0, ttft_ms=100.0, tpot_ms=10.0, mean_out=11.0)
    c = cost_block("h100-sxm", 1, s, price_per_hour=3.6)
    assert c["prefill_share_of_bill"] == pytest.approx(0.5)
    assert c["usd_per_1m_tokens"] == pytest.approx(0.001 / 300 * 1e6)           # blended: $3.33
    assert c["usd_per_1m_input_tokens"] == pytest.approx(0.001 * 0.5 / 200 * 1e6)   # $2.50
    assert c["usd_per_1m_output_tokens"] == pytest.approx(0.001 * 0.5 / 100 * 1e6)  # $5.00
    assert c["usd_per_1m_output_tokens_all_in"] == pytest.approx(10.0)               # the whole bill on output
    # input share + output share = the blended bill, per second of the run
    bill = (200 * c["usd_per_1m_input_tokens"] + 100 * c["usd_per_1m_output_tokens"]) / 1e6
    assert bill == pytest.approx(300 * c["usd_per_1m_tokens"] / 1e6) == pytest.approx(0.001)
    # a decode-heavy run puts most of the bill on output tokens, still adding up
    s = _summary(100.0, 200.0, ttft_ms=20.0, tpot_ms=10.0, mean_out=9.0)   # 20 ms vs 80 ms
    c = cost_block("h100-sxm", 2, s, price_per_hour=3.6)
    assert c["prefill_share_of_bill"] == pytest.approx(0.2)
    assert (200 * c["usd_per_1m_input_tokens"] + 100 * c["usd_per_1m_output_tokens"]) / 1e6 == pytest.approx(0.002)


def test_a_platform_without_a_price_says_so(tmp_path):
    rec = tmp_path / "noprice.yaml"
    rec.write_text("name: No Price Accelerator\nkind: accelerator\ntflops: {fp16: 100}\nmemory_gb: 32\n"
                   "memory_gbps: 800\ntdp_w: 300\n")
    c = cost_block(str(rec), 1, _summary(100.0, 100.0, 50.0, 10.0, 11.0))
    assert c["price_per_hour"] is None and "usd_per_1m_tokens" not in c
    assert "no price" in c["note"]
    assert c["watts"] == pytest.approx(300.0)           # no utilisation known: full TDP, an upper bound
    assert c["utilisation"] is None


def test_one_energy_model_for_measured_and_simulated_runs(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PHASEBENCH_DB", "off")
    # hand-worked: MBU 0.5 on a 700 W device: 210 W idle + 490 W × 0.5 = 455 W
    assert power_w(700, 1, 0.5) == pytest.approx(700 * IDLE_FRACTION + 700 * (1 - IDLE_FRACTION) * 0.5) == pytest.approx(455)
    c = cost_block("h100-sxm", 1, _summary(100.0, 100.0, 50.0, 10.0, 11.0, roofline={"mbu": 0.5, "mfu": 0.1}))
    assert c["watts"] == pytest.approx(455) and c["output_tokens_per_joule"] == pytest.approx(100 / 455)
    # a measured run (mock server) and a simulated run: both without a roofline block, so both take the busy
    # fraction min(1, request throughput × mean E2E) through the same formula
    measured = run(spec(server, tmp_path / "m", requests=8, hardware="h100-sxm", scenario="server", rate=[20]))
    setup = setup_for("llama-3-8b", "h100-sxm")[0]
    sim = simulate_run(RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[2], requests=100, input_tokens=256,
                               output_tokens=64, out=tmp_path / "s", hardware="h100-sxm"),
                       analytic_profile(setup), scheduler_for(setup))
    for r in (measured, sim):
        s = r.summary
        c = s["phasebench"]["cost"]
        busy = min(s["request_throughput"] * s["mean_e2el_ms"] / 1e3, 1.0)
        assert 0 < busy <= 1
        assert c["utilisation"] == pytest.approx(busy)
        assert c["watts"] == pytest.approx(power_w(700, 1, busy))
        assert c["output_tokens_per_joule"] == pytest.approx(s["output_throughput"] / c["watts"])
        assert "busy fraction" in c["power_source"]


def test_break_even_interpolation_hand_worked():
    # gains 0.5, 0.9, 1.3 at 1, 10, 100 GB/s: 1 is reached a quarter of the way (in log) from 10 to 100
    be, note = break_even([1, 10, 100], [0.5, 0.9, 1.3])
    assert be == pytest.approx(10 ** 1.25) and "GB/s" in note
    assert break_even([1, 10], [1.2, 1.4])[0] == 1
    assert break_even([1, 10], [0.2, 0.4])[0] is None
    assert break_even([1, 10], [None, None])[0] is None
    assert crossings([1, 2, 3], [0.8, 1.2, 0.9]) == pytest.approx([1.5, 2 + 0.2 / 0.3 * 1])


def test_disagg_gain_table_shape_and_monotone_in_bandwidth():
    p, d = setup_for("llama-2-7b", "h100-sxm")[0], setup_for("llama-2-7b", "a100-80gb-sxm")[0]
    gs = GainStudy(analytic_profile, scheduler_for, SLO(ttft_ms=1000, tpot_ms=50), requests=60)
    bws = [0.5, 2.0, 12.5, 450.0]
    t = gs.table(p, d, [128, 2048], bws, load=0.8, rate_fractions=(0.5, 1.0, 1.5))
    assert len(t.grid) == 2 * len(bws) and len(t.by_rate) == 3
    assert {(c.input_tokens, c.bandwidth_gbps) for c in t.grid} == {(n, b) for n in (128, 2048) for b in bws}
    assert [c.rate for c in t.by_rate] == sorted(c.rate for c in t.by_rate)
    for n in (128, 2048):
        cells = sorted((c for c in t.grid if c.input_tokens == n), key=lambda c: c.bandwidth_gbps)
        good = [c.disagg_goodput for c in cells]
        # more bandwidth never serves fewer requests within the SLO (the same arrivals in every cell)
        assert all(b >= a * 0.98 for a, b in zip(good, good[1:])), (n, good)
        # the colocated baseline does not depend on the link
        assert len({c.colocated_goodput for c in cells}) == 1
        be = t.break_even_gbps[n]
        gains = [c.goodput_gain for c in cells]
        if be is None:
            assert all(g is None or g < 1 for g in gains)
        else:
            assert all(g >= 0.98 for c, g in zip(cells, gains) if c.bandwidth_gbps > be)
    # 2,048 prompt tokens are 1 GiB of KV: at 0.5 GB/s the transfer alone breaks a 1 s TTFT SLO
    slow = next(c for c in t.grid if c.input_tokens == 2048 and c.bandwidth_gbps == 0.5)
    fast = next(c for c in t.grid if c.input_tokens == 2048 and c.bandwidth_gbps == 450.0)
    assert slow.disagg_goodput < fast.disagg_goodput and slow.disagg_p99_ttft_ms > 1000
    rows = t.rows()
    assert len(rows) == len(t.grid) + len(t.by_rate) and set(rows[0]) == set(CSV_COLUMNS)
    json.dumps(t.to_dict())   # JSON-ready
    with pytest.raises(ModelError):
        gs.table(p, d, [128], [0.0])


def _run_plan_like(server, tmp_path):
    """A measured single-stream run on the mock server (prefill points of a 'local' platform)."""
    return run(spec(server, tmp_path / "plan", scenario="single-stream", requests=3, input_tokens=64, output_tokens=8))


class _Doc(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.slow
def test_study_end_to_end(tmp_path, server):
    measured = _run_plan_like(server, tmp_path)
    out = tmp_path / "study"
    plats = "h100-sxm,groq-rack,a100-80gb-sxm"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "study", "--model", "llama-2-7b", "--platforms", plats,
                        "--requests", "20", "--runs", str(measured.path), "--out", str(out)],
                       capture_output=True, text=True, env={**ENV, "PHASEBENCH_DB": "off"}, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "predicted" in p.stdout
    doc = _Doc()
    html = (out / "study.html").read_text()
    doc.feed(html)
    assert "script" not in doc.tags and "<script" not in html.lower()
    assert doc.imgs and all(s.startswith("data:image/png;base64,") for s in doc.imgs)
    text = " ".join(doc.text)
    for k in plats.split(","):
        assert k in text
    assert "predicted" in text and "measured" in text
    md = (out / "study.md").read_text()
    for name in ("ttft_vs_input", "decode_vs_batch", "normalised", "disagg_gain_grid", "disagg_gain_rate"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name}.png)" in md
    with open(out / "prefill.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"platform", "input_tokens", "ttft_ms", "ttft_ms_low", "ttft_ms_high", "measured"} <= set(rows[0])
    assert {r["platform"] for r in rows} == {*plats.split(","), "local"}      # the measured points beside
    with open(out / "decode.csv") as f:
        dec = list(csv.DictReader(f))
    assert {"platform", "batch", "tpot_ms", "decode_tokens_per_s", "crossover_batch"} <= set(dec[0])
    with open(out / "winners.csv") as f:
        win = list(csv.DictReader(f))
    assert {w["normalisation"] for w in win} == {"raw", "per chip", "per watt", "per dollar"}
    with open(out / "disagg.csv") as f:
        gains = list(csv.DictReader(f))
    assert set(gains[0]) == set(CSV_COLUMNS)
    assert {(g["prefill"], g["decode"]) for g in gains} == {(a, b) for a in plats.split(",") for b in plats.split(",") if a != b}
    st = json.loads((out / "study.json").read_text())
    assert st["reference"] == "groq-rack" and set(st["crossover"]) == {"h100-sxm", "a100-80gb-sxm"}
    # `show` on the study folder prints what `study` printed at its end, from study.json
    shown = subprocess.run([sys.executable, "-m", "phasebench.cli", "show", str(out)], capture_output=True, text=True,
                           env={**ENV, "PHASEBENCH_DB": "off"}, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "Per-phase winners (predicted)" in shown.stdout and "Disaggregation under load" in shown.stdout
    assert shown.stdout == p.stdout.split("\nwrote ")[0] + "\n"


@pytest.mark.slow
def test_study_computation_and_bad_input(tmp_path):
    st = run_study("llama-2-7b", ["h100-sxm", "mi300x"], pairs=[("h100-sxm", "mi300x")], requests=20)
    assert [p.key for p in st.platforms] == ["h100-sxm", "mi300x"] and len(st.gains) == 1
    # decode throughput grows with batch on a GPU; TTFT grows with input length
    for k in ("h100-sxm", "mi300x"):
        dec = [p for p in st.decode if p.platform == k]
        assert dec[0].x == 1 and dec[-1].throughput > 10 * dec[0].throughput
        pre = [p for p in st.prefill if p.platform == k]
        assert all(b.value > a.value for a, b in zip(pre, pre[1:]))
    per_dollar = [w for w in st.winners if w.normalisation == "per dollar"]
    assert per_dollar and all(w.winner in ("h100-sxm", "mi300x") for w in per_dollar)
    assert all(math.isfinite(v) for w in st.winners for v in w.values.values() if v is not None)
    with pytest.raises(ModelError):
        run_study("llama-2-7b", ["h100-sxm", "mi300x"], pairs=[("h100-sxm", "gaudi2")], requests=20)
    env = {**ENV, "PHASEBENCH_DB": "off"}
    for args, msg in ((["--pairs", "h100-sxm"], "prefill:decode"), (["--platforms", "no-such-gpu"], "no-such-gpu"),
                      (["--requests", "2"], "requests")):
        p = subprocess.run([sys.executable, "-m", "phasebench.cli", "study", *args, "--out", str(tmp_path / "x")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_gain_is_bounded_and_deterministic():
    p, d = setup_for("llama-2-7b", "h100-sxm")[0], setup_for("llama-2-7b", "mi300x")[0]
    mk = lambda: GainStudy(analytic_profile, scheduler_for, SLO(ttft_ms=1000, tpot_ms=50), requests=30)
    a = mk().table(p, d, [512], [12.5], rate_fractions=(1.0,))
    b = mk().table(p, d, [512], [12.5], rate_fractions=(1.0,))
    assert a.grid == b.grid and a.by_rate == b.by_rate      # seeded: the same table twice
    assert np.isfinite(a.grid[0].disagg_goodput) and a.grid[0].disagg_goodput <= a.grid[0].rate * 1.5


def test_study_html_opens_in_chromium_offline(tmp_path):
    """study.html in headless Chromium: no request but the file and its data: URIs, no error, every PNG decoded
    (skipped without Chromium, as tests/test_browser.py)."""
    import asyncio

    from .test_browser import CHROMIUM, WIDTHS, _open, artifacts

    if CHROMIUM is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    from phasebench.report.study import write_study

    st = run_study("llama-2-7b", ["h100-sxm", "groq-rack"], requests=20)
    write_study(st, tmp_path / "s")
    shots = {name: artifacts() / f"study-{name}.png" for name in WIDTHS}
    got = asyncio.run(_open((tmp_path / "s" / "study.html").as_uri(), tmp_path, shots))
    ev = got["events"]
    urls = [e["params"]["request"]["url"] for e in ev if e["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    assert not [e for e in ev if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert got["images"] and all(ok and w > 100 for ok, w in got["images"])
    for name, w in got["widths"].items():   # wide tables scroll in their wrapper, the page does not
        assert w["scroll_width"] <= w["inner_width"] == WIDTHS[name], (name, w)
