"""Workloads: what to send. Synthetic prompts of exact length, prompt files, use-case presets."""

from __future__ import annotations

from ..client.openai import Prompt
from ..spec import RunSpec
from .files import dataset_prompts, load_dataset
from .presets import PRESETS, get_preset
from .synthetic import synthetic_prompts
from .tokens import ApproxTokenizer, HFTokenizer, ServerTokenizer, Tokenizer

__all__ = [
    "Prompt",
    "build_prompts",
    "load_dataset",
    "PRESETS",
    "get_preset",
    "Tokenizer",
    "ApproxTokenizer",
    "HFTokenizer",
    "ServerTokenizer",
]


async def build_prompts(spec: RunSpec, tok: Tokenizer, n: int, seed_offset: int = 0) -> list[Prompt]:
    """``n`` prompts for the spec: from its dataset, else synthetic at the preset's or the spec's lengths."""
    if spec.dataset is not None:
        return await dataset_prompts(spec.dataset, n, tok, spec.output_tokens.mean)
    ins, outs = spec.input_tokens, spec.output_tokens
    if spec.preset:
        p = get_preset(spec.preset)
        ins, outs = p.input_tokens, p.output_tokens
    return await synthetic_prompts(tok, n, ins, outs, spec.seed + seed_offset, nonce=spec.nonce or "",
                                   prefix_tokens=spec.prefix_tokens, prefix_groups=spec.prefix_groups)
