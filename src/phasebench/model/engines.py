"""The serving engine as a dimension of the phase model: names, aliases, defaults and efficiency profiles.

An :class:`Efficiency` says how far a (device, engine) pair sits below the roofline: the achievable fractions of
peak bandwidth and FLOP/s, a fixed cost per request (tokenisation, scheduling, sampling, HTTP), a fixed cost per
forward pass and per layer, and the latency floor of a tensor-parallel all-reduce. ``data/engines.yaml`` holds
the engines and the priors (each with its sources); ``data/engines_fit.yaml`` holds the values fitted on the
published-measurement corpus (``phasebench.model.fit``; docs/model.md). Lookup order for a pair: a user's
calibration (``model/calibration.py``) > the fitted value for (device class, engine) > the prior.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from .. import yamlio
from .errors import ModelError, unknown
from .hardware import Hardware


@dataclass(frozen=True)
class Efficiency:
    """How far real stacks sit below the roofline: achievable fractions of peak, and fixed costs."""
    memory: float = 0.70            # fraction of peak bandwidth reached by decode GEMVs
    compute: float = 0.60           # fraction of peak FLOP/s reached by long prefills
    layer_overhead_us: float = 4.0  # per layer per forward pass: kernel launches, scheduling
    allreduce_us: float = 15.0      # latency floor of one all-reduce (two per layer under tensor parallel)
    source: str = "default"
    request_ms: float = 0.0         # fixed per request, on TTFT: tokenisation, scheduling, sampling, HTTP
    step_us: float = 0.0            # fixed per forward pass (engine step): scheduler, sampling, host sync
    sharpness: float = 0.0          # roofline knee: time = (c^k + m^k)^(1/k); 0 = the hard max(c, m)
    kv_memory: float = 1.0          # KV-cache reads (attention) reach this fraction of the weights' bandwidth
    gemm_half_rows: float = 0.0     # GEMM rows (tokens per expert) at which matmuls reach half of ``compute``
    link: float = 1.0               # fraction of the interconnect's bandwidth a ring all-reduce reaches
    moe_compute: float = 1.0        # MoE expert GEMMs (grouped, routed) reach this fraction of ``compute``
    engine: str = ""
    device_class: str = ""
    warning: str = ""               # a caveat that travels with these factors (a calibration stored with --force)
    attn_score_bytes: float = 0.0   # bytes moved per attention score an engine materialises (QKᵀ written, softmax
    #                                 read and written, read again for AV); 0: fused (flash) attention keeps them on chip
    wq_compute: float = 1.0         # weight GEMMs over weight-only quantized weights (dequantized in the kernel's
    #                                 main loop) reach this fraction of ``compute``; 1 for weights in the compute precision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryUse:
    """How much of a device's memory an engine's allocator gives the weights and the KV cache.

    ``data/engines.yaml`` holds each engine's policy with its source (``memory_use``); an engine without one
    takes the default, 90% of device memory (vLLM's ``--gpu-memory-utilization``)."""
    fraction: float = 0.90      # of device memory, or (``of_free``) of what is left once the weights are in
    reserve_gib: float = 0.0    # set aside first: the runtime's context, compute buffers
    of_free: bool = False       # the KV cache takes ``fraction`` of the memory free after the weights (TensorRT-LLM)
    small_gib: float = 0.0      # a device with less memory than this (GiB) ...
    small_fraction: float = 0.0  # ... gets this fraction instead (Metal's working-set limit on small Macs)
    queues_over_capacity: bool = True   # a batch whose KV cache outgrows memory runs as many sequences as it holds
    #                                     (continuous batching queues or preempts the rest); False: it fails to
    #                                     allocate (slots or static shapes sized up front: llama.cpp, Neuron)
    source: str = "default: 90% of device memory for weights and KV cache"

    def usable(self, capacity: float, weights: float) -> float:
        """Bytes per device for weights + KV cache, given the device's capacity and the weights it holds."""
        f = self.small_fraction if capacity < self.small_gib * 2**30 else self.fraction
        cap = capacity - self.reserve_gib * 2**30
        if self.of_free:
            return weights + f * (cap - weights) if weights <= cap else cap
        return cap * f


def memory_use(hw: Hardware, engine: str | None = None) -> MemoryUse:
    """``engine``'s memory policy on ``hw`` (default engine when None): its device-class override, else its own,
    else the default (also for an engine the catalog does not know, e.g. a calibration's)."""
    try:
        eng = canonical_engine(engine) if engine else default_engine(hw)
    except ModelError:
        return MemoryUse()
    return _memory_use(eng, device_class(hw))


@cache
def _memory_use(eng: str, cls: str) -> MemoryUse:
    spec = dict(_data()["engines"][eng].get("memory_use") or {})
    by_class = spec.pop("classes", {}) or {}
    spec.update(by_class.get(cls, {}))
    return MemoryUse(**spec) if spec else MemoryUse()


# Priors per device kind (the roofline defaults before any fit); docs/model.md gives the sources.
DEFAULT_EFFICIENCY = {
    "gpu": Efficiency(0.70, 0.60, 4.0, 15.0, "default (gpu)"),
    "tpu": Efficiency(0.70, 0.60, 2.0, 10.0, "default (tpu)"),
    "accelerator": Efficiency(0.60, 0.50, 6.0, 20.0, "default (accelerator)"),
    "sram-dataflow": Efficiency(0.75, 0.60, 0.0, 2.0, "default (sram-dataflow)"),
    "cpu": Efficiency(0.60, 0.50, 20.0, 5.0, "default (cpu)"),
}

# The engines' fixed costs have a hierarchical prior in the fit (model/fit.py): an engine with no fitted value
# takes the fitted typical engine's, except the device vendors' own compilers (no host-driven steps).
POOLED = ("request_ms", "step_us")
UNPOOLED_ENGINES = ("vendor",)
# Prior of an engine's wq_compute: dequantizing weight tiles inside a GEMM's main loop costs issue slots and
# shared-memory traffic the fp16 GEMM does not pay (llama.cpp's own pp 512 tables put Q4_0 and Q8_0 below F16 on the
# same GPU); a weak prior, fitted per engine where the corpus has weight-only rows.
WQ_COMPUTE_PRIOR = 0.8

PARAMS = ("memory", "compute", "layer_overhead_us", "allreduce_us", "request_ms", "step_us", "sharpness", "kv_memory", "gemm_half_rows", "link", "moe_compute")


@cache
def _data() -> dict[str, Any]:
    return yamlio.load_data("engines.yaml")


@cache
def fitted() -> dict[str, Any]:
    """The fitted block (``data/engines_fit.yaml``): parameters, residual ranges per class, corpus coverage."""
    return yamlio.load_data("engines_fit.yaml") or {}


def engines() -> dict[str, dict[str, Any]]:
    return _data()["engines"]


@cache
def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, e in engines().items():
        for a in [name, *e.get("aliases", [])]:
            out[_norm(a)] = name
    return out


def _norm(s: str) -> str:
    return s.strip().lower().replace("_", "-").replace(" ", "-")


@cache
def _squashed_aliases() -> dict[str, str]:
    return {k.replace("-", ""): v for k, v in _aliases().items()}


def canonical_engine(name: str) -> str:
    """The engine's canonical name from any accepted spelling (``tensorrt-llm`` → ``trt-llm``)."""
    al = _aliases()
    squashed = _squashed_aliases()

    def lookup(n: str) -> str | None:
        return al.get(n) or squashed.get(n.replace("-", ""))

    n = _norm(name)
    hit = lookup(n)
    if hit:
        return hit
    # a release or build after the name: ``vllm-0.6.3.post1``, ``tensorrt-llm 0.10.0rc1``, ``llama.cpp-b3000``,
    # ``vllm-0.6.3+cu121``; the bare name's engine, or its major release's where releases are separate engines
    m = re.match(r"^(.*?)[-@]?[vb]?(\d+)(\.\d+)*([.-]?(rc|post|dev|a|b)\d*)*(\+[\w.]+)?$", n)
    if m and m.group(1):
        base = lookup(m.group(1).rstrip("-"))
        if base:
            major = int(m.group(2))
            return lookup(f"{base}-{major}") or _MAJOR_RELEASES.get(base, {}).get(major) or base
    raise unknown("engine", name, engines())


# engines whose early major releases are a separate engine (before TGI 2.0's CUDA graphs: ``tgi-1``)
_MAJOR_RELEASES = {"tgi": {0: "tgi-1", 1: "tgi-1"}}


def device_class(hw: Hardware) -> str:
    """The device class profiles and residual ranges are kept per: vendor family within a kind."""
    if hw.extra.get("device_class"):
        return str(hw.extra["device_class"])
    key, name = hw.key.lower(), hw.name.lower()
    if hw.kind == "gpu":
        return "amd-gpu" if ("amd" in name or key.startswith("mi")) else "nvidia-gpu"
    if hw.kind == "accelerator":
        return "gaudi" if "gaudi" in key else ("inferentia" if ("inferentia" in key or "trainium" in key) else "accelerator")
    if hw.kind == "sram-dataflow":
        return "groq" if "groq" in key else "sram-dataflow"
    return hw.kind


def device_arch(hw: Hardware) -> str:
    """The chip generation (``arch`` in the hardware catalog: ampere, hopper, ada, cdna3, ...; else the key): the
    per-architecture factors on the class's fractions of peak are kept per it."""
    return str(hw.extra.get("arch") or hw.key)


def default_engine(hw: Hardware) -> str:
    """The engine assumed when none is named: the device's own default, else its class's, else its kind's."""
    d = _data()["defaults"]
    return hw.extra.get("default_engine") or d.get(hw.key) or d.get(device_class(hw)) or d[hw.kind]


def profile(hw: Hardware, engine: str | None = None, fit: dict[str, float] | None = None) -> Efficiency:
    """The efficiency profile of ``engine`` (default: the device's default engine) on ``hw``.

    Composed parameter by parameter: the device class's base fractions of peak × the chip generation's factor
    (where the corpus has several generations of a class) × the engine's multipliers, and the engine's fixed costs; each from the corpus fit where it has the parameter, else from the prior.
    ``fit`` replaces the installed fitted parameters (the fitter passes its trial values)."""
    eng = canonical_engine(engine) if engine else default_engine(hw)
    cls = device_class(hw)
    data = _data()
    pri = data.get("priors", {})
    base = {k: getattr(DEFAULT_EFFICIENCY[hw.kind], k) for k in PARAMS}
    for layer in (pri.get(hw.kind), pri.get(cls)):
        base.update({k: v for k, v in (layer or {}).items() if k in PARAMS})
    eng_prior = dict(data["engines"][eng].get("prior", {}))
    for layer in (pri.get(f"{cls}/{eng}"), pri.get(f"{hw.key}/{eng}")):
        eng_prior.update(layer or {})
    if fit is None:
        fit = fitted().get("parameters", {})
    used_fit = False

    def get(key: str, default: float) -> float:
        nonlocal used_fit
        if key in fit:
            used_fit = True
            return float(fit[key])
        return float(default)

    vals: dict[str, float] = {}
    arch = device_arch(hw)
    for k in ("memory", "compute"):
        b = get(f"{k}|{cls}", base[k]) * get(f"{k}#{arch}", 1.0)
        m = get(f"{k}@{eng}", eng_prior.get(f"{k}_mult", 1.0))
        vals[k] = min(b * m, 1.0)
    for k in ("request_ms", "step_us"):
        # an engine the fit has no value for: the fitted typical engine's (the hierarchical prior's centre)
        pooled = k in fit and f"{k}@{eng}" not in fit and eng not in UNPOOLED_ENGINES
        vals[k] = get(k if pooled else f"{k}@{eng}", eng_prior.get(k, base[k]))
    vals["layer_overhead_us"] = get(f"layer_overhead_us|{cls}", eng_prior.get("layer_overhead_us", base["layer_overhead_us"]))
    # the interconnect is the device family's (NVLink, Infinity Fabric, NeuronLink, Gaudi's RoCE ports), so its
    # all-reduce floor and achievable link fraction are kept per device class
    vals["allreduce_us"] = get(f"allreduce_us|{cls}", base["allreduce_us"])
    vals["sharpness"] = get("sharpness", base["sharpness"])
    vals["kv_memory"] = min(get("kv_memory", base["kv_memory"]), 1.0)
    vals["gemm_half_rows"] = get("gemm_half_rows", base["gemm_half_rows"])
    vals["link"] = min(get(f"link|{cls}", base["link"]), 1.0)
    vals["moe_compute"] = min(get("moe_compute", base["moe_compute"]), 1.0)
    # a structural fact of the engine's attention kernels (data/engines.yaml, with its source), not fitted
    vals["attn_score_bytes"] = float(data["engines"][eng].get("attention_score_bytes", 0.0))
    vals["wq_compute"] = min(get(f"wq_compute@{eng}", eng_prior.get("wq_compute", WQ_COMPUTE_PRIOR)), 1.0)
    src = f"fitted on the corpus ({fitted().get('corpus', {}).get('rows', '?')} rows)" if used_fit else "prior"
    return Efficiency(**vals, source=f"{eng} on {cls}: {src}", engine=eng, device_class=cls)


def listing() -> list[dict[str, Any]]:
    """Every engine with its aliases, the corpus rows its profile is fitted on and the device keys, classes or
    kinds it is the default engine for (``phasebench engines list``)."""
    cov = fitted().get("coverage", {})
    default_for: dict[str, list[str]] = {}
    for where, eng in _data()["defaults"].items():
        default_for.setdefault(eng, []).append(where)
    return [{"engine": k, "name": v.get("name", k), "aliases": v.get("aliases", []),
             "corpus_rows": sum(n for c, n in cov.items() if c.split("|")[0] == k),
             "default_for": default_for.get(k, [])} for k, v in engines().items()]


def covered(hw: Hardware, engine: str) -> tuple[bool, str | None]:
    """Whether the corpus has rows for (engine, device class); a note saying what falls outside otherwise."""
    cov = fitted().get("coverage")
    if cov is None:
        return False, "no corpus fit is installed (data/engines_fit.yaml): no range"
    cls = device_class(hw)
    if cov.get(f"{engine}|{cls}"):
        return True, None
    if hw.kind == "sram-dataflow" and cls == "groq":
        return True, None
    have_e = any(k.split("|")[0] == engine for k in cov)
    have_c = any(k.split("|")[1] == cls for k in cov)
    more = ("" if have_e else f", nor of {engine} on any device") + ("" if have_c else f", nor of any engine on {cls}")
    return False, f"outside the corpus: no published measurement of {engine} on {cls}{more}; the range is widened"


__all__ = ["Efficiency", "DEFAULT_EFFICIENCY", "ModelError", "canonical_engine", "default_engine", "profile",
           "device_class", "device_arch", "covered", "listing"]
