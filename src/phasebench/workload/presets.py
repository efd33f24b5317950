"""Use-case presets: input/output length distributions that match what each use case stresses."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import LengthDist, SpecError


@dataclass(frozen=True)
class Preset:
    name: str
    input_tokens: LengthDist
    output_tokens: LengthDist
    stresses: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("chat", LengthDist(mean=256, stddev=64), LengthDist(mean=128, stddev=32), "TTFT and TPOT, short in"),
        Preset("code", LengthDist(mean=512, stddev=128), LengthDist(mean=512, stddev=128), "decode (long out)"),
        Preset("rag", LengthDist(mean=2048, stddev=256), LengthDist(mean=128, stddev=32), "prefill (long in)"),
        Preset("summarize", LengthDist(mean=1536, stddev=256), LengthDist(mean=256, stddev=64), "both phases"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
