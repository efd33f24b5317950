"""Honest verdicts: is a measured phase at its wall, and if not, what does the roofline say bounds it?

A phase is "at the memory wall" only when it moves most of the bytes the memory can move in the time it took
(MBU ≥ ``AT_WALL``), "at the compute wall" only when it does most of the FLOPs the cores can do (MFU ≥
``AT_WALL``). Below that the roofline still says what the time is made of: at the peaks, memory would take
bytes ÷ bandwidth and compute FLOPs ÷ peak FLOP/s; what the measurement took beyond the larger of the two is fixed
cost (per-layer and per-step overheads: kernel launches or thread barriers, scheduling, sampling, HTTP), and
the verdict names whichever of the three is largest.

One definition of each figure (docs/model.md, "MBU and MFU"):

- **decode MBU** = bytes one decode step reads (weights touched + the KV cache of every sequence in the batch)
  ÷ the step's time (TPOT) ÷ peak bandwidth;
- **prefill MFU** = prefill FLOPs ÷ the prefill's time (TTFT) ÷ peak FLOP/s at the precision the engine
  computes in — and the verdict says which peak that is (precision and source: probed or datasheet).

Each verdict carries the step (run) it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..report.fmt import seconds as _ms

AT_WALL = 0.60   # well-tuned stacks reach 55–80% of peak bandwidth in decode (Databricks, 2023): at the wall
NEAR_WALL = 0.35  # between the two: near the wall, with something else taking a real share


@dataclass(frozen=True)
class Peak:
    value: float     # bytes/s or FLOP/s
    label: str       # e.g. "probed DRAM bandwidth 51.0 GB/s", "fp32 numpy matmul peak 340 GFLOP/s (probed)"


@dataclass(frozen=True)
class Verdict:
    phase: str            # decode | prefill
    step: str             # the run (plan step) the measurement comes from
    metric: str           # "decode MBU" | "prefill MFU"
    fraction: float       # of the wall's peak
    at_wall: bool
    bound: str            # memory | compute | overhead: what the roofline says takes the largest share
    memory_s: float       # time at peak bandwidth
    compute_s: float      # time at peak FLOP/s
    measured_s: float
    text: str


def _judge(phase: str, step: str, measured_s: float, nbytes: float, flops: float, bw: Peak, fl: Peak,
           cores: int | None, wall: str) -> Verdict:
    # a peak the hardware record lacks (a TPU's fp8, an SRAM machine's) is not a resource the roofline can weigh:
    # its time counts as 0, so the verdict names what is known
    t_mem = nbytes / bw.value if bw.value else 0.0
    t_comp = flops / fl.value if fl.value else 0.0
    mbu, mfu = t_mem / measured_s, t_comp / measured_s
    frac, metric = (mbu, "decode MBU") if wall == "memory" else (mfu, "prefill MFU")
    overhead = max(measured_s - max(t_mem, t_comp), 0.0)
    shares = {"memory": t_mem, "compute": t_comp, "overhead": overhead}
    bound = max(shares, key=shares.get)
    on = f" on {cores} cores" if cores else ""
    wall_name = "memory wall" if wall == "memory" else "compute wall"
    what = (f"{frac:.0%} of {bw.label}" if wall == "memory" else f"{frac:.0%} of {fl.label}")
    head = f"{phase} reaches {what} ({metric}, step {step})"
    at = frac >= AT_WALL
    if at:
        return Verdict(phase, step, metric, frac, True, wall, t_mem, t_comp, measured_s,
                       f"{head}: at the {wall_name}")
    why = {
        "memory": f"memory bounds it after all, at {mbu:.0%} of the bandwidth: the bytes ({_ms(t_mem)} at peak) "
                  f"take more than the FLOPs ({_ms(t_comp)}){on}, but the step runs well below the peak",
        "compute": f"compute{on} bounds it: its FLOPs need {_ms(t_comp)} at the peak, more than its bytes "
                   f"({_ms(t_mem)}), and the rest of the {_ms(measured_s)} is overhead",
        "overhead": f"fixed cost bounds it: at the peaks memory needs {_ms(t_mem)} and compute{on} {_ms(t_comp)} of "
                    f"the measured {_ms(measured_s)}, so ~{_ms(overhead)} is per-layer and per-step overhead "
                    f"(kernel launches or thread barriers, scheduling, sampling, HTTP)",
    }[bound]
    if bound == wall:   # the wall's own resource is the largest share, yet far from its peak
        why = (f"its {'bytes' if wall == 'memory' else 'FLOPs'} are still the largest share ({_ms(shares[wall])} at "
               f"the peak of {_ms(measured_s)}); the rest is overhead ({_ms(overhead)})")
    near = frac >= NEAR_WALL
    verdict = f"near the {wall_name}, not at it" if near else f"not at the {wall_name} here"
    return Verdict(phase, step, metric, frac, False, bound, t_mem, t_comp, measured_s,
                   f"{head}: {verdict}; the roofline says {why}")


def decode_verdict(step: str, bytes_per_step: float, flops_per_step: float, tpot_s: float, bandwidth: Peak,
                   flops_peak: Peak, cores: int | None = None) -> Verdict:
    """The decode phase against the memory wall (MBU), naming what bounds it when it is not there."""
    return _judge("decode", step, tpot_s, bytes_per_step, flops_per_step, bandwidth, flops_peak, cores, "memory")


def prefill_verdict(step: str, flops: float, nbytes: float, ttft_s: float, flops_peak: Peak, bandwidth: Peak,
                    cores: int | None = None) -> Verdict:
    """The prefill phase against the compute wall (MFU at the named peak)."""
    return _judge("prefill", step, ttft_s, nbytes, flops, bandwidth, flops_peak, cores, "compute")
