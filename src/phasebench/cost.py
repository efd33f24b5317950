"""Cost and energy of a run, measured or simulated: one model for both (docs/simulation.md, "Cost and energy").

Cost. The bill is price per device-hour × devices for the run's duration. It is stated once, blended:

    $/1M tokens = price × devices / 3600 ÷ (input + output tokens/s) × 10⁶

and split between input and output tokens **by phase time**, so that the two parts add up to the bill:
input tokens pay for the share of request time spent in prefill (mean TTFT from the send), output tokens for
the share spent in decode ((mean output tokens − 1) × mean TPOT). Then

    $/1M input  = bill × share_prefill ÷ input tokens × 10⁶,   $/1M output = bill × share_decode ÷ output tokens × 10⁶

and input tokens × $/1M input + output tokens × $/1M output = the bill (no double counting). The
"all-in" $/1M output tokens (the whole bill over output tokens only, the figure serving papers quote) is kept
as ``usd_per_1m_output_tokens_all_in``; it must not be added to an input figure. At the SLO the same bill is
divided by the tokens of the requests that met every SLO, so a configuration that is cheap because it misses
its latency target does not look cheap.

Energy. power = devices × (idle + (TDP − idle) × utilisation), idle = ``IDLE_FRACTION`` × TDP unless the
hardware record gives ``idle_w``. Utilisation is, in this order: the larger of the run's MBU and MFU (its
roofline block); else the busy fraction, min(1, mean requests in flight by Little's law) — an upper bound
on the fraction of time the device had work, computed from the summary alike for measured and simulated runs;
else 1 (full TDP, an upper bound). A measured power given by the caller replaces the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .results import Summary, as_summary

IDLE_FRACTION = 0.3   # an idle, powered accelerator draws roughly a quarter to a third of its TDP


@dataclass(frozen=True)
class Bill:
    """Dollars per second of a deployment and how they split between the phases."""
    usd_per_s: float
    prefill_share: float        # fraction of the bill the input tokens pay (phase time)

    def split(self, in_tps: float, out_tps: float) -> dict[str, float | None]:
        total = in_tps + out_tps
        return {
            "usd_per_1m_tokens": self.usd_per_s / total * 1e6 if total > 0 else None,
            "usd_per_1m_input_tokens": self.usd_per_s * self.prefill_share / in_tps * 1e6 if in_tps > 0 else None,
            "usd_per_1m_output_tokens": self.usd_per_s * (1 - self.prefill_share) / out_tps * 1e6 if out_tps > 0 else None,
            "usd_per_1m_output_tokens_all_in": self.usd_per_s / out_tps * 1e6 if out_tps > 0 else None,
        }


def prefill_share(summary: dict[str, Any] | Summary) -> float:
    """Share of request time in prefill: mean TTFT (from the send) ÷ (that + (mean output − 1) × mean TPOT)."""
    s = as_summary(summary)
    m = s.phasebench.metrics
    ttft = m.ttft_sent_ms.mean or s.mean_ttft_ms or 0.0
    tpot = m.tpot_ms.mean or s.mean_tpot_ms or 0.0
    n_out = m.output_tokens.mean or 1.0
    decode = tpot * max(n_out - 1, 0.0)
    return ttft / (ttft + decode) if ttft + decode > 0 else 0.5


def utilisation(summary: dict[str, Any] | Summary) -> tuple[float | None, str]:
    """(utilisation in [0, 1] or None, what it is): MBU/MFU, else the busy fraction, else unknown."""
    from .metrics import mean_in_flight

    s = as_summary(summary)
    roof = s.phasebench.roofline
    util = max([u for u in ((roof.mbu, roof.mfu) if roof else ()) if u is not None], default=None)
    if util is not None:
        return min(max(util, 0.0), 1.0), "max(MBU, MFU)"
    busy = mean_in_flight(s.model_dump(include={"request_throughput", "mean_e2el_ms"}))
    if busy is not None:
        return min(busy, 1.0), "busy fraction (min(1, mean requests in flight))"
    return None, "unknown (full TDP, an upper bound)"


def power_w(tdp_w: float, devices: int, util: float | None, idle_w: float | None = None) -> float:
    """devices × (idle + (TDP − idle) × utilisation); utilisation unknown = 1."""
    idle = idle_w if idle_w is not None else IDLE_FRACTION * tdp_w
    u = 1.0 if util is None else util
    return devices * (idle + (tdp_w - idle) * u)


def cost_block(hardware: str | None, devices: int, summary: dict[str, Any] | Summary,
               price_per_hour: float | None = None, power_w_measured: float | None = None) -> dict[str, Any] | None:
    """The ``cost`` block of a summary (the dict so far, or a typed ``Summary``); None when the hardware is
    unknown."""
    from .model.errors import ModelError
    from .model.hardware import load_hardware

    if not hardware:
        return None
    try:
        hw = load_hardware(hardware)
    except ModelError:
        return None
    price = price_per_hour if price_per_hour is not None else hw.price_per_hour
    s = as_summary(summary)
    out_tps = s.output_throughput or 0.0
    in_tps = max((s.total_token_throughput or 0.0) - out_tps, 0.0)
    pb, slo = s.phasebench, s.phasebench.slo
    block: dict[str, Any] = {"hardware": hw.key, "devices": devices, "price_per_hour": price,
                             "price_source": "given" if price_per_hour is not None else (hw.price_source or None)}
    if price is not None and out_tps > 0:
        bill = Bill(price * devices / 3600.0, prefill_share(s))
        block.update(bill.split(in_tps, out_tps))
        block["prefill_share_of_bill"] = bill.prefill_share
        block["output_tokens_per_usd"] = out_tps / bill.usd_per_s
        good = slo.goodput if slo else None
        mean_out = pb.metrics.output_tokens.mean
        mean_in = pb.metrics.input_tokens.mean or 0.0
        if good and mean_out:
            at = bill.split(good * mean_in, good * mean_out)
            block["usd_per_1m_tokens_at_slo"] = at["usd_per_1m_tokens"]
            block["usd_per_1m_output_tokens_at_slo"] = at["usd_per_1m_output_tokens"]
        block["slo"] = slo.slo.model_dump(exclude_unset=True) if slo and slo.slo else None
    elif price is None:
        block["note"] = f"no price for {hw.key} in the catalog: pass --price-per-hour"
    util, util_source = utilisation(s)
    watts = power_w_measured
    if watts is None and hw.tdp_w:
        idle = hw.extra.get("idle_w") if isinstance(hw.extra, dict) else None
        watts = power_w(hw.tdp_w, devices, util, idle)
        block["power_source"] = f"idle + (TDP − idle) × utilisation; utilisation = {util_source}"
        block["utilisation"] = util
    elif watts is not None:
        block["power_source"] = "measured"
    if watts and out_tps:
        block["watts"] = watts
        block["output_tokens_per_joule"] = out_tps / watts
        block["tokens_per_joule"] = (out_tps + in_tps) / watts
        block["joules_per_output_token"] = watts / out_tps
    return block
