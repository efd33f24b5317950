"""MBU and MFU of a measured run, and the phase model's prediction beside the measurement.

- Decode MBU (Databricks): bytes one decode step reads (weights touched + every in-flight sequence's KV cache)
  ÷ median TPOT, as a fraction of the device's peak bandwidth.
- Prefill MFU: prefill FLOPs of the median prompt ÷ median TTFT from send, as a fraction of peak FLOP/s.
The mean batch during the run comes from Little's law: requests/s × mean E2E. docs/model.md has the details.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..metrics import mean_in_flight
from .arch import ModelArch, load_model
from .calibration import efficiency_for
from .engines import canonical_engine
from .errors import ModelError
from .hardware import Hardware, load_hardware
from .phases import (
    Precision,
    Setup,
    _moe_weight_bytes,
    decode_flops,
    predict,
    prefill_flops,
    resolve_precision,
)

MBU_DEFINITION = ("decode MBU = (weights touched at the mean batch + mean batch × KV of the mean context "
                  "(input + output/2)) ÷ median TPOT ÷ peak bandwidth")
MFU_DEFINITION = "prefill MFU = prefill FLOPs of the mean prompt ÷ median TTFT from send ÷ peak FLOP/s (peak named)"


def _step_name(manifest: dict[str, Any]) -> str | None:
    out = (manifest.get("spec") or {}).get("out")
    return Path(str(out)).name if out else None


def run_model_ref(manifest: dict[str, Any]) -> str | None:
    spec = manifest.get("spec") or {}
    if spec.get("model_spec"):
        return str(spec["model_spec"])
    mf = manifest.get("model_file") or {}
    return mf.get("path")


def resolve(manifest: dict[str, Any]) -> tuple[ModelArch, Hardware, str] | None:
    """The run's model, hardware and weight precision, or None when the run does not name a model."""
    ref = run_model_ref(manifest)
    if not ref:
        return None
    spec = manifest.get("spec") or {}
    model = load_model(ref)
    if not Path(ref).exists() and ref.endswith(".gguf"):
        raise ModelError(f"the run's model file is gone: {ref}")
    hw = load_hardware(spec.get("hardware") or "local")
    weights = spec.get("weight_precision") or ("native" if model.weight_bytes_actual else "fp16")
    return model, hw, weights


def ensure_local_hardware(quick: bool = True) -> Hardware:
    """The ``local`` record, probing this machine first if there is none yet."""
    from .hardware import catalog

    if "local" not in catalog():
        import sys

        from .probe import probe_and_record

        sys.stderr.write("no 'local' hardware record yet: probing this machine's bandwidth and FLOP/s first "
                         "(phasebench probe)\n")
        probe_and_record(quick=quick)
    return load_hardware("local")


def _metric(summary: dict[str, Any], key: str, stat: str) -> float | None:
    return ((summary.get("phasebench") or {}).get("metrics", {}).get(key) or {}).get(stat)


def phase_work(model: ModelArch, pr: Precision, summary: dict[str, Any]) -> dict[str, Any]:
    """What a measured run's phases had to read and compute, from its summary.

    Always: mean batch (Little's law), mean input/output length, median TPOT and TTFT from send. When the run
    decoded (more than one output token): bytes and FLOPs of one decode step at the mean batch and mean decode
    context. When it prefilled: FLOPs and bytes of prefilling the mean prompt."""
    w = model.weight_bytes(pr.weights)
    n_in = _metric(summary, "input_tokens", "mean") or 0
    n_out = _metric(summary, "output_tokens", "mean") or 0
    batch = max(mean_in_flight(summary) or 0.0, 1.0)
    work: dict[str, Any] = {"mean_batch": batch, "n_in": n_in, "n_out": n_out,
                            "tpot_ms": _metric(summary, "tpot_ms", "p50"),
                            "ttft_sent_ms": _metric(summary, "ttft_sent_ms", "p50")}
    if work["tpot_ms"] and n_out > 1:
        ctx = n_in + n_out / 2
        work["decode_bytes_per_step"] = _moe_weight_bytes(model, w, batch) + batch * model.kv_bytes(ctx, pr.kv)
        work["decode_flops_per_step"] = decode_flops(model, batch, ctx)
    if work["ttft_sent_ms"] and n_in:
        work["prefill_flops"] = prefill_flops(model, n_in)
        work["prefill_bytes"] = w + model.kv_bytes(n_in, pr.kv)
    return work


def utilization(manifest: dict[str, Any], summary: dict[str, Any], calibration: str | None = None) -> dict[str, Any] | None:
    """The ``roofline`` block of a run's summary; None when the run names no model."""
    got = resolve(manifest)
    if got is None:
        return None
    model, hw, weights = got
    pr, note = resolve_precision(hw, weights)
    engine = calibration or engine_name(manifest)
    eng_note = None
    if engine and calibration is None:
        try:
            canonical_engine(engine)
        except ModelError:
            eng_note = f"engine {engine!r} has no efficiency profile: the device's default engine's is used"
            engine = None
    eff, eff_note = efficiency_for(hw, engine)
    work = phase_work(model, pr, summary)
    tpot, ttft_sent, n_in, n_out, batch = (work[k] for k in ("tpot_ms", "ttft_sent_ms", "n_in", "n_out", "mean_batch"))
    out: dict[str, Any] = {
        "model": model.name, "hardware": hw.key, "precision": pr.label(), "mean_batch": batch,
        "weight_bytes": model.weight_bytes(pr.weights), "kv_bytes_per_token": model.kv_bytes_per_token(pr.kv),
        "peak_bandwidth_gbps": hw.memory_gbps, "peak_tflops": hw.peak_flops(pr.activations) / 1e12,
        "peak_flops_label": hw.peak_label(pr.activations),
        "step": _step_name(manifest),
        "definitions": {"mbu": MBU_DEFINITION, "mfu": MFU_DEFINITION},
        "notes": [n for n in (note, eng_note, eff_note, eff.warning) if n],
    }
    if "decode_bytes_per_step" in work:
        step_bytes, step_flops = work["decode_bytes_per_step"], work["decode_flops_per_step"]
        achieved = step_bytes / (tpot / 1e3)
        out |= {"decode_bytes_per_step": step_bytes, "decode_flops_per_step": step_flops,
                "decode_achieved_gbps": achieved / 1e9, "decode_achieved_tflops": step_flops / (tpot / 1e3) / 1e12,
                "mbu": achieved / hw.bandwidth}
    if "prefill_flops" in work:
        achieved_f = work["prefill_flops"] / (ttft_sent / 1e3)
        out |= {"prefill_flops": work["prefill_flops"], "prefill_bytes": work["prefill_bytes"],
                "prefill_achieved_tflops": achieved_f / 1e12,
                "mfu": achieved_f / hw.peak_flops(pr.activations)}
    if n_in >= 1 and n_out >= 1:
        p = predict(Setup(model, hw, precision=pr, efficiency=eff), max(round(batch), 1), round(n_in), round(n_out))
        out["predicted"] = {"ttft_ms": p.ttft_s and p.ttft_s * 1e3, "tpot_ms": p.tpot_s and p.tpot_s * 1e3,
                            "fits": p.fits, "efficiency": eff.to_dict(),
                            "prefill_bound": p.prefill and p.prefill.bound,
                            "decode_bound": p.decode_last and p.decode_last.bound}
        out["measured"] = {"ttft_ms": _metric(summary, "ttft_ms", "p50"), "ttft_sent_ms": ttft_sent, "tpot_ms": tpot}
    return out


def engine_name(manifest: dict[str, Any]) -> str | None:
    """A short name of the serving engine: the embedded engine's, or what /v1/models says owns the model."""
    eng = manifest.get("engine") or {}
    if eng.get("name"):
        return str(eng["name"])
    tgt = manifest.get("target") or {}
    return tgt.get("engine") or tgt.get("owned_by")
