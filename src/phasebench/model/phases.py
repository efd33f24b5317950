"""The analytic phase model: prefill and decode time of a model on a device from FLOPs, bytes and links.

Each phase's time is the larger of its compute time (FLOPs ÷ achievable FLOP/s) and memory time (bytes ÷
achievable bandwidth), plus communication (tensor-parallel all-reduces, pipeline hops) and a fixed per-layer
overhead. SRAM dataflow machines whose weights live only in on-chip SRAM (Groq) are a pipeline of chips
instead. Every formula and default factor is written out in docs/model.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .arch import GGUF_BYTES, STORAGE_ONLY, ModelArch, precision_bytes
from .calibration import efficiency_for
from .engines import DEFAULT_EFFICIENCY, Efficiency, canonical_engine, memory_use, profile
from .errors import ModelError
from .hardware import Hardware

__all__ = ["DEFAULT_EFFICIENCY", "Efficiency", "Precision", "Setup", "Prediction", "Phase", "Memory", "predict",
           "setup_for", "sweep", "closed_loop", "forward", "prefill_flops", "decode_flops", "kv_heads_per_rank", "resolve_precision",
           "weight_only"]

SRAM_USABLE = 1.0     # SRAM machines: the compiler places weights and KV statically, no allocator slack


_NOT_KV = frozenset({"q4_k_m", "q5_k_m", "q6_k"})   # k-quant mixes: weight files only, never a KV cache


@dataclass(frozen=True)
class Precision:
    weights: str = "fp16"          # storage: fp32 bf16 fp16 fp8 int8 int4, a GGUF format (q4_k_m, q8_0…), or native (a GGUF file's size)
    activations: str = "fp16"      # compute precision: selects the device's peak
    kv: str = "fp16"               # KV cache element

    def __post_init__(self) -> None:
        if self.weights != "native":
            precision_bytes(self.weights)
        precision_bytes(self.activations)
        if self.activations in GGUF_BYTES:
            raise ModelError(f"{self.activations} is a GGUF storage format, not a compute precision "
                             "(activations: fp16, bf16, fp8, int8…)")
        precision_bytes(self.kv)
        if self.kv in _NOT_KV:   # llama.cpp's cache types: f32 f16 bf16 q8_0 q4_0 q4_1 iq4_nl q5_0 q5_1
            raise ModelError(f"{self.kv} is a GGUF weight format with no KV-cache type of that name "
                             f"(KV: fp16, bf16, fp8, int8, {', '.join(k for k in GGUF_BYTES if k not in _NOT_KV)})")

    @classmethod
    def uniform(cls, p: str) -> Precision:
        return cls(p, p, p)

    def label(self) -> str:
        return self.weights if len({self.weights, self.activations, self.kv}) == 1 else \
            f"w:{self.weights} a:{self.activations} kv:{self.kv}"


@dataclass(frozen=True)
class Setup:
    model: ModelArch
    hardware: Hardware
    devices: int = 1
    tp: int = 0                    # 0: devices // pp
    pp: int = 1
    precision: Precision = field(default_factory=Precision)
    efficiency: Efficiency | None = None
    engine: str | None = None      # serving engine (canonical or alias); None: the device's default engine
    memory_fraction: float | None = None   # the engine's memory knob, set: vLLM --gpu-memory-utilization, SGLang
    #                                        --mem-fraction-static, TensorRT-LLM free_gpu_memory_fraction

    def resolved(self) -> Setup:
        tp = self.tp or max(self.devices // self.pp, 1)
        if tp * self.pp != self.devices:
            raise ModelError(f"tensor parallel {tp} × pipeline parallel {self.pp} ≠ {self.devices} devices")
        if self.devices < 1:
            raise ModelError("devices must be ≥ 1")
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise ModelError(f"memory fraction must be in (0, 1], got {self.memory_fraction}")
        eff = self.efficiency or profile(self.hardware, self.engine)
        if self.precision.weights == "native" and not self.model.weight_bytes_actual:
            raise ModelError("weights 'native' needs a GGUF model (its file size is the weight bytes)")
        return replace(self, tp=tp, efficiency=eff, engine=eff.engine or self.engine)


def setup_for(model: str, hardware: str, devices: int = 1, tp: int = 0, pp: int = 1, precision: str = "fp16",
              activations: str | None = None, kv: str | None = None, engine: str | None = None,
              memory_fraction: float | None = None) -> tuple[Setup, list[str]]:
    """A setup from names, as every command and the Python API build one: the model and hardware looked up,
    unstated precisions resolved, the engine's spelling resolved (``None``: the device's default engine), and
    its efficiency: the user's calibration for (hardware, engine) if stored, else the engine's profile
    (``data/engines.yaml``, fitted on the corpus). Returns the notes to show with its predictions."""
    from .arch import load_model
    from .engines import default_engine
    from .hardware import load_hardware

    hw = load_hardware(hardware)
    pr, note = resolve_precision(hw, precision, activations, kv)
    eff, eff_note = efficiency_for(hw, engine)
    notes = [n for n in (note, eff_note) if n]
    if not engine:
        notes.append(f"engine: {default_engine(hw)} (the default for {hw.key}; --engine names another)")
    setup = Setup(load_model(model), hw, devices=devices, tp=tp, pp=pp, precision=pr, efficiency=eff,
                  engine=eff.engine or (canonical_engine(engine) if engine else None), memory_fraction=memory_fraction)
    return setup, notes


@dataclass
class Phase:
    """One phase's cost breakdown (times in seconds)."""
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float
    time_s: float
    bound: str
    attn_s: float = 0.0   # unfused attention kernels' seconds (in memory_s too; added to the GEMMs' roof, not in it)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "bytes": self.bytes, "intensity_flop_per_byte": self.intensity,
                "compute_ms": self.compute_s * 1e3, "memory_ms": self.memory_s * 1e3, "comm_ms": self.comm_s * 1e3,
                "overhead_ms": self.overhead_s * 1e3, "time_ms": self.time_s * 1e3, "bound": self.bound}


@dataclass
class Memory:
    weights_bytes: float           # whole model
    per_device_weights: float
    kv_per_token: float            # whole model, one token, at the KV precision
    kv_per_device_per_seq: float   # at the final context
    kv_total: float                # all sequences, all devices (with TP replication)
    per_device: float
    capacity: float
    fits: bool
    max_batch: int
    chips_needed: int = 0          # SRAM machines: chips whose SRAM holds weights + KV
    policy: str = ""               # whose rule ``capacity`` is (the engine's allocator: MemoryUse.source)

    def to_dict(self) -> dict[str, Any]:
        gb = 1e9
        return {"weights_gb": self.weights_bytes / gb, "per_device_weights_gb": self.per_device_weights / gb,
                "kv_per_token_bytes": self.kv_per_token, "kv_total_gb": self.kv_total / gb,
                "per_device_gb": self.per_device / gb, "usable_gb": self.capacity / gb, "fits": self.fits,
                "max_batch": self.max_batch, **({"chips_needed": self.chips_needed} if self.chips_needed else {}),
                **({"policy": self.policy} if self.policy else {})}


@dataclass
class Prediction:
    model: str
    hardware: str
    devices: int
    tp: int
    pp: int
    precision: Precision
    batch: int
    input_len: int
    output_len: int
    efficiency: Efficiency
    memory: Memory
    prefill: Phase | None = None
    decode_first: Phase | None = None   # the first decode step (context = input + 1)
    decode_last: Phase | None = None    # the last one (context = input + output − 1)
    ttft_s: float | None = None         # request_s + prefill
    tpot_s: float | None = None         # mean over the output_len − 1 decode steps
    notes: list[str] = field(default_factory=list)
    engine: str = ""
    request_s: float = 0.0              # the engine's fixed per-request cost inside TTFT
    range: dict[str, Any] = field(default_factory=dict)   # low/high per metric from the corpus residuals
    concurrency: int = 0                # sequences held at once when the KV cache holds fewer than ``batch``; 0: all

    @property
    def fits(self) -> bool:
        """The whole batch's weights and KV cache fit in usable memory."""
        return self.memory.fits

    @property
    def timed(self) -> bool:
        """Times are predicted: the batch fits, or runs ``concurrency`` sequences at a time (see ``_over_capacity``)."""
        return self.ttft_s is not None

    @property
    def e2e_s(self) -> float | None:
        if self.ttft_s is None or self.tpot_s is None:
            return None
        return self.ttft_s + max(self.output_len - 1, 0) * self.tpot_s

    @property
    def output_throughput(self) -> float | None:
        e = self.e2e_s
        return self.batch * self.output_len / e if e else None

    @property
    def total_throughput(self) -> float | None:
        e = self.e2e_s
        return self.batch * (self.input_len + self.output_len) / e if e else None

    def to_dict(self) -> dict[str, Any]:
        ms = (lambda s: None if s is None else s * 1e3)
        return {
            "model": self.model, "hardware": self.hardware, "devices": self.devices, "tp": self.tp, "pp": self.pp,
            "precision": asdict(self.precision), "batch": self.batch, "input_len": self.input_len,
            "output_len": self.output_len, "fits": self.fits, "concurrency": self.concurrency or self.batch,
            "engine": self.engine, "request_ms": self.request_s * 1e3,
            "ttft_ms": ms(self.ttft_s), "tpot_ms": ms(self.tpot_s), "e2e_s": self.e2e_s,
            "output_throughput": self.output_throughput, "total_throughput": self.total_throughput,
            "prefill_bound": self.prefill.bound if self.prefill else None,
            "decode_bound": self.decode_last.bound if self.decode_last else None,
            "prefill": self.prefill.to_dict() if self.prefill else None,
            "decode_first_step": self.decode_first.to_dict() if self.decode_first else None,
            "decode_last_step": self.decode_last.to_dict() if self.decode_last else None,
            "memory": self.memory.to_dict(), "efficiency": self.efficiency.to_dict(), "range": self.range,
            "notes": self.notes,
        }


# --- the model ---------------------------------------------------------------------------------------------
def resolve_precision(hw: Hardware, weights: str = "fp16", activations: str | None = None,
                      kv: str | None = None) -> tuple[Precision, str | None]:
    """Fill in unstated precisions. Activations default to the weights' precision when the device computes in it
    (full quantization), else to bf16/fp16, else fp32 (CPUs): weight-only quantization. Returns a note when the
    default is not the weights' own precision."""
    note = None
    if activations is None:
        for cand in ([weights] if weights not in STORAGE_ONLY else []) + ["bf16", "fp16", "fp32"]:
            if hw.tflops.get(cand) or (cand in ("bf16", "fp16") and (hw.tflops.get("bf16") or hw.tflops.get("fp16"))):
                activations = cand
                break
        else:
            activations = max(hw.tflops, key=lambda k: hw.tflops[k])
        if activations != weights:
            note = f"activations computed in {activations} (weight-only {weights} on {hw.key})"
    return Precision(weights, activations, kv or ("fp16" if weights in STORAGE_ONLY or weights == "int8" else weights)), note


def _sram_only(hw: Hardware) -> bool:
    return hw.kind == "sram-dataflow" and hw.memory_gb * 1000 <= hw.sram_mb * 1.0001


def _moe_weight_bytes(m: ModelArch, w: float, tokens: float) -> float:
    """Weight bytes read by a forward pass over ``tokens`` tokens: for MoE, the experts touched.

    With uniform routing each expert is missed by a token with probability 1 − k/E, so the expected fraction
    of experts touched by ``tokens`` tokens is 1 − (1 − k/E)^tokens.
    """
    ef = m.expert_bytes_fraction()
    if not ef:
        return w
    touched = 1.0 - (1.0 - m.experts_active / m.experts) ** tokens
    return w * (1.0 - ef) + w * ef * touched


def _attn_flops(m: ModelArch, new_tokens: float, context: float) -> float:
    """QKᵀ and AV for ``new_tokens`` tokens attending to ``context`` tokens each (2 products × 2 FLOPs)."""
    local = m.local_layers if m.sliding_window else 0
    ctx_local = min(context, m.sliding_window) if local else 0
    return 4.0 * m.q_dim * new_tokens * ((m.layers - local) * context + local * ctx_local)


def prefill_flops(m: ModelArch, prompt: float, batch: float = 1) -> float:
    """FLOPs to prefill ``batch`` prompts of ``prompt`` tokens: every token through every layer, the LM head only
    for each prompt's last token, and causal attention (half of the full S² product)."""
    lm = m.lm_head_params
    return batch * (2.0 * (m.compute_params - lm) * prompt + 2.0 * lm + _attn_flops(m, prompt, prompt) / 2)


def decode_flops(m: ModelArch, batch: float, context: float) -> float:
    """FLOPs of one decode step: one token for each of ``batch`` sequences at ``context`` tokens."""
    return batch * (2.0 * m.compute_params + _attn_flops(m, 1, context))


def kv_heads_per_rank(m: ModelArch, tp: int) -> float:
    """KV heads each tensor-parallel rank holds: split when there are enough, one replicated copy when tp > n_kv."""
    return max(m.kv_heads / tp, 1.0)


def _roof(compute: float, memory: float, k: float) -> float:
    """The roofline's max(compute, memory); with a knee k > 0 the smooth (c^k + m^k)^(1/k), which is slower near
    the ridge point, where real kernels are neither purely compute- nor purely memory-bound."""
    hi = max(compute, memory)
    if not k or hi <= 0:
        return hi
    return hi * ((compute / hi) ** k + (memory / hi) ** k) ** (1.0 / k)


def _phase(compute: float, memory: float, comm: float, overhead: float, flops: float, nbytes: float,
           knee: float = 0.0, attn: float = 0.0) -> Phase:
    """The breakdown; ``attn``: unfused attention kernels' seconds (memory-bound on the scores they move), added
    to the GEMMs' roofline time and counted in the memory figure."""
    t = _roof(compute, memory, knee) + attn + comm + overhead
    memory += attn
    bound = max((("compute", compute), ("memory", memory), ("communication", comm), ("overhead", overhead)),
                key=lambda kv: kv[1])[0]
    return Phase(flops, nbytes, compute, memory, comm, overhead, t, bound, attn)


def _comm_terms(s: Setup, act_bytes: float) -> tuple[float, float]:
    """Communication of a pass as (fixed seconds, seconds per token). Tensor parallel: 2 ring all-reduces per
    layer of tokens·h activations (16-bit) at the link's achievable bandwidth, each with a latency floor;
    pipeline: pp − 1 hops."""
    hw, m, eff = s.hardware, s.model, s.efficiency
    bw = hw.interconnect_gbps * 1e9 * (eff.link if eff else 1.0) or 1e18
    per_msg_token = m.hidden * max(act_bytes, 2.0) / bw   # activations travel in 16 bits even when GEMMs run in fp8
    fixed = per_token = 0.0
    if s.tp > 1:
        fixed += 2 * m.layers * eff.allreduce_us * 1e-6
        per_token += 2 * m.layers * 2 * (s.tp - 1) / s.tp * per_msg_token
    if s.pp > 1:
        fixed += (s.pp - 1) * hw.interconnect_latency_us * 1e-6
        per_token += (s.pp - 1) * per_msg_token
    return fixed, per_token


def _peak16(hw: Hardware) -> float:
    """The device's 16-bit peak (bf16, else fp16), where it has one; else its largest."""
    for p in ("bf16", "fp16"):
        if hw.tflops.get(p):
            return hw.tflops[p] * 1e12
    return max(hw.tflops.values()) * 1e12


def weight_only(m: ModelArch, pr: Precision) -> bool:
    """Weights stored narrower than the compute precision (int4/int8/fp8 weights with bf16 compute, a GGUF
    format, a quantized GGUF file): their GEMMs dequantize in the kernel (``Efficiency.wq_compute``). Weights
    of 16 bits or more are never weight-only, also where the device computes in fp32 (a CPU without bf16)."""
    act = min(precision_bytes(pr.activations), 2.0)   # 16-bit weights on an fp32-only device are not quantized
    if pr.weights == "native":
        return bool(m.weight_bytes_actual) and m.weight_bytes_actual < 0.95 * act * m.params
    return precision_bytes(pr.weights) < act


class Pass:
    """One forward pass (one engine iteration) of a resolved HBM setup: the one cost function behind
    ``predict``'s prefill and decode steps, the simulator's analytic profile and a run's predicted phases.

    The setup's constants (weight bytes per rank, achievable bandwidth and FLOP/s, fixed overheads, the
    all-reduce's fixed and per-token parts) are worked out once, here; :meth:`phase` and :meth:`time` price a
    pass from its four aggregates. The simulator keeps one and calls :meth:`time` every iteration.

    ``tokens``: tokens through the layers (prefill chunk tokens + one per decoding sequence); ``attn_flops``:
    QKᵀ and AV FLOPs of those tokens; ``kv_bytes``: KV cache read and written (whole model, all sequences);
    ``lm_tokens``: tokens through the LM head (one per sequence that makes a token)."""

    __slots__ = ("s", "body_flops", "lm_flops", "w", "kv_share", "inv_bw", "inv_kv_bw", "overhead", "peak",
                 "half_rows", "row_frac", "knee", "comm_fixed", "comm_token", "moe", "expert_flops", "peak16_ratio",
                 "score_bytes", "wq_extra")

    def __init__(self, s: Setup) -> None:
        m, hw, eff, pr = s.model, s.hardware, s.efficiency, s.precision
        assert eff is not None, "forward() needs a resolved setup"
        self.s = s
        lm = m.lm_head_params
        self.body_flops = 2.0 * (m.compute_params - lm)   # per token through the layers
        self.lm_flops = 2.0 * lm                          # per token through the LM head
        self.w = m.weight_bytes(pr.weights)
        self.kv_share = kv_heads_per_rank(m, s.tp) / m.kv_heads
        bw = hw.bandwidth * eff.memory
        self.inv_bw, self.inv_kv_bw = 1.0 / bw, 1.0 / (bw * eff.kv_memory)
        self.overhead = m.layers * eff.layer_overhead_us * 1e-6 + eff.step_us * 1e-6
        self.peak = hw.peak_flops(pr.activations) * eff.compute * s.tp
        self.half_rows = eff.gemm_half_rows
        self.row_frac = m.experts_active / m.experts if m.experts > 1 else 1.0   # GEMM rows per weight matrix
        self.knee = eff.sharpness
        # an engine that materialises the attention scores (llama.cpp without -fa) moves attn_score_bytes per
        # score through memory; scores per pass = attn_flops / (4 · head_dim) (QKᵀ and AV, 2 FLOPs each per
        # score and head dimension), split over the tensor-parallel ranks with the heads
        self.score_bytes = eff.attn_score_bytes / (4.0 * m.head_dim) / s.tp if eff.attn_score_bytes else 0.0
        # weight-only quantized weights: the weight GEMMs (not attention) reach wq_compute of the rate
        self.wq_extra = 1.0 / eff.wq_compute - 1.0 if eff.wq_compute < 1.0 and weight_only(m, pr) else 0.0
        act_bytes = precision_bytes(pr.activations)
        self.comm_fixed, self.comm_token = _comm_terms(s, act_bytes)
        self.moe = m.experts > 1
        if self.moe:   # the routed experts' grouped GEMMs: at most the 16-bit rate, times moe_compute
            self.expert_flops = 2.0 * m.layers * m.experts_active * m._expert_params()   # per token
            p16 = 1.0 if act_bytes >= 2 else min(1.0, _peak16(hw) / hw.peak_flops(pr.activations))
            self.peak16_ratio = p16 * eff.moe_compute

    def terms(self, tokens: float, attn_flops: float, kv_bytes: float, lm_tokens: float
              ) -> tuple[float, float, float, float, float, float, float]:
        """(compute s, memory s, communication s, overhead s, FLOPs, bytes, unfused attention s) of a pass; the
        last is 0 unless the engine materialises the attention scores (then compute s is the GEMMs' alone)."""
        flops = self.body_flops * tokens + self.lm_flops * lm_tokens + attn_flops
        w_rank = (_moe_weight_bytes(self.s.model, self.w, max(tokens, 1.0)) if self.moe else self.w) / self.s.tp
        kv_rank = kv_bytes * self.kv_share
        peak = self.peak
        if self.half_rows:
            rows = tokens * self.row_frac
            peak = peak * (rows / (rows + self.half_rows))
        memory = w_rank * self.inv_bw + kv_rank * self.inv_kv_bw
        nbytes = w_rank + kv_rank
        attn = 0.0
        if self.score_bytes:
            # unfused attention: its own kernels, after the layer's GEMMs, each its own roofline (memory-bound
            # on the scores they move), so added to the GEMMs' time rather than overlapped with it
            scores = attn_flops * self.score_bytes
            attn = _roof(attn_flops / self.peak, scores * self.inv_bw, self.knee)
            nbytes += scores
            flops_gemm = flops - attn_flops
        else:
            flops_gemm = flops
        compute = flops_gemm / peak
        if self.wq_extra:   # the weight GEMMs' FLOPs: all but attention's
            compute += (flops - attn_flops) * self.wq_extra / peak
        if self.moe:   # the experts' slower rate compounds the dequantization's (rates multiply)
            expert = self.expert_flops * tokens
            compute += expert * (1.0 + self.wq_extra) * (1.0 / self.peak16_ratio - 1.0) / peak
        return compute, memory, self.comm_fixed + self.comm_token * tokens, self.overhead, flops, nbytes, attn

    def time(self, tokens: float, attn_flops: float, kv_bytes: float, lm_tokens: float) -> float:
        """The pass's seconds (what :meth:`phase` puts in ``time_s``), without building the breakdown."""
        c, mem, comm, ov, _, _, attn = self.terms(tokens, attn_flops, kv_bytes, lm_tokens)
        return _roof(c, mem, self.knee) + attn + comm + ov

    def timer(self) -> Callable[[float, float, float, float], float]:
        """:meth:`time` as one closure over the constants, for a caller that prices millions of passes (the
        simulator: one call per iteration instead of four). The same arithmetic in the same order, so the same
        float (tested); a mixture of experts or unfused attention keeps :meth:`time` itself."""
        if self.moe or self.score_bytes:
            return self.time
        body, lmf, peak0, half, frac = self.body_flops, self.lm_flops, self.peak, self.half_rows, self.row_frac
        w_mem = (self.w / self.s.tp) * self.inv_bw
        kv_share, inv_kv_bw, wq, knee = self.kv_share, self.inv_kv_bw, self.wq_extra, self.knee
        comm_fixed, comm_token, ov = self.comm_fixed, self.comm_token, self.overhead
        inv_k = 1.0 / knee if knee else 0.0

        def time(tokens: float, attn_flops: float, kv_bytes: float, lm_tokens: float) -> float:
            flops = body * tokens + lmf * lm_tokens + attn_flops
            peak = peak0
            if half:
                rows = tokens * frac
                peak = peak * (rows / (rows + half))
            memory = w_mem + kv_bytes * kv_share * inv_kv_bw
            compute = flops / peak
            if wq:
                compute += (flops - attn_flops) * wq / peak
            hi = memory if memory > compute else compute
            if knee and hi > 0:
                hi = hi * ((compute / hi) ** knee + (memory / hi) ** knee) ** inv_k
            return hi + (comm_fixed + comm_token * tokens) + ov   # time()'s attn term is 0 here

        return time

    def phase(self, tokens: float, attn_flops: float, kv_bytes: float, lm_tokens: float) -> Phase:
        c, mem, comm, ov, flops, nbytes, attn = self.terms(tokens, attn_flops, kv_bytes, lm_tokens)
        return _phase(c, mem, comm, ov, flops, nbytes, self.knee, attn)


def forward(s: Setup, tokens: float, attn_flops: float, kv_bytes: float, lm_tokens: float) -> Phase:
    """One forward pass of a resolved HBM setup (:class:`Pass`, whose docstring says what the arguments are)."""
    return Pass(s).phase(tokens, attn_flops, kv_bytes, lm_tokens)


def request_s(s: Setup) -> float:
    """The fixed per-request cost (tokenisation, scheduling, sampling, HTTP) the engine adds to TTFT."""
    return (s.efficiency.request_ms if s.efficiency else 0.0) * 1e-3


def prefill_phase(s: Setup, batch: int, input_len: int) -> Phase:
    """Prefill of ``batch`` prompts of ``input_len`` tokens in one pass (TTFT is this plus :func:`request_s`)."""
    m = s.model
    if _sram_only(s.hardware):
        return sram_prefill(s, input_len, turns=batch)   # an SRAM pipeline does not batch: prompts take turns
    return forward(s, batch * input_len, batch * _attn_flops(m, input_len, input_len) / 2,
                   batch * m.kv_bytes(input_len, s.precision.kv), batch)


def decode_phase(s: Setup, batch: int, context: float) -> Phase:
    """One decode step: one token for each of ``batch`` sequences at ``context`` tokens."""
    m = s.model
    if _sram_only(s.hardware):
        return sram_pass(s, context, turns=batch)
    return forward(s, batch, batch * _attn_flops(m, 1, context), batch * m.kv_bytes(context, s.precision.kv), batch)


def predict(setup: Setup, batch: int = 1, input_len: int = 128, output_len: int = 128) -> Prediction:
    """Predict TTFT, TPOT, E2E and throughput of ``batch`` sequences of ``input_len`` + ``output_len`` tokens,
    each with a range from the corpus residuals of its engine and device class (``Prediction.range``), and a
    note when the pair falls outside what the corpus covers."""
    from .uncertainty import attach_range

    p = _predict(setup, batch, input_len, output_len)
    attach_range(p, setup.hardware)
    return p


def _predict(setup: Setup, batch: int = 1, input_len: int = 128, output_len: int = 128) -> Prediction:
    """The point prediction (no range): what the corpus fit calls."""
    if batch < 1 or input_len < 1 or output_len < 1:
        raise ModelError("batch, input length and output length must be ≥ 1")
    s = setup.resolved()
    m, hw, eff, pr = s.model, s.hardware, s.efficiency, s.precision
    notes: list[str] = []
    if eff.source.startswith("calibration") or eff.source == "command line":
        notes.append(f"efficiency factors from {eff.source}")
    if eff.warning:
        notes.append(eff.warning)
    if m.context and input_len + output_len > m.context:
        notes.append(f"input + output ({input_len + output_len}) exceeds the model's context ({m.context})")
    hw.peak_flops(pr.activations)   # an impossible compute precision is an error before anything else
    w = m.weight_bytes(pr.weights)
    final_ctx = input_len + output_len
    if _sram_only(hw):
        return _predict_sram(s, batch, input_len, output_len, w, notes)

    # memory ------------------------------------------------------------------------------------------------
    heads_dev = kv_heads_per_rank(m, s.tp)
    kv_share = heads_dev / m.kv_heads / s.pp           # fraction of one sequence's KV a device holds
    if s.tp > m.kv_heads:
        notes.append(f"tensor parallel {s.tp} > {m.kv_heads} KV heads: KV cache replicated {s.tp / m.kv_heads:.0f}×")
    kv_seq = m.kv_bytes(final_ctx, pr.kv)
    w_dev = w / s.devices
    kv_dev_seq = kv_seq * kv_share
    use = memory_use(hw, eff.engine or s.engine or None)
    if s.memory_fraction is not None:   # the user's setting of the engine's own knob, at every memory size
        use = replace(use, fraction=s.memory_fraction, small_gib=0.0,
                      source=f"memory fraction {s.memory_fraction:g} as set" + (" (of what the weights leave)" if use.of_free else ""))
    usable = use.usable(hw.memory_bytes, w_dev)
    per_dev = w_dev + batch * kv_dev_seq
    max_batch = int((usable - w_dev) // kv_dev_seq) if usable > w_dev and kv_dev_seq else 0
    mem = Memory(w, w_dev, m.kv_bytes_per_token(pr.kv), kv_dev_seq, batch * kv_seq * kv_share * s.devices,
                 per_dev, usable, per_dev <= usable, max(max_batch, 0), policy=use.source)
    pred = Prediction(m.name, hw.key, s.devices, s.tp, s.pp, pr, batch, input_len, output_len, eff, mem, notes=notes,
                      engine=eff.engine or s.engine or "")
    if not mem.fits:
        if use.queues_over_capacity and 1 <= mem.max_batch < batch and w_dev < usable:
            return _over_capacity(setup, pred, mem.max_batch)
        return pred
    pred.prefill = prefill_phase(s, batch, input_len)
    pred.request_s = request_s(s)
    pred.ttft_s = pred.request_s + pred.prefill.time_s
    c0, c1 = input_len + 1, max(input_len + output_len - 1, input_len + 1)
    pred.decode_first, pred.decode_last = decode_phase(s, batch, c0), decode_phase(s, batch, c1)
    pred.tpot_s = _mean_decode(s, batch, c0, c1, pred.decode_first, pred.decode_last) if output_len > 1 \
        else pred.decode_first.time_s
    return pred


def _over_capacity(setup: Setup, pred: Prediction, held: int) -> Prediction:
    """A batch whose KV cache at the final context outgrows memory, on an engine that batches continuously: it
    holds ``held`` sequences and queues (or preempts and later recomputes) the rest, so the batch takes
    ``batch / held`` times as long as ``held`` sequences do; each running sequence's step is that of ``held``."""
    q = _predict(setup, held, pred.input_len, pred.output_len)
    stretch = pred.batch / held
    pred.prefill, pred.decode_first, pred.decode_last, pred.request_s = q.prefill, q.decode_first, q.decode_last, q.request_s
    pred.concurrency = held
    if pred.output_len > 1:
        pred.ttft_s = q.ttft_s
        pred.tpot_s = (stretch * q.e2e_s - q.ttft_s) / (pred.output_len - 1)
    else:
        pred.ttft_s, pred.tpot_s = stretch * q.ttft_s, q.tpot_s
    pred.notes.append(f"the KV cache at the final context holds {held} of the {pred.batch} sequences: the engine runs "
                      f"{held} at a time and queues or preempts the rest, so the batch takes {stretch:.2f}× as long as "
                      f"{held} sequences (E2E and throughput are the batch's; TPOT is its mean, stretched alike)")
    return pred


def closed_loop(setup: Setup, clients: int, input_len: int = 128, output_len: int = 128) -> Prediction:
    """The steady state of ``clients`` closed-loop clients (each sends its next request when the last one ends)
    on an engine that batches continuously, as NIM/genai-perf and LLMPerf measure it — not a static batch.

    - A request's prompt is prefilled on its own (arrivals are staggered), so TTFT is the request cost, one
      prompt's prefill and the wait behind other clients' prefills: an M/D/1 queue, W = ρ / (2(1 − ρ)) · T_p,
      ρ = arrival rate · T_p, arrival rate = clients / E2E (iterated to a fixed point).
    - A decode step carries all ``clients`` sequences; each other client's prefill stalls every running stream
      once per request (an iteration with a prompt in it takes the prompt's time), so
      TPOT = step(clients) + (clients − 1) / (output_len − 1) · T_p.
    No parameters of its own: the same ``forward`` as :func:`predict` at batch 1 and at batch ``clients``."""
    many = _predict(setup, clients, input_len, output_len)
    if clients <= 1 or not many.timed:
        return many
    one = _predict(setup, 1, input_len, output_len)
    t_p = one.prefill.time_s
    tpot = many.tpot_s + (clients - 1) / max(output_len - 1, 1) * t_p
    ttft = one.ttft_s
    for _ in range(8):
        rho = min(clients / (ttft + max(output_len - 1, 0) * tpot) * t_p, 0.95)
        ttft = one.ttft_s + rho / (2 * (1 - rho)) * t_p
    many.notes.append(f"{clients} closed-loop clients under continuous batching (TTFT: one prompt's prefill and "
                      "the queue of prefills; TPOT: the batch's step and the other clients' prefills)")
    return replace(many, ttft_s=ttft, tpot_s=tpot)


_GL = ((-0.9061798459, 0.2369268851), (-0.5384693101, 0.4786286705), (0.0, 0.5688888889),
       (0.5384693101, 0.4786286705), (0.9061798459, 0.2369268851))   # 5-point Gauss-Legendre nodes, weights


def _mean_decode(s: Setup, batch: int, c0: float, c1: float, a: Phase, b: Phase) -> float:
    """Mean step time over contexts c0…c1: exact from the two ends for the hard roofline (both terms linear in
    c), 5-point Gauss-Legendre for a smooth knee or an SRAM pipeline."""
    if not s.efficiency.sharpness and not _sram_only(s.hardware):
        return _mean_step(a, b, c0, c1)
    if c1 <= c0:
        return a.time_s
    mid, half = (c0 + c1) / 2, (c1 - c0) / 2
    return sum(wt * decode_phase(s, batch, mid + x * half).time_s for x, wt in _GL) / 2


def _mean_step(a: Phase, b: Phase, c0: float, c1: float) -> float:
    """Mean of max(compute(c), memory(c)) + fixed over c in [c0, c1], both linear in c (sliding windows aside)."""
    # unfused attention (linear in c) is added after the GEMMs' max, so it is averaged on its own
    fixed = a.comm_s + a.overhead_s + (a.attn_s + b.attn_s) / 2
    if c1 <= c0:
        return a.time_s
    ca0, ca1, ma0, ma1 = a.compute_s, b.compute_s, a.memory_s - a.attn_s, b.memory_s - b.attn_s
    d0, d1 = ca0 - ma0, ca1 - ma1
    if d0 * d1 >= 0:  # the same bound throughout
        return fixed + (max(ca0, ma0) + max(ca1, ma1)) / 2
    x = d0 / (d0 - d1)  # fraction of the way where they cross
    mid = ca0 + x * (ca1 - ca0)
    return fixed + x * (max(ca0, ma0) + mid) / 2 + (1 - x) * (mid + max(ca1, ma1)) / 2


def _sram_layout(s: Setup) -> tuple[int, int, float, float, float]:
    """(chips in the deployment, chips the model needs, SRAM bytes per chip, bandwidth and FLOP/s per chip)."""
    m, hw, pr = s.model, s.hardware, s.precision
    per_dev = max(hw.chips, 1)
    chips = per_dev * s.devices
    sram_chip = hw.sram_mb * 1e6 / per_dev
    need = math.ceil(m.weight_bytes(pr.weights) / (sram_chip * SRAM_USABLE))
    return chips, need, sram_chip, hw.bandwidth / per_dev, hw.peak_flops(pr.activations) / per_dev


def _sram_stage(s: Setup, flops_token: float, bytes_token: float, chips_used: int) -> tuple[float, float, float]:
    """One layer's stage for one token on the chips that hold it: (compute s, SRAM read s, synchronisation s).

    The model is laid across ``chips_used`` chips, so a layer spans chips_used / L chips (or a chip holds several
    layers); each chip computes at its own FLOP/s and reads its own SRAM. The per-stage synchronisation (the
    class's ``layer_overhead_us``: the layer's partial results exchanged between its chips and handed on, on a
    fixed compiled schedule) is what bounds a token's time through a stage."""
    m, eff = s.model, s.efficiency
    _, _, _, bw_chip, fl_chip = _sram_layout(s)
    share = chips_used / m.layers
    return (flops_token / m.layers / (share * fl_chip * eff.compute),
            bytes_token / m.layers / (share * bw_chip * eff.memory), eff.layer_overhead_us * 1e-6)


def _sram_hops(s: Setup, chips_used: int) -> float:
    hw, m = s.hardware, s.model
    act = m.hidden * precision_bytes(s.precision.activations)
    return (chips_used - 1) * (hw.interconnect_latency_us * 1e-6 + act / (hw.interconnect_gbps * 1e9 or 1e18))


def _sram_chips_used(s: Setup, context: float) -> int:
    chips, _, sram_chip, _, _ = _sram_layout(s)
    need = s.model.weight_bytes(s.precision.weights) + s.model.kv_bytes(context, s.precision.kv)
    return min(max(math.ceil(need / (sram_chip * SRAM_USABLE)), 1), chips)


def sram_pass(s: Setup, context: float, turns: int = 1) -> Phase:
    """A decode token on an SRAM pipeline: depth (L stages) × per-stage time + a hop per chip boundary, plus the
    engine's per-step cost. No batching: ``turns`` sequences take turns, each its own pass."""
    m, eff, pr = s.model, s.efficiency, s.precision
    used = _sram_chips_used(s, context)
    flops = decode_flops(m, 1, context)
    nbytes = m.weight_bytes(pr.weights) + m.kv_bytes(context, pr.kv)
    c, r, sync = _sram_stage(s, flops, nbytes, used)
    hops, step = _sram_hops(s, used), eff.step_us * 1e-6
    # along the critical path: L stages, each max(compute, SRAM) + synchronisation, then the hops
    p = _phase(turns * m.layers * c, turns * m.layers * r, turns * hops, turns * (m.layers * sync + step),
               flops * turns, nbytes * turns)
    p.time_s = turns * (m.layers * (_roof(c, r, eff.sharpness) + sync) + hops + step)
    return p


def sram_prefill(s: Setup, prompt: int, turns: int = 1) -> Phase:
    """A prompt on an SRAM pipeline: the prompt goes through the pipeline as one block, stage by stage. Each
    stage (one layer, on the chips that hold it) computes the block's FLOPs at those chips' FLOP/s — not the sum
    of all chips' FLOP/s: the other stages hold other layers and wait for the block — reads its weights once,
    synchronises once, and hands the block's activations (prompt × hidden) to the next chip over the links."""
    m, eff, pr = s.model, s.efficiency, s.precision
    hw = s.hardware
    used = _sram_chips_used(s, prompt)
    flops = prefill_flops(m, prompt)
    nbytes = m.weight_bytes(pr.weights) + m.kv_bytes(prompt, pr.kv)
    c, r, sync = _sram_stage(s, flops, nbytes, used)      # per stage, for the whole block
    act = prompt * m.hidden * precision_bytes(pr.activations)
    hops = (used - 1) * (hw.interconnect_latency_us * 1e-6 + act / (hw.interconnect_gbps * 1e9 or 1e18))
    step = eff.step_us * 1e-6
    p = _phase(turns * m.layers * c, turns * m.layers * r, turns * hops, turns * (m.layers * sync + step),
               flops * turns, nbytes)
    p.time_s = turns * (m.layers * (_roof(c, r, eff.sharpness) + sync) + hops + step)
    return p


def _predict_sram(s: Setup, batch: int, input_len: int, output_len: int, w: float, notes: list[str]) -> Prediction:
    """SRAM dataflow (Groq): weights and KV laid across chips' SRAM; a token is a pipeline through the chips
    (see :func:`sram_pass`, :func:`sram_prefill`). No batching: sequences take turns."""
    m, hw, eff, pr = s.model, s.hardware, s.efficiency, s.precision
    chips, _, sram_chip, _, _ = _sram_layout(s)
    kv_seq = m.kv_bytes(input_len + output_len, pr.kv)
    resident = 1 if not hw.batching else batch
    need = w + resident * kv_seq
    usable_chip = sram_chip * SRAM_USABLE
    chips_needed = math.ceil(need / usable_chip)
    mem = Memory(w, w / chips, m.kv_bytes_per_token(pr.kv), kv_seq, resident * kv_seq, need / chips,
                 usable_chip, chips_needed <= chips, int(max(chips * usable_chip - w, 0) // kv_seq) if kv_seq else 0,
                 chips_needed)
    pred = Prediction(m.name, hw.key, s.devices, chips, 1, pr, batch, input_len, output_len, eff, mem, notes=notes,
                      engine=eff.engine or s.engine or "")
    if not mem.fits:
        notes.append(f"needs {chips_needed} chips of {hw.sram_mb / max(hw.chips, 1):.0f} MB SRAM; has {chips}")
        return pred
    notes.append(f"SRAM pipeline: the model laid over {chips_needed} of {chips} chips; {m.layers} stages of "
                 f"{chips_needed / m.layers:.2f} chips")
    if not hw.batching and batch > 1:
        notes.append(f"{hw.key} does not batch: {batch} sequences take turns, so TTFT and TPOT grow {batch}×")
    turns = 1 if hw.batching else batch
    pred.prefill = sram_prefill(s, input_len, turns)
    pred.request_s = request_s(s)
    pred.ttft_s = pred.request_s + pred.prefill.time_s
    c0, c1 = input_len + 1, max(input_len + output_len - 1, input_len + 1)
    pred.decode_first, pred.decode_last = sram_pass(s, c0, turns), sram_pass(s, c1, turns)
    pred.tpot_s = _mean_decode(s, batch, c0, c1, pred.decode_first, pred.decode_last) if output_len > 1 \
        else pred.decode_first.time_s
    return pred


def sweep(setup: Setup, batches: list[int], input_lens: list[int], output_lens: list[int]) -> list[Prediction]:
    return [predict(setup, b, i, o) for b in batches for i in input_lens for o in output_lens]
