"""One phase model: predict and the simulator agree; engines as a dimension; Groq's SRAM pipeline; no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from phasebench.model.engines import canonical_engine, default_engine, device_class, profile
from phasebench.model.errors import ModelError
from phasebench.model.hardware import _builtin, load_hardware
from phasebench.model.phases import predict, setup_for
from phasebench.sim.profile import AnalyticProfile
from phasebench.sim.replica import SchedulerConfig, simulate

SRC = Path(__file__).resolve().parents[1] / "src" / "phasebench"


def _fitting_setup(hw: str, model: str = "llama-2-7b"):
    for devices in (1, 2, 4, 8, 16, 64):
        s, _ = setup_for(model, hw, devices=devices)
        if predict(s, 1, 2048, 64).fits:
            return s
    raise AssertionError(f"{model} fits nowhere on {hw}")


@pytest.mark.parametrize("hw", sorted(_builtin()))
def test_simulate_alone_agrees_with_predict_on_every_platform(hw):
    s = _fitting_setup(hw)
    for n_in, n_out in ((128, 64), (2048, 32)):
        p = predict(s, 1, n_in, n_out)
        res = simulate([0.0], [n_in], [n_out], AnalyticProfile(s), SchedulerConfig(batching=s.hardware.batching,
                                                                                   max_batched_tokens=8192))
        r = res.reqs[0]
        ttft, tpot = r.first_token - r.arrival, (r.end - r.first_token) / (n_out - 1)
        assert ttft == pytest.approx(p.ttft_s, rel=0.02), (hw, n_in, ttft, p.ttft_s)
        assert tpot == pytest.approx(p.tpot_s, rel=0.02), (hw, n_in, tpot, p.tpot_s)


def test_groq_prefill_is_the_same_in_the_simulator_and_predict():
    s, _ = setup_for("llama-2-7b", "groq-rack")
    prof = AnalyticProfile(s)
    assert prof.iteration(2048, 2048**2, 0, 0) == pytest.approx(predict(s, 1, 2048, 2).ttft_s, rel=0.01)


def _imports(path: Path) -> set[str]:
    """phasebench.model modules a module imports at its top level (lazy imports inside functions excluded)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
            out |= {a.name for a in node.names}
    return out


def test_model_package_has_no_import_cycle_even_counting_lazy_imports():
    mods = {p.stem: p for p in (SRC / "model").glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):   # every import, lazy ones too
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[name] = deps & set(mods)

    def visit(n, stack):
        assert n not in stack, f"import cycle: {' -> '.join([*stack, n])}"
        for d in graph[n]:
            visit(d, [*stack, n])
    for n in graph:
        visit(n, [])


@pytest.mark.parametrize("mod", ["phases", "calibrate", "utilization", "calibration", "engines", "fit", "verdict", "corpus", "uncertainty"])
def test_each_model_module_imports_fresh(mod):
    r = subprocess.run([sys.executable, "-c", f"import phasebench.model.{mod}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- engines ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling,name", [("tensorrt-llm", "trt-llm"), ("TRTLLM", "trt-llm"), ("llamacpp", "llama.cpp"),
                                           ("llama_cpp", "llama.cpp"), ("vLLM", "vllm"), ("text-generation-inference", "tgi"),
                                           ("deepspeed-mii", "deepspeed"), ("mlc-llm", "mlc"),
                                           ("transformers-neuronx", "neuronx"), ("FasterTransformer", "fastertransformer"),
                                           ("sglang", "sglang")])
def test_engine_spellings(spelling, name):
    assert canonical_engine(spelling) == name


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown engine 'vlm'.*did you mean"):
        canonical_engine("vlm")
    with pytest.raises(ModelError, match="unknown engine"):
        setup_for("llama-2-7b", "h100-sxm", engine="nonesuch")


def test_engine_defaults_and_profiles_differ():
    assert default_engine(load_hardware("h100-sxm")) == "vllm"
    assert default_engine(load_hardware("inferentia2")) == "neuronx"
    assert default_engine(load_hardware("xeon-8480")) == "llama.cpp"
    assert device_class(load_hardware("mi300x")) == "amd-gpu"
    h = load_hardware("h100-sxm")
    a, b = profile(h, "trt-llm"), profile(h, "tgi")
    assert a.engine == "trt-llm" and b.engine == "tgi"
    assert (a.memory, a.request_ms) != (b.memory, b.request_ms)
    pa = predict(setup_for("llama-2-7b", "h100-sxm", engine="trt-llm")[0], 1, 128, 128)
    pb = predict(setup_for("llama-2-7b", "h100-sxm", engine="tgi")[0], 1, 128, 128)
    assert pa.tpot_s != pb.tpot_s and pa.engine == "trt-llm"
