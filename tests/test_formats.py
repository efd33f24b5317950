"""The ecosystem's formats: MLPerf LoadGen's mlperf_log_summary.txt, vLLM's --save-result keys, OpenMetrics."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from phasebench.loadgen import LOG_SUMMARY
from phasebench.model.arch import load_model
from phasebench.model.hardware import load_hardware
from phasebench.model.phases import Setup
from phasebench.openmetrics import exposition
from phasebench.results import Run
from phasebench.runner import run
from phasebench.sim.profile import AnalyticProfile
from phasebench.sim.replica import SchedulerConfig
from phasebench.sim.run import simulate_run
from phasebench.spec import RunSpec

from .conftest import ENV, spec


def parse_log_summary(path: Path) -> dict[str, str]:
    """mlperf_log_summary.txt read the way MLPerf's own scripts read it (mlcommons/inference
    compliance/TEST04/verify_performance.py): a line whose start matches a key, its value after the first ": "."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ": " in line and not line.startswith(" * "):
            key, value = line.split(": ", 1)
            out.setdefault(key.strip(), value.strip())
    return out


def ns_of(ms: float) -> int:
    return round(ms * 1e6)


@pytest.fixture
def server_run(server, tmp_path) -> Run:
    server.configure(ttft_ms=20, itl_ms=2)
    return run(spec(server, tmp_path, scenario="server", rate=[40], requests=24, slo="ttft=2000,tpot=200"))


def test_mlperf_log_summary_is_written_in_loadgens_spelling(server_run, tmp_path):
    f = tmp_path / "run" / LOG_SUMMARY
    text = f.read_text()
    assert text.startswith("================================================\nMLPerf Results Summary\n"
                           "================================================\n")
    for section in ("Additional Stats", "Test Parameters Used"):
        assert f"\n================================================\n{section}\n" in text
    kv = parse_log_summary(f)
    s = Run.load(tmp_path / "run").summary
    pb, m = s["phasebench"], s["phasebench"]["metrics"]
    assert kv["Scenario"] == "Server" and kv["Mode"] == "PerformanceOnly" and kv["SUT name"] == "mock-model (phasebench)"
    assert float(kv["Completed samples per second"]) == pytest.approx(s["request_throughput"], abs=0.005)
    assert float(kv["Completed tokens per second"]) == pytest.approx(s["output_throughput"], abs=0.005)
    assert float(kv["Scheduled samples per second"]) == pytest.approx(pb["client"]["scheduled_rate"], abs=0.005)
    # 24 requests in well under 600 s: MLPerf's rules make it INVALID, whatever phasebench's own verdict
    assert kv["Result is"] == "INVALID" and kv["Min duration satisfied"] == "NO" and kv["Min queries satisfied"] == "NO"
    assert kv["Performance constraints satisfied"] == "Yes" and kv["Early stopping satisfied"] == "Yes"
    assert "TTFT Early Stopping Result:" in text and "TPOT Early Stopping Result:" in text
    for label, key in (("latency", "e2e_ms"), ("first token latency", "ttft_ms"), ("time to output token", "tpot_ms")):
        for pct, stat in (("50.00", "p50"), ("90.00", "p90"), ("95.00", "p95"), ("97.00", "p97"), ("99.00", "p99"),
                          ("99.90", "p99.9")):
            assert int(kv[f"{pct} percentile {label} (ns)"]) == ns_of(m[key][stat]), (label, pct)
    assert int(kv["Min latency (ns)"]) == ns_of(m["e2e_ms"]["min"])
    assert int(kv["Max First Token latency (ns)"]) == ns_of(m["ttft_ms"]["max"])
    assert int(kv["Mean Time per Output Token (ns)"]) == ns_of(m["tpot_ms"]["mean"])
    assert float(kv["target_qps"]) == 40 and int(kv["ttft_latency (ns)"]) == 2000 * 10**6
    assert int(kv["tpot_latency (ns)"]) == 200 * 10**6 and kv["min_duration (ms)"] == "600000"
    assert re.search(r"^No errors encountered during test\.$", text, re.MULTILINE)
    # show --mlperf prints that same file
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "show", "--mlperf", str(tmp_path / "run")],
                       capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert p.returncode == 0 and p.stdout == text


def test_an_old_folder_without_the_file_still_shows_the_same_text(server_run, tmp_path):
    f = tmp_path / "run" / LOG_SUMMARY
    written = f.read_text()
    f.unlink()
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "show", "--mlperf", str(tmp_path / "run")],
                       capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert p.returncode == 0 and p.stdout == written


def test_closed_loop_and_simulated_runs_get_the_file_labelled(server, tmp_path):
    run(spec(server, tmp_path / "c", scenario="concurrency", concurrency=[2], requests=6))
    kv = parse_log_summary(tmp_path / "c" / "run" / LOG_SUMMARY)
    assert kv["Scenario"] == "Server (closed loop)" and "Completed samples per second" in kv
    setup = Setup(load_model("llama-3-8b"), load_hardware("h100-sxm"))
    s = RunSpec(url="http://sim.invalid/v1", scenario="offline", requests=50, input_tokens=128, output_tokens=32,
                out=tmp_path / "sim")
    sim = simulate_run(s, AnalyticProfile(setup), SchedulerConfig(), record=False)
    kv = parse_log_summary(tmp_path / "sim" / LOG_SUMMARY)
    assert kv["Scenario"] == "Offline" and kv["SUT name"].endswith("(simulated by phasebench)")
    assert float(kv["Samples per second"]) == pytest.approx(sim.summary["request_throughput"], rel=1e-5)
    assert float(kv["Tokens per second"]) == pytest.approx(sim.summary["output_throughput"], rel=1e-5)
    assert "50.00 percentile first token latency (ns)" not in kv  # LoadGen's Offline has no token latencies


def test_vllm_save_result_keys(server, tmp_path):
    closed = run(spec(server, tmp_path / "c", scenario="concurrency", concurrency=[3], requests=6)).summary
    assert closed["request_rate"] == "inf" and closed["max_concurrency"] == 3 and closed["burstiness"] == 1.0
    assert closed["backend"] == closed["endpoint_type"] and closed["num_prompts"] == 6
    assert re.fullmatch(r"\d{8}-\d{6}", closed["date"]) and closed["model_id"] == "mock-model"
    opened = run(spec(server, tmp_path / "o", scenario="server", rate=[30], burstiness=0.5, requests=6)).summary
    assert opened["request_rate"] == 30 and opened["burstiness"] == 0.5 and opened["max_concurrency"] is None


def test_openmetrics_export_parses_back_with_the_runs_figures(server, tmp_path):
    server.configure(model="m\"od\\el\nx")  # a served model id that needs escaping in a label value
    a = run(spec(server, tmp_path / "a", scenario="concurrency", concurrency=[2], requests=8))
    server.configure()
    run(spec(server, tmp_path / "b", scenario="sweep", concurrency=[1, 2], requests=4))
    out = tmp_path / "m.txt"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "export", "--format", "openmetrics",
                        str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "-o", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["phasebench_ttft_seconds"].type == "summary" and fams["phasebench_valid"].type == "gauge"
    ttft = [x for x in fams["phasebench_ttft_seconds"].samples if x.labels.get("quantile") == "0.99"]
    assert len(ttft) == 3  # run a and the sweep's two steps
    mine = next(x for x in ttft if x.labels["step"] == "")
    assert mine.labels["model"] == a.manifest["target"]["model"] == "m\"od\\el\nx"  # escaped, and read back whole
    assert parse_log_summary(tmp_path / "a" / "run" / LOG_SUMMARY)["SUT name"] == 'm"od\\el x (phasebench)'  # one line
    assert mine.labels["scenario"] == "concurrency" and mine.labels["concurrency"] == "2"
    assert mine.value == pytest.approx(a.summary["phasebench"]["metrics"]["ttft_ms"]["p99"] / 1e3)
    steps = sorted(x.labels["step"] for x in ttft if x.labels["step"])
    assert steps == ["00-c1", "01-c2"]
    thr = {x.labels["step"]: x.value for x in fams["phasebench_request_throughput"].samples}
    assert thr[""] == pytest.approx(a.summary["request_throughput"])
    assert {x.labels["step"]: x.value for x in fams["phasebench_valid"].samples}[""] == float(a.valid)
    count = next(x for x in fams["phasebench_e2e_seconds"].samples if x.name.endswith("_count") and not x.labels["step"])
    assert count.value == a.summary["phasebench"]["metrics"]["e2e_ms"]["count"]
    # to stdout when no file is given; the same text as the library makes in-process
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "export", "--format", "openmetrics",
                        str(tmp_path / "a" / "run")], capture_output=True, env=ENV, timeout=60, check=False)
    assert p.returncode == 0 and p.stdout == exposition([Run.load(tmp_path / "a" / "run")])
    assert all(math.isfinite(x.value) for f in fams.values() for x in f.samples)
