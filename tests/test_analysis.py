"""The summary's analysis steps: one ordered list, each step's block in its place, a failing step a warning."""

from __future__ import annotations

import pytest

from phasebench import analysis
from phasebench.analysis import STEPS, Step, analyse
from phasebench.results import Run
from phasebench.runner import run
from phasebench.sim.profile import FittedProfile
from phasebench.sim.replica import SchedulerConfig
from phasebench.sim.run import simulate_run
from phasebench.spec import RunSpec

from .conftest import spec


def test_one_ordered_list_puts_every_block_in_its_place(server, tmp_path):
    names = [s.name for s in STEPS]
    assert names[0] == "metrics" and names.index("roofline") < names.index("cost")  # cost reads the roofline's verdict
    r = run(spec(server, tmp_path, requests=6, metrics_url="off"))
    pb = r.summary["phasebench"]
    for key in ("warmup", "roofline", "server_view", "cost"):
        assert key in pb, key
    assert pb["warmup"]["requests"] >= 1 and pb["server_view"] is None  # scraping off: the step says so with None
    assert r.summary["num_prompts"] == 6 and r.summary["completed"] == 6
    assert Run.load(tmp_path / "run").summary == r.summary  # what the steps made is what is on disk


def test_a_failing_step_is_a_warning_and_the_run_is_kept(server, tmp_path, monkeypatch):
    def broken(a: analysis.RunAnalysis) -> dict:
        raise ZeroDivisionError("the roofline broke")

    steps = tuple(Step(s.name, broken, s.key) if s.name == "roofline" else s for s in STEPS)
    monkeypatch.setattr(analysis, "STEPS", steps)
    monkeypatch.setattr(analysis.analyse, "__defaults__", (steps,))
    r = run(spec(server, tmp_path, requests=4))
    pb = r.summary["phasebench"]
    assert "roofline" not in pb and r.summary["completed"] == 4 and r.valid
    w = [x for x in pb["warnings"] if "analysis step 'roofline' failed" in x]
    assert len(w) == 1 and "ZeroDivisionError: the roofline broke" in w[0] and "test_analysis.py" in w[0]
    assert "cost" in pb and "server_view" in pb  # the steps after it still ran
    assert Run.load(tmp_path / "run").summary["phasebench"]["warnings"] == pb["warnings"]


def test_a_failing_quality_check_leaves_the_run_invalid(server, tmp_path, monkeypatch):
    def broken(a: analysis.RunAnalysis) -> dict:
        raise KeyError("score")

    steps = tuple(Step(s.name, broken, s.key, s.decides_validity) if s.name == "quality" else s for s in STEPS)
    monkeypatch.setattr(analysis, "STEPS", steps)
    monkeypatch.setattr(analysis.analyse, "__defaults__", (steps,))
    r = run(spec(server, tmp_path, requests=4, quality=True))
    pb = r.summary["phasebench"]
    assert not r.valid and r.summary["completed"] == 4  # the speed figures are there; the verdict is not VALID
    assert any("quality check could not be made" in x for x in pb["reasons"]), pb["reasons"]
    assert any("analysis step 'quality' failed: KeyError" in x for x in pb["warnings"])


def test_without_metrics_the_summary_says_why_it_is_not_valid(server, tmp_path):
    r = run(spec(server, tmp_path, requests=2))
    a = analysis.RunAnalysis(r.manifest, r.records, RunSpec(url=server.url), analysis.RunContext("concurrency",
                                                                                                  RunSpec().slo))

    def boom(_: analysis.RunAnalysis) -> dict:
        raise RuntimeError("no metrics today")

    s = analyse(a, (Step("metrics", boom, analysis.SUMMARY), *[x for x in STEPS if x.name == "vllm keys"]))
    assert s["phasebench"]["valid"] is False and s["phasebench"]["reasons"] == ["no metrics were computed"]
    assert "RuntimeError: no metrics today" in s["phasebench"]["warnings"][0] and s["model_id"] == "mock-model"


def test_simulated_runs_go_through_the_same_steps(tmp_path):
    s = RunSpec(url="http://sim.invalid/v1", scenario="server", rate=[2000], requests=400, input_tokens=64,
                output_tokens=16, out=tmp_path / "sim")
    r = simulate_run(s, FittedProfile((0.05, 0, 0), (0.05, 0, 0)), SchedulerConfig(max_seqs=2, max_queue=100),
                     record=False)
    pb = r.summary["phasebench"]
    assert pb["reasons"][0].startswith("over capacity") and not r.valid  # the capacity step's reason leads
    assert r.summary["backend"] == "simulated" and r.summary["num_prompts"] == 400
    assert "cost" in pb and "warmup" not in pb and "server_view" not in pb  # measured-only steps skip
    assert r.summary["request_rate"] == pytest.approx(2000)
