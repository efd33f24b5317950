"""Engine detection and the per-engine exact-length knobs."""

from __future__ import annotations

import asyncio

import aiohttp

from phasebench.client.engines import detect_engine, exact_length_knobs, from_owned_by, max_model_len
from phasebench.runner import run

from .conftest import spec


def test_knobs_send_each_engine_only_what_it_needs():
    assert exact_length_knobs("vllm", 64) == {"ignore_eos": True}  # no min_tokens: it slows vLLM's decode
    assert exact_length_knobs("sglang", 64) == {"ignore_eos": True}
    assert exact_length_knobs("llamacpp", 64) == {"ignore_eos": True, "n_predict": 64}
    assert exact_length_knobs("tgi", 64) == {} and exact_length_knobs("ollama", 64) == {}
    assert exact_length_knobs("unknown", 8) == {"ignore_eos": True, "min_tokens": 8, "n_predict": 8}


def test_models_answer_owned_by_and_context():
    vllm = {"data": [{"id": "m", "owned_by": "vllm", "max_model_len": 2048}]}
    assert from_owned_by(vllm) == "vllm" and max_model_len(vllm, "m") == 2048 and max_model_len(vllm, "x") is None
    assert from_owned_by({"data": [{"id": "m", "owned_by": "llamacpp"}]}) == "llamacpp"
    assert from_owned_by({"data": [{"id": "m", "owned_by": "library"}]}) == "ollama"
    assert from_owned_by({"data": [{"id": "m"}]}) is None


def test_mock_server_is_detected_from_its_metric_names(server, tmp_path):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await detect_engine(s, server.root, {"data": [{"id": "mock-model"}]})

    info = asyncio.run(go())
    assert info.name == "vllm" and any("/metrics" in e for e in info.evidence)
    r = run(spec(server, tmp_path))
    assert r.manifest["server_engine"]["name"] == "vllm"
