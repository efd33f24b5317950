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


@pytest.mark.parametrize("model,hw,devices,precision", [
    ("llama-2-70b", "h100-sxm", 4, "fp8"), ("mixtral-8x7b", "a100-80gb-sxm", 2, "fp16"),
    ("llama-3-8b", "inferentia2", 2, "bf16"), ("llama-2-7b", "mi300x", 1, "fp16"), ("llama-2-7b", "tpu-v5e", 4, "bf16"),
    ("llama-3-8b", "a10g", 1, "int4")])
def test_the_simulators_pass_time_is_the_phase_breakdowns_time(model, hw, devices, precision):
    """Pass.time and Pass.timer()'s closure (the simulator's per-iteration call, no breakdown built) are
    forward()'s time_s, to the last bit: tensor parallel, MoE, fp8, weight-only int4 and the GEMM-rows knee
    included; and a pass's compute, memory, communication and overhead add up as the roofline says."""
    from dataclasses import replace

    from phasebench.model.phases import Pass, _roof, forward

    s = setup_for(model, hw, devices=devices, precision=precision)[0].resolved()
    for eff in (s.efficiency, replace(s.efficiency, gemm_half_rows=8.0, sharpness=3.0)):
        ps = replace(s, efficiency=eff)
        ts = Pass(ps)
        timer = ts.timer()
        for tokens, attn, kv, lm in ((1, 1e6, 1e7, 1), (64, 5e8, 2e9, 64), (2048, 3e11, 1e9, 1), (300, 2e10, 4e9, 44)):
            ph = forward(ps, tokens, attn, kv, lm)
            assert ts.time(tokens, attn, kv, lm) == ph.time_s == timer(tokens, attn, kv, lm)
            assert ph.time_s == pytest.approx(_roof(ph.compute_s, ph.memory_s, eff.sharpness) + ph.comm_s + ph.overhead_s)
            assert (ph.comm_s > 0) == (ps.tp > 1 or ps.pp > 1)


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
                                           ("sglang", "sglang"), ("vllm-0.6.3", "vllm"), ("vLLM 0.5.4", "vllm"),
                                           ("tgi-1.4.5", "tgi-1"), ("tgi-2.0.4", "tgi"), ("trt-llm-v0.9", "trt-llm"),
                                           ("tensorrt-llm 0.10.0rc1", "trt-llm"), ("llama.cpp-b3000", "llama.cpp"),
                                           ("turbomind", "lmdeploy"), ("mlx-lm", "mlx"),
                                           ("llama-cpp-python", "llama-cpp-python"), ("llama_cpp_python", "llama-cpp-python"), ("vllm-0.6.3.post1", "vllm"),
                                           ("vllm-0.6.3+cu121", "vllm"), ("sglang-0.4.1.post3", "sglang"),
                                           ("tgi-0.9.4", "tgi-1"), ("hf-tgi-1.4.5", "tgi-1"), ("TGI 3.0", "tgi")])
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
    assert default_engine(load_hardware("gaudi2")) == "optimum-habana"     # the engine the corpus has Gaudi rows of
    assert device_class(load_hardware("mi300x")) == "amd-gpu"
    h = load_hardware("h100-sxm")
    a, b = profile(h, "trt-llm"), profile(h, "tgi")
    assert a.engine == "trt-llm" and b.engine == "tgi"
    assert (a.memory, a.request_ms) != (b.memory, b.request_ms)
    pa = predict(setup_for("llama-2-7b", "h100-sxm", engine="trt-llm")[0], 1, 128, 128)
    pb = predict(setup_for("llama-2-7b", "h100-sxm", engine="tgi")[0], 1, 128, 128)
    assert pa.tpot_s != pb.tpot_s and pa.engine == "trt-llm"


# --- SRAM dataflow (Groq) -----------------------------------------------------------------------------------------
def _fewest_racks(model: str) -> int:
    return next(d for d in range(1, 20) if predict(setup_for(model, "groq-rack", devices=d)[0], 1, 128, 128).fits)


@pytest.mark.parametrize("model,published", [("llama-2-7b", 750.0), ("llama-2-70b", 300.0)])
def test_groq_matches_its_published_per_user_speed(model, published):
    """Groq's own per-user figures (Feb 2024): Llama-2-7B ~750 tok/s (2,048 context), Llama-2-70B ~300 tok/s (4,096
    context), as reported by TechPowerUp ("Groq LPU AI Inference Chip is Rivaling Major Players", 2024, in the
    corpus as techpowerup-groq-lpu-2024) and shown in Groq's 576-chip Llama-2-70B demo."""
    s, _ = setup_for(model, "groq-rack", devices=_fewest_racks(model))
    p = predict(s, 1, 128, 512)
    assert 1 / p.tpot_s == pytest.approx(published, rel=0.25)
    assert p.decode_last.bound == "overhead"   # the per-stage synchronisation, not SRAM bandwidth, bounds it


def test_groq_prefill_is_not_all_chips_flops_on_one_prompt():
    s, _ = setup_for("llama-2-7b", "groq-rack")
    hw = s.hardware
    p = predict(s, 1, 2048, 2)
    all_chips = p.prefill.flops / (hw.peak_flops("fp16"))            # 64 chips' FLOP/s on one prompt: ~2 ms
    one_stage = p.prefill.flops / (hw.peak_flops("fp16") / hw.chips * p.memory.chips_needed / s.model.layers)
    assert p.prefill.time_s > 10 * all_chips
    assert p.prefill.time_s >= one_stage                             # a stage's chips' FLOP/s, stage after stage


def test_groqrack_has_price_and_power_with_sources():
    h = load_hardware("groq-rack")
    assert h.price_per_hour and h.tdp_w and "mouser" in h.price_source.lower() and h.extra.get("power_source")


# --- the research findings on Llama-2-7B fp16 (arXiv 2606.17104, "Prefill/Decode-Aware Evaluation of LLM Inference
# on Emerging AI Accelerators") --------------------------------------------------------------------------------
GROQ = setup_for("llama-2-7b", "groq-rack")[0]


@pytest.mark.parametrize("gpu,from_tokens", [("h100-sxm", 128), ("a100-80gb-sxm", 256)])
def test_gpus_win_prefill(gpu, from_tokens):
    """GPUs excel in prefill. With the fitted profiles an H100 (TensorRT-LLM) has the lower TTFT from 128 tokens
    on; an A100 from 256 on, and at 128 tokens it ties with GroqRack (within 20%: inside both ranges; the A100's
    published 16.2 ms against the model's 16.1 ms for GroqRack, whose prefill is fitted on one GroqCloud row)."""
    s, _ = setup_for("llama-2-7b", gpu, engine="trt-llm")
    for prompt in (128, 256, 512, 1024, 2048):   # GroqRack holds Llama-2-7B with up to ~2,400 tokens of KV
        gpu_t, groq_t = predict(s, 1, prompt, 2).ttft_s, predict(GROQ, 1, prompt, 2).ttft_s
        if prompt >= from_tokens:
            assert gpu_t < groq_t, (prompt, gpu_t, groq_t)
        else:
            assert gpu_t == pytest.approx(groq_t, rel=0.2), (prompt, gpu_t, groq_t)


def test_groqrack_tpot_well_below_h100_at_batch_1():
    h100 = predict(setup_for("llama-2-7b", "h100-sxm")[0], 1, 128, 128)
    groq = predict(GROQ, 1, 128, 128)
    assert groq.tpot_s < h100.tpot_s / 3


def test_h100_decode_throughput_overtakes_groqrack_at_a_modest_batch():
    """GroqRack does not batch: its decode throughput stays 1/TPOT(batch 1). An H100's grows with the batch while
    decode stays memory-bound (the weights are read once per step for every sequence), so it passes GroqRack's
    as soon as B / TPOT_H100(B) > 1 / TPOT_Groq(1), i.e. at B ≈ TPOT_H100 / TPOT_Groq."""
    h100 = setup_for("llama-2-7b", "h100-sxm")[0]
    thr = {b: (predict(h100, b, 128, 128).output_throughput, predict(GROQ, b, 128, 128).output_throughput)
           for b in range(1, 65)}
    cross = next(b for b, (g, q) in thr.items() if g > q)
    assert 2 <= cross <= 16, cross
    t1 = predict(h100, 1, 128, 128).tpot_s / predict(GROQ, 1, 128, 128).tpot_s
    assert cross == pytest.approx(t1, rel=0.5)              # where memory-bound decode says it should
    assert all(g > q for b, (g, q) in thr.items() if b >= cross)


# --- uncertainty and the corpus fit --------------------------------------------------------------------------------
def test_every_prediction_carries_a_range_and_says_when_outside_the_corpus():
    p = predict(setup_for("llama-2-7b", "h100-sxm", engine="trt-llm")[0], 8, 512, 128)
    r = p.range
    assert r["ttft_ms"][0] <= p.ttft_s * 1e3 <= r["ttft_ms"][1]
    assert r["tpot_ms"][0] <= p.tpot_s * 1e3 <= r["tpot_ms"][1]
    assert r["output_throughput"][0] <= p.output_throughput <= r["output_throughput"][1] and r["covered"]
    assert p.to_dict()["range"] == r and not any("outside the corpus" in n for n in p.notes)
    q = predict(setup_for("llama-2-7b", "tpu-v5e", engine="tgi")[0], 1, 128, 128)
    assert any("outside the corpus: no published measurement of tgi on tpu" in n for n in q.notes)
    assert not q.range["covered"]
    wide = q.range["tpot_ms"][1] / q.range["tpot_ms"][0]
    assert wide > r["tpot_ms"][1] / r["tpot_ms"][0]


def test_held_out_rows_are_told_apart_by_what_the_other_sources_had():
    """A row is "covered" held out when another source measured its engine on its device class, "engine
    elsewhere" when another source has the engine only on other classes, "engine unseen" when none has it."""
    from dataclasses import replace

    from phasebench.model import fit as F
    from phasebench.model.corpus import load

    rows, _ = load()
    r = rows[0]
    made = [replace(r, id="a", source="s1", engine="e1", device_class="c1"),
            replace(r, id="b", source="s2", engine="e1", device_class="c1"),   # e1 on c1 in two sources
            replace(r, id="c", source="s2", engine="e1", device_class="c2"),   # e1 on c2 only in s2
            replace(r, id="d", source="s3", engine="e2", device_class="c1")]   # e2 only in s3
    assert F.held_out_coverage(made) == {"a": "covered", "b": "covered", "c": "engine elsewhere", "d": "engine unseen"}
    loso = {"a": 0.1, "b": -0.1, "c": 0.5, "d": -1.0}
    rg = F.ranges(made, loso)
    g = r.group
    assert rg["*covered"][g][2] == 2 and rg["*outside"][g][2] == 2 and rg["*"][g][2] == 4
    assert rg["*outside"][g][1] > rg["*covered"][g][1]        # d: measured 2.7x the prediction


def test_a_prediction_outside_the_corpus_is_as_wide_as_held_out_misses_outside_it():
    from phasebench.model.engines import fitted
    from phasebench.model.uncertainty import MIN_OUTSIDE, factors

    rg = fitted()["ranges"]
    tpu = load_hardware("tpu-v5e")
    for g in ("prefill", "decode", "e2e", "throughput"):
        lo, hi, where = factors(tpu, "tgi", g)
        pooled, out = rg["*"][g], rg.get("*outside", {}).get(g)
        assert lo <= pooled[0] ** 2 * 1.0001 and hi >= pooled[1] ** 2 * 0.9999        # at least the widened pool
        if out and out[2] >= MIN_OUTSIDE:
            assert lo <= out[0] and hi >= out[1] and "outside their source's coverage" in where


def test_the_installed_fit_is_of_the_shipped_corpus():
    from phasebench.model import fit as F
    from phasebench.model.corpus import corpus_path
    from phasebench.model.engines import fitted

    doc = fitted()
    assert doc["corpus"]["sha256_16"] == F.digest(corpus_path()), "corpus changed: run python -m phasebench.model.fit --write"
    assert doc["corpus"]["rows"] >= 80 and doc["corpus"]["sources"] >= 8


def test_the_held_out_set_is_kept_out_of_the_fit_and_predicted_as_well_as_the_corpus_held_out():
    """data/holdout.csv: published rows no fit has seen (no source id shared with the corpus), every one
    predictable, and the installed fit's median |error| on them no worse than 20% (its leave-one-source-out
    figure on the corpus is ~15%): a refit that regressed on unseen data would fail here."""
    import statistics

    from phasebench.model import fit as F
    from phasebench.model.corpus import holdout_path, load

    held, skipped = load(holdout_path())
    corpus, _ = load()
    assert len(held) >= 30 and not skipped
    assert not {r.source for r in held} & {r.source for r in corpus}
    got = F.score_installed(held)
    assert set(got) == {r.id for r in held}
    assert statistics.median(F.abs_pct(v) for v in got.values()) <= 20.0


def test_llama_cpp_rows_carry_the_gguf_format_their_source_names():
    """Q4_K_M is 4.85 bits per weight, not int4's 4: a row entered as plain int4 would charge a fifth too few bytes."""
    import csv
    import re

    from phasebench.model.corpus import corpus_path

    names = {"Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_K_M": "q4_k_m"}
    with open(corpus_path(), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["engine"] in ("llama.cpp", "llama-cpp-python")]
    quantized = [r for r in rows if r["weight_precision"] not in ("fp16", "bf16", "")]
    assert len(quantized) >= 60
    for r in quantized:
        named = {names[m] for m in re.findall(r"Q8_0|Q4_0|Q4_K_M", r["notes"])}
        assert r["weight_precision"] in named, (r["id"], r["weight_precision"], named)


def test_the_corpus_fit_is_reproducible():
    from phasebench.model import fit as F
    from phasebench.model.corpus import load

    rows, _ = load()
    some = [r for r in rows if r.source in ("argonne-llm-inference-bench", "techpowerup-groq-lpu-2024")]
    a, b = F.fit(some, max_nfev=8), F.fit(some, max_nfev=8)
    assert a.parameters == b.parameters and a.residuals == b.residuals


def test_leave_one_source_out_does_not_depend_on_the_processes():
    from phasebench.model import fit as F
    from phasebench.model.corpus import load

    rows, _ = load()
    some = [r for r in rows if r.source in ("llmperf-leaderboard", "techpowerup-groq-lpu-2024", "trtllm-blog-h200-v0.7a")]
    serial = F.leave_one_source_out(some, max_nfev=4, jobs=1)
    assert serial and serial == F.leave_one_source_out(some, max_nfev=4, jobs=2)
    assert set(serial) <= {r.id for r in some}


def test_closed_loop_clients_are_continuous_batching_not_a_static_batch():
    """NIM's genai-perf concurrency: each client's prompt is prefilled on its own (plus the queue of other clients'
    prefills), and every other client's prefill stalls the running streams once per request."""
    from phasebench.model.phases import _predict, closed_loop

    s, _ = setup_for("llama-3.3-70b", "h100-sxm", devices=2, precision="fp8", engine="trt-llm")
    assert closed_loop(s, 1, 5000, 500).ttft_s == _predict(s, 1, 5000, 500).ttft_s
    one, static, c = _predict(s, 1, 5000, 500), _predict(s, 25, 5000, 500), closed_loop(s, 25, 5000, 500)
    assert c.tpot_s == pytest.approx(static.tpot_s + 24 / 499 * one.prefill.time_s)
    assert one.ttft_s < c.ttft_s < 2 * one.ttft_s < static.ttft_s        # a queue of single prompts, not 25 at once
    rho = 25 / c.e2e_s * one.prefill.time_s                               # the M/D/1 wait behind other prefills
    assert c.ttft_s == pytest.approx(one.ttft_s + rho / (2 * (1 - rho)) * one.prefill.time_s, rel=1e-3)
    assert c.batch == 25 and c.output_throughput == pytest.approx(25 * 500 / c.e2e_s)


def test_moe_experts_run_at_most_at_the_16_bit_rate():
    """The routed experts' grouped GEMMs do not reach the fp8 peak: under fp8 they are charged the 16-bit peak
    (× moe_compute); the dense parts of the layer keep the fp8 rate."""
    from dataclasses import replace

    from phasebench.model.phases import forward

    s8 = setup_for("mixtral-8x7b", "h100-sxm", devices=2, precision="fp8", engine="trt-llm")[0].resolved()
    s16 = setup_for("mixtral-8x7b", "h100-sxm", devices=2, precision="bf16", engine="trt-llm")[0].resolved()
    s8, s16 = (replace(x, efficiency=replace(x.efficiency, moe_compute=1.0, gemm_half_rows=0.0)) for x in (s8, s16))
    a, b = forward(s8, 4096, 0.0, 0.0, 1), forward(s16, 4096, 0.0, 0.0, 1)
    m = s8.model
    expert = 2.0 * 4096 * m.layers * m.experts_active * m._expert_params()
    assert a.compute_s == pytest.approx(b.compute_s - (b.flops - expert) / 2 / (s16.hardware.peak_flops("bf16")
                                                                                * s16.efficiency.compute * 2), rel=1e-4)


def test_profiles_compose_class_generation_and_engine():
    """memory = the class's fraction × the chip generation's factor × the engine's multiplier; an engine with no
    fitted fixed costs takes the fitted typical engine's (the hierarchical prior's centre)."""
    from phasebench.model.engines import device_arch

    h100, a100 = load_hardware("h100-sxm"), load_hardware("a100-80gb-sxm")
    assert (device_arch(h100), device_arch(a100), device_arch(load_hardware("tpu-v5e"))) == ("hopper", "ampere", "tpu-v5e")
    fit = {"memory|nvidia-gpu": 0.8, "memory#hopper": 1.1, "memory@vllm": 0.9, "step_us": 700.0, "request_ms": 4.0,
           "step_us@vllm": 900.0}
    assert profile(h100, "vllm", fit=fit).memory == pytest.approx(0.8 * 1.1 * 0.9)
    assert profile(a100, "vllm", fit=fit).memory == pytest.approx(0.8 * 0.9)           # no factor for ampere: 1
    assert profile(h100, "vllm", fit=fit).step_us == 900.0
    assert (profile(h100, "tgi", fit=fit).step_us, profile(h100, "tgi", fit=fit).request_ms) == (700.0, 4.0)
    groq = profile(load_hardware("groq-rack"), "vendor", fit=fit)
    assert groq.step_us != 700.0                                                       # vendor compilers: own prior


def test_generation_factors_are_fitted_only_against_the_reference_engine():
    from phasebench.model import fit as F
    from phasebench.model.corpus import load

    rows, _ = load()
    keys = F.parameters_for(rows)
    assert {"compute#hopper", "compute#ampere", "memory#hopper"} <= set(keys)
    no_trt = [r for r in rows if r.engine != "trt-llm"]
    assert not any("#" in k for k in F.parameters_for(no_trt))
    assert "step_us" in keys and F.parent("step_us@vllm") == "step_us" and F.parent("step_us@vendor") is None


# --- unfused attention (an engine that materialises the scores) ---------------------------------------------------
def test_materialised_attention_scores_are_priced_by_hand():
    """llama.cpp without flash attention moves 16 bytes per attention score (F32 KQ written, softmax read and
    written, read for AV) in kernels of their own, after the GEMMs: Llama-3-8B, a 4,096-token prompt on an RTX 4090,
    with the knee off so each roofline is a plain max."""
    from dataclasses import replace

    from phasebench.model.phases import Pass, prefill_phase

    s = setup_for("llama-3-8b", "rtx-4090", precision="fp16", engine="llama.cpp")[0]
    assert s.efficiency.attn_score_bytes == 16
    assert setup_for("llama-3-8b", "rtx-4090", precision="fp16", engine="vllm")[0].efficiency.attn_score_bytes == 0
    s = replace(s, efficiency=replace(s.efficiency, sharpness=0.0)).resolved()
    n = 4096
    # causal scores: 32 layers x 32 heads x 4096²/2 = 8.59e9; x 16 B = 137.4 GB
    scores = 32 * 32 * n * n / 2
    bw = 1008e9 * s.efficiency.memory
    attn_memory = scores * 16 / bw
    attn_flops = 4 * 4096 * n * n * 32 / 2           # QKᵀ and AV, causal half
    p = Pass(s)
    attn_compute = attn_flops / p.peak
    assert attn_memory > attn_compute                 # memory-bound on the scores, as measured
    c, m, comm, ov, flops, nbytes, attn = p.terms(n, attn_flops, 0.0, 1)
    assert attn == pytest.approx(attn_memory, rel=1e-9)
    rows = n * p.row_frac
    assert c == pytest.approx((flops - attn_flops) / (p.peak * rows / (rows + p.half_rows)))   # the GEMMs alone
    fused = replace(s, efficiency=replace(s.efficiency, attn_score_bytes=0.0))
    # the prompt's time grows by exactly the attention kernels' time minus the attention FLOPs the GEMM roof had
    t, t0 = prefill_phase(s, 1, n).time_s, prefill_phase(fused, 1, n).time_s
    assert t > t0 and prefill_phase(s, 1, n).bytes - prefill_phase(fused, 1, n).bytes == pytest.approx(scores * 16)
    # the first decode step after an 8,192-token prompt attends to 8,193 tokens: 32 x 32 x 8193 scores, 134 MB,
    # beside the 16 GB of weights
    d, d0 = predict(s, 1, 8192, 2).decode_first, predict(fused, 1, 8192, 2).decode_first
    assert d.bytes - d0.bytes == pytest.approx(32 * 32 * 8193 * 16, rel=1e-9)


def test_tpot_under_the_hard_roof_keeps_the_unfused_attention_when_compute_bound():
    """With the knee off, TPOT is the exact mean of the steps over the contexts; the unfused attention kernels are
    added after the GEMMs' max, so a compute-bound batch must not lose them (M1 Max, batch 32, 2,048 + 2,048)."""
    from dataclasses import replace

    from phasebench.model.phases import decode_phase

    s = setup_for("llama-3-8b", "m1-max", precision="int4", engine="llama.cpp")[0]
    s = replace(s, efficiency=replace(s.efficiency, sharpness=0.0)).resolved()
    p = predict(s, 32, 2048, 2048)
    steps = [decode_phase(s, 32, 2049 + i).time_s for i in range(0, 2047, 8)]
    assert p.decode_first.attn_s > 0
    assert p.tpot_s == pytest.approx(sum(steps) / len(steps), rel=5e-3)
