"""Disaggregation credits cached KV: what the decode side already holds (a conversation's history, whose
earlier turns it decoded) is not shipped, requests go to the decode replica that holds their prefix, and the
transfer accounting says how much was saved. Hand-checked on llama-3.1-8b (128 KiB of fp16 KV per token)."""

from __future__ import annotations

import numpy as np
import pytest

from phasebench.model.phases import setup_for
from phasebench.sim import disagg as D
from phasebench.sim.conversations import build
from phasebench.sim.profile import FittedProfile
from phasebench.sim.replica import SchedulerConfig
from phasebench.spec import RunSpec

KV_PER_TOKEN = 32 * 8 * 128 * 2 * 2  # layers × KV heads × head dim × (K, V) × fp16 bytes = 131072


def _h100():
    return setup_for("llama-3.1-8b", "h100-sxm")[0]


def test_the_one_request_analysis_ships_only_the_uncached_tokens():
    st = _h100()
    assert st.model.kv_bytes_per_token(st.precision.kv) == KV_PER_TOKEN
    link = D.Link("3.125 GB/s", 3.125e9, 20e-6)
    full = D.analytic_point(st, st, st, link, 1024, 64)
    part = D.analytic_point(st, st, st, link, 1024, 64, cached_tokens=768)
    assert full.kv_bytes == 1024 * KV_PER_TOKEN and full.kv_bytes_saved == 0
    assert part.kv_bytes == 256 * KV_PER_TOKEN and part.kv_bytes_saved == 768 * KV_PER_TOKEN
    assert part.transfer_s == pytest.approx(20e-6 + 256 * KV_PER_TOKEN / 3.125e9)  # 10.757 ms
    assert part.disaggregated["ttft_ms"] == pytest.approx(part.disaggregated["prefill_ms"] + part.transfer_s * 1e3)
    assert part.colocated == full.colocated  # the saving is the link's; each side's compute is unchanged
    from phasebench.model.errors import ModelError

    with pytest.raises(ModelError, match="cached tokens"):
        D.analytic_point(st, st, st, link, 1024, 64, cached_tokens=1024)


def test_decode_routing_follows_the_cached_prefix():
    spec = RunSpec(url="http://simulated.invalid/v1", turns=2, input_tokens=32, output_tokens=4, concurrency=[1],
                   scenario="concurrency", requests=3)
    convs = build(spec, 3)  # requests: conversation 0 turns 0, 1; conversation 1 turns 0, 1; conversation 2 ...
    keys = convs.keys(16)
    ins = np.asarray(convs.n_in)
    first = np.array([0.0, 1.0, 0.1, 1.1, 0.2, 1.2])  # the prefills end: three first turns, then the second turns
    routes, cached = D.decode_routes(first, ins, keys, 2, 16, 1 << 20)
    # first turns: nothing cached anywhere, round-robin 0, 1, 0; a second turn goes where its first turn went
    assert routes.tolist() == [0, 0, 1, 1, 0, 0]
    # a second turn (68 tokens) finds its first turn's prompt and answer (36 tokens): two whole blocks
    assert cached.tolist() == [0, 32, 0, 32, 0, 32]
    # 4 blocks per replica: replica 0 holds conversations 0 and 2 (2 blocks each) until conversation 0's second
    # turn (4 blocks) evicts the least recently used, conversation 2's; its second turn then finds nothing and
    # goes round-robin
    routes, cached = D.decode_routes(first, ins, keys, 2, 16, 4)
    assert routes.tolist() == [0, 0, 1, 1, 0, 1] and cached.tolist() == [0, 32, 0, 32, 0, 0]


def test_simulated_pools_ship_only_what_the_decode_side_lacks():
    st = _h100()
    # prefill: 10 ms + 1 ms per new token; decode: 5 ms a step; link 1 GB/s, no latency
    prof = FittedProfile((0.010, 0.001, 0.0), (0.005, 0.0, 0.0))
    link = D.Link("1 GB/s", 1e9, 0.0)
    spec = RunSpec(url="http://simulated.invalid/v1", turns=2, input_tokens=32, output_tokens=4, concurrency=[1],
                   scenario="concurrency", requests=1)
    convs = build(spec, 1)
    arr, ins, outs = np.array([0.0, 1.0]), np.asarray(convs.n_in), np.asarray(convs.n_out)
    assert ins.tolist() == [32, 68]
    cols, info = D.simulate_disagg_columns(arr, ins, outs, st, st, link, 1, 1,
                                           lambda s: SchedulerConfig(prefix_cache=True, block_size=16),
                                           prefill_profile=prof, decode_profile=prof, keys=convs.keys(16))
    kt = info["kv_transfer"]
    # turn 1: the decode side holds turn 0's 32 + 4 tokens, two whole blocks: 32 tokens' KV not shipped
    assert kt["kv_bytes_needed"] == (32 + 68) * KV_PER_TOKEN and kt["kv_bytes_shipped"] == (32 + 36) * KV_PER_TOKEN
    assert kt["kv_bytes_saved"] == 32 * KV_PER_TOKEN and kt["decode_cached_tokens"] == 32
    assert kt["saved_fraction"] == pytest.approx(0.32)
    # TTFT = prefill + transfer. Turn 0: 10 + 32 ms, then 32 × 128 KiB at 1 GB/s. Turn 1: the prefill side
    # holds turn 0's prompt (two blocks, not the answer it never saw): 10 + 36 ms, then 36 tokens' KV
    ttft = (cols.first - cols.sched) / 1e6
    assert ttft.tolist() == pytest.approx([42 + 32 * KV_PER_TOKEN / 1e6, 46 + 36 * KV_PER_TOKEN / 1e6], abs=1e-5)
    plain, info0 = D.simulate_disagg_columns(arr, ins, outs, st, st, link, 1, 1, lambda s: SchedulerConfig(),
                                             prefill_profile=prof, decode_profile=prof)
    assert info0["kv_transfer"]["kv_bytes_saved"] == 0 and info0["kv_transfer"]["routing"] == "round-robin"
    assert ((plain.first - plain.sched) / 1e6).tolist() == pytest.approx(
        [42 + 32 * KV_PER_TOKEN / 1e6, 78 + 68 * KV_PER_TOKEN / 1e6], abs=1e-5)


def test_conversations_side_by_side_settle_and_report_the_saving():
    from phasebench.sim.run import scheduler_for

    st = _h100()
    spec = RunSpec(url="http://simulated.invalid/v1", scenario="server", rate=[2.0], requests=6, turns=3,
                   think_time=0.5, input_tokens=256, output_tokens=64)
    sims = D.side_by_side(spec, st, st, st, D.NETWORKS["25gbe"], 1, 2, 3, lambda s: scheduler_for(s))
    dis = sims["disaggregated"]["phasebench"]
    assert dis["turn_arrivals"]["converged"] and dis["turn_arrivals"]["passes"] >= 2
    # turn k's prompt: k × (256 + 64) + 256 tokens, of which the decode side holds k × 320 (whole blocks):
    # each request ships its 256 new tokens
    kt = dis["kv_transfer"]
    assert kt["requests"] == 18 and kt["kv_bytes_shipped"] == 18 * 256 * KV_PER_TOKEN
    assert kt["kv_bytes_needed"] == 6 * (256 + 576 + 896) * KV_PER_TOKEN
    assert kt["saved_fraction"] == pytest.approx(960 / 1728)
    for s in sims.values():
        by = s["phasebench"]["workload"]["by_turn"]
        assert [by[k]["requests"] for k in "012"] == [6, 6, 6]
    assert sims["colocated"]["phasebench"]["workload"]["prompt_cache"]["cached_tokens"] == 6 * (320 + 640)
