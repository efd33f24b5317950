"""Honest verdicts on hand-worked inputs: 'at the wall' only when the fraction is high, and what bounds it otherwise."""

from __future__ import annotations

import pytest

from phasebench.model.verdict import Peak, decode_verdict, prefill_verdict
from phasebench.plan import phase_verdicts

BW = Peak(60e9, "the probed DRAM bandwidth (60.0 GB/s)")
FL = Peak(340e9, "the probed fp32 matmul peak (340 GFLOP/s)")


def test_low_mbu_is_not_the_memory_wall_and_names_the_overhead():
    # 100 MB per step at 60 GB/s = 1.67 ms; 0.27 GFLOP at 340 GFLOP/s = 0.79 ms; measured 10 ms
    v = decode_verdict("decode-c1", 100e6, 0.27e9, 10e-3, BW, FL, cores=2)
    assert v.fraction == pytest.approx(0.1667, rel=1e-3) and not v.at_wall and v.bound == "overhead"
    assert v.memory_s == pytest.approx(1.667e-3, rel=1e-3) and v.compute_s == pytest.approx(0.794e-3, rel=1e-3)
    assert v.text.startswith("decode reaches 17% of the probed DRAM bandwidth (60.0 GB/s) (decode MBU, step decode-c1)")
    assert "not at the memory wall here" in v.text and "~8.33 ms is per-layer and per-step overhead" in v.text
    assert "memory-bound" not in v.text


def test_compute_on_few_cores_bounds_a_decode_far_from_the_memory_wall():
    # 2 GFLOP per step at 340 GFLOP/s = 5.88 ms > 1.67 ms of bytes; measured 10 ms
    v = decode_verdict("decode-c4", 100e6, 2e9, 10e-3, BW, FL, cores=2)
    assert not v.at_wall and v.bound == "compute"
    assert "compute on 2 cores bounds it: its FLOPs need 5.88 ms at the peak" in v.text


def test_high_mbu_is_at_the_memory_wall():
    # Llama-2-7B fp16 on an H100 SXM: 13.48 GB / 3.35 TB/s = 4.02 ms of a 6 ms step: 67%
    v = decode_verdict("decode-c1", 13.48e9, 13.5e9, 6e-3, Peak(3.35e12, "3,350 GB/s HBM3"), Peak(989e12, "bf16 989 TFLOP/s"))
    assert v.at_wall and v.fraction == pytest.approx(0.6706, rel=1e-3)
    assert v.text.endswith(": at the memory wall")


def test_between_the_thresholds_is_near_the_wall_not_at_it():
    v = decode_verdict("decode-c1", 100e6, 0.1e9, 4e-3, BW, FL)          # 1.67 / 4 ms = 42%
    assert not v.at_wall and "near the memory wall, not at it" in v.text


def test_prefill_against_the_named_compute_peak():
    # 680 GFLOP in 2.5 s at 340 GFLOP/s = 80% MFU
    v = prefill_verdict("prefill-1024", 680e9, 0.2e9, 2.5, FL, BW, cores=2)
    assert v.at_wall and v.metric == "prefill MFU" and "340 GFLOP/s" in v.text and "step prefill-1024" in v.text
    w = prefill_verdict("prefill-0032", 10e9, 0.2e9, 1.0, FL, BW, cores=2)   # 2.9% of peak, 29 ms of compute
    assert not w.at_wall and w.bound == "overhead" and "not at the compute wall here" in w.text


def test_plan_verdicts_use_them_and_label_the_peak():
    probe = {"bandwidth_gbps": 60.0, "matmul_gflops_fp32": 340.0, "threads": 2,
             "bf16_note": "torch is not installed: no bf16 matmul"}
    wall = {"probe": probe, "weight_bytes": 90e6, "kv_bytes_per_token": 30e3, "decode_bytes_per_step": 100e6,
            "decode_achieved_gbps": 10.0, "decode_mbu": 10 / 60, "prefill_achieved_gflops": 100.0}
    prefill = [{"input_tokens": 1024, "ttft_ms_p50": 2000, "prefill_tps_p50": 370.0, "server_prompt_ms_p50": None}]
    decode = [{"concurrency": 1, "tpot_ms_p50": 10.0, "itl_token_ms_p50": 10.0, "output_throughput": 90.0,
               "server_tpot_ms_p50": None},
              {"concurrency": 4, "tpot_ms_p50": 20.0, "itl_token_ms_p50": 20.0, "output_throughput": 180.0,
               "server_tpot_ms_p50": None}]
    out, _ = phase_verdicts(prefill, decode, wall)
    assert out[0].startswith("decode reaches 17% of the probed DRAM bandwidth (60.0 GB/s) (decode MBU, step decode-c1): "
                             "not at the memory wall here")
    assert "batching to 4 raises decode throughput 2.0×" in out[1]
    assert "prefill reaches 29% of the probed fp32 matmul peak (340 GFLOP/s, numpy BLAS; torch is not installed" in out[2]
    assert "step prefill-1024" in out[2]


def test_every_mfu_names_its_peak():
    from phasebench.model.hardware import _from_record, load_hardware, local_record

    assert load_hardware("h100-sxm").peak_label("bf16") == "bf16 peak 989.4 TFLOP/s (h100-sxm datasheet)"
    assert "fp16 peak" in load_hardware("a100-80gb-sxm").peak_label("fp16")
    probe = {"matmul_gflops_fp32": 340.0, "bandwidth_gbps": 51.0, "threads": 2, "matmul_gflops_bf16": None,
             "bf16_note": "torch is not installed"}
    local = _from_record("local", local_record(probe, {"memory_gib": 8, "cpu": "test"}))
    assert local.peak_label("fp32") == "fp32 peak 0.34 TFLOP/s (fp32 matmul (numpy BLAS), measured by `phasebench probe`)"
    assert "not probed: torch is not installed" in local.extra["peak_sources"]["bf16"]
    with_bf16 = _from_record("local", local_record({**probe, "matmul_gflops_bf16": 2000.0,
                                                    "bf16_source": "torch CPU bf16 matmul, measured (AMX)"},
                                                   {"memory_gib": 8}))
    assert with_bf16.peak_label("bf16") == "bf16 peak 2 TFLOP/s (torch CPU bf16 matmul, measured (AMX))"


def test_a_peak_the_hardware_lacks_is_not_weighed():
    # a URL plan on hardware with no compute peak at the weights' precision (e.g. --hardware tpu-v4 with fp8)
    wall = {"probe": {"bandwidth_gbps": 1200.0, "peak_gflops": 0.0, "hardware": "tpu-v4", "peak_precision": None},
            "decode_bytes_per_step": 14e9, "decode_achieved_gbps": 700.0, "decode_mbu": 700 / 1200,
            "prefill_achieved_gflops": 50_000.0}
    prefill = [{"input_tokens": 1024, "ttft_ms_p50": 200, "prefill_tps_p50": 5000.0}]
    decode = [{"concurrency": 1, "tpot_ms_p50": 20.0, "output_throughput": 50.0}]
    out, figures = phase_verdicts(prefill, decode, wall)
    assert out[0].startswith("decode reaches 58% of") and "step decode-c1" in out[0]
    assert [f["metric"] for f in figures] == ["decode MBU"]  # no prefill MFU against a peak nobody knows
    v = decode_verdict("decode-c1", 14e9, 14e9, 0.02, Peak(1200e9, "HBM"), Peak(0.0, "no compute peak known"))
    assert v.compute_s == 0 and v.memory_s == pytest.approx(14e9 / 1200e9)
