"""The phase-aware plan against any URL (here the mock server, a real process), and its decisions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phasebench.plan_any import FULL, QUICK, decode_decision, guess_model_spec, parse_budget, prefill_lengths
from phasebench.results import Run
from phasebench.spec import SpecError

from .conftest import ENV


def test_budget_and_lengths():
    assert parse_budget("10m", 1) == 600 and parse_budget("90s", 1) == 90 and parse_budget("1h", 1) == 3600
    assert parse_budget(None, 42) == 42
    with pytest.raises(SpecError, match="plan-budget"):
        parse_budget("soon", 1)
    lens, why = prefill_lengths(FULL, 2048)
    assert lens == [128, 512, 2039] and "2048" in why  # up to the context, less room for the output and BOS
    lens, why = prefill_lengths(QUICK, None)
    assert lens == [32, 256, 1024] and "does not say" in why


def test_decode_sweep_stops_for_a_stated_reason():
    pts = [{"concurrency": 1, "output_throughput": 100, "slo_ok": True},
           {"concurrency": 2, "output_throughput": 190, "slo_ok": True}]
    assert decode_decision(pts, 64, False) is None
    pts.append({"concurrency": 4, "output_throughput": 195, "slo_ok": True})
    assert "rose only +2.6%" in decode_decision(pts, 64, False)
    assert "SLO broke at concurrency 8" in decode_decision(pts + [{"concurrency": 8, "output_throughput": 400,
                                                                  "slo_ok": False}], 64, False)
    assert "largest concurrency (2)" in decode_decision(pts[:2], 2, False)
    assert "time budget" in decode_decision(pts[:2], 64, True)


def test_model_guessed_only_when_unambiguous():
    assert guess_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct")[0] == "smollm2-135m"
    key, note = guess_model_spec("meta-llama/Llama-3.1-8B-Instruct")
    assert key == "llama-3.1-8b" and "guessed" in note
    assert guess_model_spec("mock-model")[0] is None
    assert guess_model_spec("smollm2-135m-instruct-q4_1")[0] == "smollm2-135m"


@pytest.mark.slow
def test_plan_against_a_url(server, tmp_path):
    server.configure(ttft_ms=20, ttft_per_input_token_ms=0.02, itl_ms=5)
    out = tmp_path / "plan"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--url", server.url, "--plan", "--quick",
                        "--plan-budget", "60s", "--model-spec", "smollm2-135m", "--hardware", "h100-sxm",
                        "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=240)
    # the exit code tells the truth: 0 for a VALID plan, 3 when a step came out INVALID (a busy machine's late reads)
    assert p.returncode == (0 if Run.load(out).valid else 3), p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert [x["input_tokens"] for x in s["prefill_sweep"]] == [32, 256, 1024]
    assert s["prefill_sweep"][-1]["ttft_ms_p50"] > s["prefill_sweep"][0]["ttft_ms_p50"]
    # the mock never saturates, so the sweep doubles to the quick plan's largest concurrency and says so; on a
    # loaded 2-core machine the client's own CPU may flatten 4 -> 8 first, and then the plan says that instead
    conc = [d["concurrency"] for d in s["decode_sweep"]]
    assert conc == [1, 2, 4, 8][:len(conc)] and len(conc) >= 2
    assert ("largest concurrency (8)" in s["decode_stop"]) if conc == [1, 2, 4, 8] else \
        ("throughput" in s["decode_stop"] or "budget" in s["decode_stop"]), s["decode_stop"]
    # the server's own view fills the server columns (vLLM-style histograms from the mock)
    assert s["decode_sweep"][0]["server_tpot_ms_p50"] == pytest.approx(5.0, abs=0.01)
    assert s["prefill_sweep"][0]["server_prompt_ms_p50"] == pytest.approx(20.64, abs=0.01)
    assert s["server"]["completed"] > 0 and s["server"]["failed"] == 0
    assert s["memory_wall"]["probe"]["hardware"] == "h100-sxm" and s["memory_wall"]["decode_mbu"] > 0
    # the verdict compares decode with its wall and names what bounds it (model/verdict.py)
    assert any("decode reaches" in v and "step decode-c1" in v for v in s["verdicts"]), s["verdicts"]
    # every step carries the roofline block, against the named model and hardware
    step = json.loads((out / "decode-c1" / "summary.json").read_text())
    assert step["phasebench"]["roofline"]["hardware"] == "h100-sxm" and step["phasebench"]["roofline"]["mbu"] > 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "plan" and m["server_engine"]["name"] == "vllm" and len(m["spec"]["nonce"]) > 0
    assert "decode sweep stopped" in p.stdout


@pytest.mark.slow
def test_plan_stops_the_decode_sweep_when_the_slo_breaks(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=6)
    out = tmp_path / "plan"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--url", server.url, "--plan", "--quick",
                        "--plan-budget", "30s", "--slo", "ttft=2000,tpot=4", "--out", str(out), "--json"],
                       capture_output=True, text=True, env=ENV, timeout=240)
    # the exit code tells the truth: 0 for a VALID plan, 3 when a step came out INVALID (a busy machine's late reads)
    assert p.returncode == (0 if Run.load(out).valid else 3), p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert json.loads(p.stdout) == s  # --json: stdout is the summary alone, the progress lines went to stderr
    assert "decode sweep stopped" in p.stderr
    assert s["decode_stop"] == "the SLO broke at concurrency 1" and len(s["decode_sweep"]) == 1
    assert any("names no catalog model" in n for n in s["notes"])


@pytest.mark.slow
def test_url_plan_stopped_by_a_signal_still_reads_as_a_plan(server, tmp_path):
    import signal
    import time

    server.configure(ttft_ms=20, itl_ms=30, hostile_model_id=True)  # its model id carries ANSI/OSC escapes
    out = tmp_path / "plan"
    p = subprocess.Popen([sys.executable, "-m", "phasebench.cli", "run", "--url", server.url, "--plan", "--quick",
                          "--plan-budget", "60s", "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (out / "decode-c1" / "requests.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-3000:]
        p.send_signal(signal.SIGTERM)  # inside decode-c1: the prefill sweep is done, decode-c1 is in flight
        stdout, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "\x1b" not in stdout and "\x1b" not in err  # the server's text is stripped of control characters
    plan = Run.load(out)
    assert plan.manifest["kind"] == "plan" and plan.partial and not plan.valid
    assert [c.path.name for c in plan.children][:3] == ["prefill-000032", "prefill-000256", "prefill-001024"]
    if len(plan.children) > 3:  # the signal came once decode-c1 was sending (else before it: nothing to keep)
        assert plan.children[-1].path.name == "decode-c1" and plan.children[-1].partial
    assert any("stopped in step decode-c1" in r for r in plan.summary["phasebench"]["reasons"])
    shown = subprocess.run([sys.executable, "-m", "phasebench.cli", "show", str(out)], capture_output=True,
                           text=True, env=ENV, timeout=60)
    assert shown.returncode == 0 and "prefill-000032" in shown.stdout, shown.stderr[-2000:]
