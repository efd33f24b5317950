"""Cost and energy of a run, measured or simulated.

- $/1M output tokens = price per device-hour × devices ÷ 3600 ÷ output tokens/s × 10⁶ (DESIGN's formula);
  the same with input tokens, and per 1M total tokens; tokens per dollar.
- At the SLO: the same price divided by the tokens/s of the requests that met every SLO (goodput × mean
  output length), so a cheap configuration that misses its latency targets does not look cheap.
- Energy: power = TDP × devices × max(utilisation, 0.3) (a busy accelerator rarely draws less than ~30% of
  TDP; utilisation = the run's MBU or MFU, whichever is larger, when known, else 1 — an upper bound), or a
  measured power given by the caller; tokens per joule = output tokens/s ÷ watts.
"""

from __future__ import annotations

from typing import Any

IDLE_FLOOR = 0.3


def cost_block(hardware: str | None, devices: int, summary: dict[str, Any], price_per_hour: float | None = None,
               power_w: float | None = None) -> dict[str, Any] | None:
    """The ``cost`` block of a summary; None when the hardware (and so the price) is unknown."""
    from .model.errors import ModelError
    from .model.hardware import load_hardware

    if not hardware:
        return None
    try:
        hw = load_hardware(hardware)
    except ModelError:
        return None
    price = price_per_hour if price_per_hour is not None else hw.price_per_hour
    out_tps = summary.get("output_throughput") or 0.0
    in_tps = (summary.get("total_token_throughput") or 0.0) - out_tps
    pb = summary.get("phasebench") or {}
    roof = pb.get("roofline") or {}
    util = max([u for u in (roof.get("mbu"), roof.get("mfu")) if u is not None], default=None)
    block: dict[str, Any] = {"hardware": hw.key, "devices": devices, "price_per_hour": price,
                             "price_source": "given" if price_per_hour is not None else hw.price_source}
    if price is not None and out_tps > 0:
        per_s = price * devices / 3600.0
        block["usd_per_1m_output_tokens"] = per_s / out_tps * 1e6
        block["usd_per_1m_input_tokens"] = per_s / in_tps * 1e6 if in_tps > 0 else None
        block["usd_per_1m_total_tokens"] = per_s / (out_tps + in_tps) * 1e6
        block["output_tokens_per_usd"] = out_tps / per_s
        good = (pb.get("slo") or {}).get("goodput")
        mean_out = ((pb.get("metrics") or {}).get("output_tokens") or {}).get("mean")
        if good and mean_out:
            block["usd_per_1m_output_tokens_at_slo"] = per_s / (good * mean_out) * 1e6
        block["slo"] = (pb.get("slo") or {}).get("slo")
    elif price is None:
        block["note"] = f"no price for {hw.key}: pass --price-per-hour"
    watts = power_w
    if watts is None and hw.tdp_w:
        watts = hw.tdp_w * devices * max(util if util is not None else 1.0, IDLE_FLOOR)
        block["power_source"] = f"TDP × {'utilisation' if util is not None else '1 (utilisation unknown)'}"
    elif watts is not None:
        block["power_source"] = "measured"
    if watts and out_tps:
        block["watts"] = watts
        block["output_tokens_per_joule"] = out_tps / watts
    return block
