"""The hardware catalog (``data/hardware.yaml``) and the ``local`` record that ``phasebench probe`` writes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .. import yamlio
from ..paths import home
from .errors import ModelError, unknown

KINDS = ("gpu", "tpu", "accelerator", "sram-dataflow", "cpu")


@dataclass(frozen=True)
class Hardware:
    key: str
    name: str
    kind: str
    tflops: dict[str, float]          # dense peak per precision
    memory_gb: float
    memory_gbps: float
    sram_mb: float = 0.0
    interconnect: str = ""
    interconnect_gbps: float = 0.0
    interconnect_latency_us: float = 0.0
    tdp_w: float | None = None
    price_per_hour: float | None = None
    price_source: str = ""
    source: str = ""
    date: str = ""
    batching: bool = True
    chips: int = 1
    chip: str = ""
    host_memory_gb: float = 0.0
    host_memory_gbps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        """Device memory in bytes. Vendors' "80 GB" of HBM or GDDR is 80 GiB (DRAM capacities are binary:
        nvidia-smi prints 81920 MiB for an A100 80GB), so the catalog's ``memory_gb`` is read as GiB."""
        return self.memory_gb * 2**30

    @property
    def bandwidth(self) -> float:
        """Bytes/s."""
        return self.memory_gbps * 1e9

    def peak_flops(self, precision: str) -> float:
        """FLOP/s at ``precision``; fp16 and bf16 stand in for each other; int4 compute is int8 where no int4."""
        t = self.tflops
        for p in {"bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16"), "int4": ("int4", "int8")}.get(precision, (precision,)):
            if t.get(p):
                return t[p] * 1e12
        raise ModelError(
            f"{self.key} has no {precision} compute (it supports {', '.join(k for k, v in t.items() if v)}); "
            f"use weight-only quantization (--weights {precision} --activations bf16) or another precision"
        )

    def peak_label(self, precision: str) -> str:
        """Which peak an MFU at ``precision`` is measured against: the precision actually used and its source."""
        t = self.tflops
        used = next((p for p in {"bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16"), "int4": ("int4", "int8")}
                     .get(precision, (precision,)) if t.get(p)), precision)
        src = (self.extra.get("peak_sources") or {}).get(used) or f"{self.key} datasheet"
        label = f"{used} peak {t.get(used, 0):,.4g} TFLOP/s ({src})"
        if used != precision:
            label += f", standing in for {precision}"
        return label

    def ridge_point(self, precision: str = "fp16") -> float:
        """FLOP per byte where compute and memory time are equal."""
        return self.peak_flops(precision) / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d | self.extra


def _from_record(key: str, rec: dict[str, Any]) -> Hardware:
    known = set(Hardware.__dataclass_fields__) - {"key", "extra"}
    main = {k: v for k, v in rec.items() if k in known}
    extra = {k: v for k, v in rec.items() if k not in known}
    if main.get("kind") not in KINDS:
        raise ModelError(f"hardware {key}: kind must be one of {', '.join(KINDS)}")
    for req in ("name", "tflops", "memory_gb", "memory_gbps"):
        if req not in main:
            raise ModelError(f"hardware record {key} lacks {req}")
    return Hardware(key=key, extra=extra, **main)


def norm_name(name: str) -> str:
    """A hardware name as looked up: case-insensitive, ``_`` and spaces read as ``-``."""
    return "-".join(str(name).strip().lower().replace("_", "-").split())


def alias_map(records: dict[str, Hardware]) -> dict[str, str]:
    """Normalised alias -> canonical key for ``records`` (their optional ``aliases: [...]``).

    Fails loudly (ModelError) when two records claim the same alias, when an alias is (after normalising)
    another record's key, or when two keys normalise alike: a spelling must mean one device."""
    keys: dict[str, str] = {}
    for k in records:
        n = norm_name(k)
        if n in keys and keys[n] != k:
            raise ModelError(f"hardware records {keys[n]!r} and {k!r} differ only in case, '_' or spaces")
        keys[n] = k
    out: dict[str, str] = {}
    for k, h in records.items():
        al = h.extra.get("aliases") or []
        if isinstance(al, str) or not isinstance(al, (list, tuple)):
            raise ModelError(f"hardware {k}: aliases must be a list of names")
        for a in al:
            if not isinstance(a, str):
                raise ModelError(f"hardware {k}: alias {a!r} must be a string (quote it in YAML: \"{a}\")")
            n = norm_name(a)
            if not n:
                raise ModelError(f"hardware {k}: empty alias")
            if n in keys and keys[n] != k:
                raise ModelError(f"hardware {k}: alias {a!r} is the key of another record ({keys[n]})")
            if n in out and out[n] != k:
                raise ModelError(f"hardware alias {a!r} is claimed by both {out[n]} and {k}")
            if n != norm_name(k):
                out[n] = k
    return out


@cache
def _builtin() -> dict[str, Hardware]:
    raw = yamlio.load_data("hardware.yaml")
    recs = {k: _from_record(k, v) for k, v in raw.items()}
    alias_map(recs)        # duplicate or clashing aliases are an error at load time
    return recs


@cache
def _builtin_aliases() -> dict[str, str]:
    return alias_map(_builtin())


def local_path() -> Path:
    return home() / "hardware" / "local.yaml"


def catalog() -> dict[str, Hardware]:
    """Built-in records plus the user's (``local`` from ``probe``, or any ``<name>.yaml`` put there)."""
    out = dict(_builtin())
    d = local_path().parent
    if d.is_dir():
        from yaml import YAMLError

        for p in sorted(d.glob("*.yaml")):
            try:
                out[p.stem] = _from_record(p.stem, yamlio.safe_load(p.read_text()))
            except (ModelError, TypeError, YAMLError) as e:
                raise ModelError(f"bad hardware record {p}: {e}") from None
    return out


def aliases(cat: dict[str, Hardware] | None = None) -> dict[str, str]:
    """Normalised alias -> key over the catalog: the built-in records' aliases (checked at load) plus those of
    user records (``$PHASEBENCH_HOME/hardware/*.yaml``) that no built-in name already takes."""
    cat = catalog() if cat is None else cat
    out = dict(_builtin_aliases())
    builtin = _builtin()
    user = {k: h for k, h in cat.items() if builtin.get(k) is not h}
    if user:
        # a user record's alias that another name already takes is left out, not an error: one odd file in
        # $PHASEBENCH_HOME must not stop every other lookup (its own key still finds it)
        taken = {norm_name(k) for k in cat}
        for k, h in user.items():
            try:
                mine = alias_map({k: h})
            except ModelError:
                continue
            for a, key in mine.items():
                if a not in taken and a not in out:
                    out[a] = key
    return out


def resolve_key(ref: str, cat: dict[str, Hardware] | None = None) -> str | None:
    """The catalog key ``ref`` names (a key or an alias, any case, ``_``/space for ``-``), or None."""
    cat = catalog() if cat is None else cat
    if ref in cat:
        return ref
    n = norm_name(ref)
    builtin = _builtin()
    # a user key that only normalises like a built-in one (H100_SXM.yaml) does not take the built-in's spellings
    by_norm = {norm_name(k): k for k in cat if k not in builtin} | {norm_name(k): k for k in cat if k in builtin}
    if n in by_norm:
        return by_norm[n]
    al = aliases(cat)
    if n in al:
        return al[n]
    # hyphens left out ("h100sxm", "rtx4090"): only where that spelling means one record
    flat = {}
    for name, k in [*by_norm.items(), *al.items()]:
        flat.setdefault(name.replace("-", ""), set()).add(k)
    hit = flat.get(n.replace("-", ""))
    return next(iter(hit)) if hit and len(hit) == 1 else None


def load_hardware(ref: str) -> Hardware:
    """A catalog record by key or alias (returned under its canonical key), or a ``.yaml`` record file."""
    p = Path(ref).expanduser()
    if p.suffix in (".yaml", ".yml") and p.exists():
        return _from_record(p.stem, yamlio.safe_load(p.read_text()))
    cat = catalog()
    key = resolve_key(ref, cat)
    if key is not None:
        return cat[key]
    if norm_name(ref) == "local":
        raise ModelError("no 'local' hardware record yet: run `phasebench probe` first")
    raise unknown("hardware", ref, cat, aliases(cat))


def local_record(probe: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """The ``local`` record from a probe result: measured bandwidth and matmul FLOP/s are the 'peaks'."""
    mem = env.get("memory_gib") or 0     # the catalog's memory_gb is read as GiB (Hardware.memory_bytes)
    tfl = {"fp32": round(probe["matmul_gflops_fp32"] / 1e3, 4)}
    peaks = {"fp32": "fp32 matmul (numpy BLAS), measured by `phasebench probe`"}
    bf16 = probe.get("matmul_gflops_bf16") or probe.get("torch_cpu_bfloat16_gflops")
    if bf16:
        tfl["bf16"] = round(bf16 / 1e3, 4)
        peaks["bf16"] = probe.get("bf16_source") or "torch CPU bf16 matmul, measured"
    else:
        peaks["bf16"] = "not probed: " + (probe.get("bf16_note") or "no bf16 matmul available")
    return {
        "name": f"this machine ({env.get('cpu') or 'unknown CPU'}, {probe['threads']} threads)",
        "kind": "cpu",
        "tflops": tfl,
        "memory_gb": round(mem, 1),
        "memory_gbps": round(probe["bandwidth_gbps"], 2),
        "sram_mb": 0,
        "tdp_w": None,
        "price_per_hour": None,
        "price_source": "not known for this machine",
        "source": "measured by `phasebench probe`",
        "date": probe.get("date", ""),
        "peak_sources": peaks,
        "probe": probe,
    }


def local_gpu_record(probe: dict[str, Any]) -> dict[str, Any] | None:
    """A ``local-gpu`` record when torch saw a GPU: measured fp16/bf16 matmul and device-to-device copy."""
    if not probe.get("gpu_name"):
        return None
    tfl = {"fp16": round(probe.get("torch_cuda_float16_gflops", 0) / 1e3, 1),
           "bf16": round(probe.get("torch_cuda_bfloat16_gflops", 0) / 1e3, 1)}
    return {"name": f"this machine's GPU ({probe['gpu_name']})", "kind": "gpu", "tflops": tfl,
            "memory_gb": round(probe["gpu_memory_gb"], 1), "memory_gbps": round(probe["gpu_copy_gbps"], 1),
            "source": "measured by `phasebench probe` (torch)", "date": probe.get("date", "")}


def write_record(name: str, record: dict[str, Any]) -> Path:
    """Write a user hardware record to ``$PHASEBENCH_HOME/hardware/<name>.yaml`` (atomically)."""
    p = local_path().with_name(f"{name}.yaml")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    import yaml

    tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    tmp.replace(p)
    return p


def nearest(hw: Hardware, n: int = 3) -> list[tuple[Hardware, float]]:
    """Catalog devices closest to ``hw`` in (log bandwidth, log fp32-or-best FLOP/s)."""
    def point(h: Hardware) -> tuple[float, float]:
        f = h.tflops.get("fp32") or max(h.tflops.values())
        return math.log10(h.memory_gbps), math.log10(f)
    a = point(hw)
    scored = [(h, math.dist(a, point(h))) for k, h in _builtin().items() if k != hw.key]
    return sorted(scored, key=lambda x: x[1])[:n]
