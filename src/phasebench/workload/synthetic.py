"""Synthetic prompts of exact token length.

Text is drawn from a fixed English word list with a seeded generator, so every prompt of a run differs and
nothing is downloaded. The same seed gives the same prompts, so a second run of the same command would be
served from the engine's prefix cache: unless a seed is given, each run draws a fresh ``nonce`` (recorded in
the manifest's spec) and every prompt starts with a marker derived from it and the prompt's index. Shared-prefix workloads (``prefix_tokens``,
``prefix_groups``) measure caching on purpose: prompt i starts with prefix i mod K of exactly N tokens. With an exact tokenizer, each prompt is cut to
the wanted number of tokens and checked by re-encoding (decode/encode does not always round-trip, so it
retries a few times and records the length it really got).
"""

from __future__ import annotations

import numpy as np

from ..client.openai import Prompt
from ..spec import LengthDist
from .tokens import Tokenizer

WORDS = (
    "the of and to in is was that for on as with by he at from his an were are which this be or has had not "
    "but one have first new after also their its who two they been year time her would she into more all "
    "other most some city over many state between during under world only made when about later than may "
    "work both part people known well then such these while where through since school where early three "
    "united film team season high american there series its including name house number several music used "
    "government include national university war however second area because around each called family "
    "became north south river album public following game until form began held life left like group "
    "local long around water energy light model system memory bandwidth compute token layer cache decode "
    "prefill server request batch latency throughput engine kernel matrix vector weight value query key "
    "attention network graph data stream signal market history science nature garden mountain island ocean "
    "forest village bridge castle library museum station harbor valley desert planet star moon sun cloud "
    "rain wind snow summer winter spring autumn morning evening night day week month story book letter word "
    "song voice picture window door table chair road street market price cost paper stone metal glass"
).split()


def random_text(rng: np.random.Generator, n_words: int) -> str:
    idx = rng.integers(0, len(WORDS), size=n_words)
    return " ".join(WORDS[i] for i in idx)


def sample_lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> list[int]:
    if dist.stddev <= 0:
        return [dist.mean] * n
    vals = rng.normal(dist.mean, dist.stddev, size=n)
    return [max(1, int(round(v))) for v in vals]


def new_nonce() -> str:
    """A short per-run marker for the start of every prompt (a few tokens in any tokenizer)."""
    import secrets

    return f"[{secrets.token_hex(3)}]"


def prompt_head(nonce: str, key: object) -> str:
    """The marker at the start of one prompt: derived from the run's nonce and the prompt's index, so prompts
    share no leading tokens with each other either (a common marker would look like a small cache hit)."""
    if not nonce:
        return ""
    import hashlib

    return "[" + hashlib.sha256(f"{nonce}/{key}".encode()).hexdigest()[:6] + "]"


async def exact_prompt(tok: Tokenizer, rng: np.random.Generator, n_tokens: int, head: str = "") -> tuple[str, int]:
    """A prompt of ``n_tokens`` tokens by ``tok`` that starts with ``head``; returns (text, tokens it has)."""
    text = (head + " " if head else "") + random_text(rng, max(1, int(n_tokens * 1.1) + 4))
    ids = await tok.encode(text)
    while len(ids) < n_tokens:
        text += " " + random_text(rng, n_tokens - len(ids) + 4)
        ids = await tok.encode(text)
    best_text, best_n = text, len(ids)
    cut = n_tokens
    for _ in range(6):
        cand = await tok.decode(ids[:cut])
        got = len(await tok.encode(cand))
        if abs(got - n_tokens) < abs(best_n - n_tokens):
            best_text, best_n = cand, got
        if got == n_tokens:
            break
        cut += n_tokens - got
        if cut < 1 or cut > len(ids):
            break
    return best_text, best_n


async def synthetic_prompts(
    tok: Tokenizer, n: int, input_len: LengthDist, output_len: LengthDist, seed: int,
    nonce: str = "", prefix_tokens: int = 0, prefix_groups: int = 1,
) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    ins = sample_lengths(input_len, n, rng)
    outs = sample_lengths(output_len, n, rng)
    prefixes: list[str] = []
    if prefix_tokens:
        prng = np.random.default_rng(seed + 7_919)
        for _ in range(max(1, prefix_groups)):
            text, _ = await exact_prompt(tok, prng, prefix_tokens, prompt_head(nonce, f"{seed}/group{len(prefixes)}"))
            prefixes.append(text)
    prompts = []
    for i, (i_len, o_len) in enumerate(zip(ins, outs)):
        if prefixes:
            head = prefixes[i % len(prefixes)]
            text, got = await exact_prompt(tok, rng, max(i_len, prefix_tokens + 1), head)
        else:
            text, got = await exact_prompt(tok, rng, i_len, prompt_head(nonce, f"{seed}/{i}"))
        prompts.append(Prompt(text=text, input_tokens=got if tok.exact else None, output_tokens=o_len))
    return prompts
