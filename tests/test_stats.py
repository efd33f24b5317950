"""Statistics that do not mislead: every percentile change tested (or labelled untested), percentiles from too
few samples flagged, rates from too few requests warned about, and fits far from their own points refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from rich.console import Console

from phasebench.compare import (
    BOOTSTRAP,
    Comparison,
    bootstrap_change,
    bootstrap_percentile,
    compare,
    percentile_row,
)
from phasebench.metrics import describe, min_samples, small_rate_warning, too_few_for
from phasebench.model.fitcheck import MAX_FIT_ERROR, FitRefused, median_abs
from phasebench.report.compare import print_comparison
from phasebench.report.document import write_report
from phasebench.report.terminal import flag_percentile, latency_table, small_sample_footnote
from phasebench.results import Run, Summary
from phasebench.runner import run

from .conftest import ENV, spec


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=120, check=False)


# --- the sample-size rule ------------------------------------------------------------------------------------
def test_min_samples_is_one_over_one_minus_q():
    assert [min_samples(p) for p in (50, 90, 95, 99, 99.9)] == [2, 10, 20, 100, 1000]
    assert too_few_for(50) == {"p99": 100, "p99.9": 1000}
    assert too_few_for(100) == {"p99.9": 1000}
    d = describe(range(50))
    assert d["count"] == 50 and d["too_few_for"] == {"p99": 100, "p99.9": 1000} and d["p99"] == pytest.approx(48.51)


def test_n50_flags_p99_but_not_p90():
    flagged: set[str] = set()
    assert flag_percentile("12.3", "p99", 50, flagged) == "12.3*"
    assert flag_percentile("4.0", "p90", 50, flagged) == "4.0"
    assert flag_percentile("-", "p99", 0, flagged) == "-"
    assert flagged == {"p99"}
    assert small_sample_footnote(flagged).startswith("* fewer than 100 samples for p99")
    assert small_sample_footnote(set()) is None
    summary = {"phasebench": {"metrics": {"ttft_ms": describe(np.linspace(10, 20, 50))}}}
    con = Console(record=True, width=200)
    flagged = set()
    con.print(latency_table(Summary.model_validate(summary), flagged))
    text = con.export_text()
    assert f"{describe(np.linspace(10, 20, 50))['p99']:,.2f}*" in text and flagged == {"p99"}


def test_small_rate_warning_names_the_count_and_the_offered_rate():
    w = small_rate_warning(2, 1.0, 0.25, 2.0)
    assert "only 2 completed" in w and "±71%" in w and "exceeds the offered 0.25/s" in w
    assert "exceeds" not in small_rate_warning(5, 100.0, 0.25, 0.05)


def test_a_run_of_few_requests_warns_about_its_rates(server, tmp_path):
    few = run(spec(server, tmp_path / "few", requests=3))
    assert any("small sample" in w and "only 3 completed" in w for w in few.summary["phasebench"]["warnings"])
    assert few.summary["phasebench"]["metrics"]["ttft_ms"]["too_few_for"]["p99"] == 100
    enough = run(spec(server, tmp_path / "enough", requests=12, concurrency=[4], scenario="concurrency"))
    assert not any("small sample" in w for w in enough.summary["phasebench"]["warnings"])
    p = cli("show", str(tmp_path / "few" / "run"))
    assert p.returncode == 0 and "* fewer than 10 samples for p90, fewer than 100 samples for p99" in p.stdout
    assert "small sample" in p.stdout


# --- the bootstrap -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,q", [(37, 50), (37, 90), (200, 99), (201, 95)])
def test_order_statistic_bootstrap_equals_resampling(n, q):
    """Drawing the resample's order statistics from Beta laws gives the distribution that resampling gives."""
    x = np.sort(np.random.default_rng(n).lognormal(0, 1, n))
    fast = bootstrap_percentile(x, q, np.random.default_rng(1), 100_000)
    slow = np.percentile(x[np.random.default_rng(2).integers(0, n, (40_000, n))], q, axis=1)
    for c in (10, 25, 50, 75, 90):
        assert np.percentile(fast, c) == pytest.approx(np.percentile(slow, c), rel=0.03)


def _row(a: np.ndarray, b: np.ndarray, stat: str, q: float):
    return percentile_row("ttft_ms", stat, q, [np.sort(a), np.sort(b)], seed=[7])


def test_a_clearly_different_p99_is_significant_and_the_same_median_is_not():
    rng = np.random.default_rng(11)
    a = rng.lognormal(3, 0.3, 3000)
    b = a.copy()
    b[a > np.percentile(a, 97)] *= 2.0          # the same body, a tail twice as long
    p99 = _row(a, b, "p99", 99)
    assert p99.verdicts[1] == "significant" and p99.changes[1] > 0.5 and p99.ci[1][0] > 0.3
    assert p99.p_values[1] < 0.01 and p99.counts == [3000, 3000]
    p50 = _row(a, b, "p50", 50)
    assert p50.changes[1] == 0 and p50.verdicts[1] == "not significant"


def test_identical_distributions_are_not_significant_at_any_percentile():
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(3, 0.5, 2000), rng.lognormal(3, 0.5, 2000)
    for stat, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        r = _row(a, b, stat, q)
        assert r.verdicts[1] == "not significant", (stat, r.changes[1], r.ci[1], r.p_values[1])
        assert r.ci[1][0] < 0 < r.ci[1][1]


def test_too_few_samples_leave_the_tail_untested():
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 1, 50), rng.normal(20, 1, 50)
    assert _row(a, b, "p99", 99).verdicts[1] == "untested" and _row(a, b, "p99", 99).ci[1] is None
    assert _row(a, b, "p95", 95).verdicts[1] == "significant"   # 50 ≥ 20
    assert _row(a[:9], b[:9], "p90", 90).verdicts[1] == "untested"


def test_bootstrap_is_reproducible_and_fast_at_1e5_samples():
    rng = np.random.default_rng(0)
    a, b = np.sort(rng.lognormal(0, 1, 100_000)), np.sort(rng.lognormal(0.01, 1, 100_000))
    t = time.perf_counter()
    first = [bootstrap_change(a, b, q, seed=[1, int(q)]) for q in (50, 90, 95, 99)]
    took = time.perf_counter() - t
    assert first == [bootstrap_change(a, b, q, seed=[1, int(q)]) for q in (50, 90, 95, 99)]
    assert took < 3.0, took   # ~0.03 s here: O(1) per replicate, whatever n is
    assert BOOTSTRAP == 10_000


# --- compare end to end on the mock server ---------------------------------------------------------------------
def test_compare_tests_each_percentile_and_counts_only_tested_changes(server, tmp_path):
    def one(name: str, itl: float) -> Run:
        server.configure(ttft_ms=30, itl_ms=itl, itl_jitter_ms=0.5)
        return run(spec(server, tmp_path / name, requests=30, output_tokens=12, concurrency=[2], scenario="concurrency"))

    a, b = one("a", 3), one("b", 30)
    c = compare([a, b], ["a", "b"])
    row = {(r.metric, r.stat): r for r in c.rows}
    itl = row[("itl_token_ms", "p99")]
    assert itl.counts[0] >= 100 and itl.verdicts[1] == "significant" and itl.ci[1][0] > 0.3   # 3 → 30 ms
    assert row[("ttft_ms", "p99")].verdicts[1] == "untested"      # 30 requests < 100
    assert row[("ttft_ms", "p90")].verdicts[1] in ("significant", "not significant")
    assert row[("ttft_ms", "p90")].ci[1] is not None
    t = c.tally()[0]
    tested = sum(1 for r in c.rows if r.verdicts[1] in ("significant", "not significant"))
    assert t["better"] + t["worse"] + t["not_significant"] == tested and t["worse"] >= 4 and t["untested"] >= 3
    assert t["untested"] == sum(1 for r in c.rows if r.verdicts[1] == "untested")

    p = cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"))
    assert p.returncode == 0, p.stderr
    assert "untested" in p.stdout and "✓" in p.stdout and "95% CI" in p.stdout
    assert "fewer than 100 samples for p99" in p.stdout and "run 2 against run 1:" in p.stdout
    p = cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--json")
    d = json.loads(p.stdout)
    j = next(r for r in d["rows"] if r["metric"] == "itl_token_ms" and r["stat"] == "p99")
    assert j["verdicts"][1] == "significant" and len(j["ci"][1]) == 2 and j["counts"][0] >= 100
    assert d["tally"][0] == t and d["min_samples"]["p99"] == 100
    # the same result twice: the bootstrap is seeded
    assert cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--json").stdout == p.stdout

    for out in (tmp_path / "r.html", tmp_path / "r.md"):
        write_report([a, b], out, ["a", "b"])
        text = out.read_text()
        assert "Comparison (change against the first run)" in text and "untested" in text
        assert "run 2 against run 1" in text and "fewer than 100 samples for p99" in text


def test_print_comparison_counts_only_tested_changes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(10, 1, 400), rng.normal(12, 1, 400)
    rows = [_row(a, b, s, q) for s, q in (("p50", 50), ("p90", 90), ("p99", 99))] + [_row(a[:50], b[:50], "p99", 99)]
    c = Comparison(["a", "b"], rows, [])
    con = Console(record=True, width=250)
    print_comparison(c, con)
    text = con.export_text()
    assert "3 significant change(s) (0 better, 3 worse) and 0 not significant among 3 tested; 1 percentile " \
           "change(s) untested" in text
    p99_lines = [line for line in text.splitlines() if "ttft_ms p99" in line]
    assert "untested" in p99_lines[-1] and "%" not in p99_lines[-1]   # never a bare change for the untested cell
    assert "✓" in p99_lines[0] and "95% CI" in p99_lines[0]


# --- fits refused above the error limit ------------------------------------------------------------------------
TOY = {"name": "toy-fit", "kind": "gpu", "tflops": {"fp16": 1.0}, "memory_gb": 8, "memory_gbps": 100,
       "source": "test", "date": "2026-12-01", "price_source": "none"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A PHASEBENCH_HOME of this test's own (calibrations and hardware records), for it and its subprocesses."""
    h = tmp_path / "home"
    (h / "hardware").mkdir(parents=True)
    (h / "hardware" / "toy-fit.yaml").write_text(yaml.safe_dump(TOY))
    monkeypatch.setenv("PHASEBENCH_HOME", str(h))
    return h


SAME_WORK_6X_APART = (("fast", 64, 20, 4), ("slow", 64, 120, 24))   # no one set of factors fits both
SLOWER_FOR_SHORTER = (("n32", 32, 100, 24), ("n128", 128, 20, 4), ("n512", 512, 150, 30))  # no rising line fits


def _runs(server, tmp_path, plan, **kw) -> list[str]:
    """Single-stream runs of (name, input tokens, TTFT ms, ITL ms) on the mock server; their folders."""
    paths = []
    for name, n_in, ttft, itl in plan:
        server.configure(ttft_ms=ttft, itl_ms=itl)
        run(spec(server, tmp_path / name, requests=3, input_tokens=n_in, output_tokens=10, scenario="single-stream", **kw))
        paths.append(str(tmp_path / name / "run"))
    return paths


def test_calibrate_refuses_a_bad_fit_unless_forced(server, tmp_path, home):
    import os

    env = {**ENV, "PHASEBENCH_HOME": os.environ["PHASEBENCH_HOME"]}
    paths = _runs(server, tmp_path, SAME_WORK_6X_APART, model_spec="smollm2-135m", hardware="toy-fit")
    p = cli("calibrate", *paths, env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "not stored" in p.stderr and "median |relative error| on its own 4 points" in p.stderr
    assert f"above the {MAX_FIT_ERROR:.0%} limit" in p.stderr and "--force" in p.stderr
    assert not (home / "calibration.json").exists()
    p = cli("calibrate", *paths, "--force", env=env)
    assert p.returncode == 0 and "stored with --force" in p.stdout, p.stderr
    rec = next(iter(json.loads((home / "calibration.json").read_text()).values()))
    assert rec["forced"] is True and rec["median_abs_error"] > MAX_FIT_ERROR
    assert "stored with --force" in rec["efficiency"]["warning"]
    p = cli("predict", "--model", "smollm2-135m", "--hardware", "toy-fit", env=env)
    assert p.returncode == 0 and "stored with --force" in p.stdout
    # a run's roofline block, and a simulation, say so when they use it
    server.configure(ttft_ms=20, itl_ms=4)
    r = run(spec(server, tmp_path / "after", requests=3, model_spec="smollm2-135m", hardware="toy-fit"))
    assert any("stored with --force" in n for n in r.summary["phasebench"]["roofline"]["notes"])
    p = cli("simulate", "--model", "smollm2-135m", "--hardware", "toy-fit", "--rate", "2", "--requests", "20",
            "--out", str(tmp_path / "sim"), "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert any("stored with --force" in w for w in json.loads(p.stdout)["phasebench"]["warnings"])


def test_profile_fit_refuses_a_bad_fit_unless_forced(server, tmp_path, home):
    from phasebench.sim.profile import FittedProfile, fit_profile

    paths = _runs(server, tmp_path, SLOWER_FOR_SHORTER)
    prof = fit_profile([Run.load(x) for x in paths])
    assert prof.fit_error == pytest.approx(max(prof.error["prefill_median_abs"], prof.error["decode_median_abs"]))
    assert prof.fit_error > MAX_FIT_ERROR
    with pytest.raises(FitRefused, match="not stored"):
        prof.save(tmp_path / "p.json")
    out = tmp_path / "profile.json"
    p = cli("profile", "fit", *paths, "-o", str(out))
    assert p.returncode == 2 and "fitted profile not stored" in p.stderr and not out.exists(), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = cli("profile", "fit", *paths, "-o", str(out), "--force")
    assert p.returncode == 0 and "stored with --force" in p.stdout, p.stderr
    back = FittedProfile.load(out)
    assert back.forced and back.fit_error == pytest.approx(prof.fit_error)
    p = cli("simulate", "--profile", str(out), "--rate", "2", "--requests", "20", "--input-tokens", "64",
            "--output-tokens", "10", "--out", str(tmp_path / "sim"), "--json")
    assert p.returncode == 0, p.stderr
    assert any("stored with --force" in w for w in json.loads(p.stdout)["phasebench"]["warnings"])


def test_median_abs_is_the_fit_error():
    assert median_abs([0.1, -0.5, 0.2]) == pytest.approx(0.2) and median_abs([]) == 0.0
