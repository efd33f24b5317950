"""Did the server see what was asked? Warnings for the run summary (and so the screen):

- the prompt tokens in the server's usage differ from the asked-for input length by more than two
  (a chat template, a default system prompt, BOS, or a local tokenizer that is not the server's);
- prompt + output longer than the server's context (``max_model_len`` from ``/v1/models``);
- the server's own error text, the first few distinct messages, not only in ``requests.jsonl``.
(Output lengths not reached are already counted by ``metrics``.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from .client.openai import Prompt
from .records import RequestRecord

TOLERANCE = 2  # tokens: BOS/EOS differences are expected


def prompt_length_warning(records: Sequence[RequestRecord], tokenizer: str) -> str | None:
    pairs = [(r.prompt_tokens - r.input_tokens, r.input_tokens) for r in records
             if r.ok and r.prompt_tokens is not None and r.input_tokens is not None]
    off = [p for p in pairs if abs(p[0]) > TOLERANCE]
    if not off:
        return None
    diffs = sorted(d for d, _ in off)
    med = diffs[len(diffs) // 2]
    asked = sorted(a for _, a in off)[len(off) // 2]
    why = ("the local tokenizer disagrees with the server's" if tokenizer.startswith("file:") else
           "a chat template, a system prompt or BOS tokens" if med > 0 else "the server's tokenizer differs")
    return (f"the server counted {med:+d} prompt tokens against the asked-for length in {len(off)} of {len(pairs)} "
            f"requests (e.g. {asked} asked, {asked + med} seen; {why}): prefill metrics use the server's count")


def context_warning(prompts: Sequence[Prompt], context: int | None) -> str | None:
    if not context:
        return None
    over = [p for p in prompts if (p.input_tokens or 0) + p.output_tokens > context]
    if not over:
        return None
    worst = max(over, key=lambda p: (p.input_tokens or 0) + p.output_tokens)
    return (f"{len(over)} of {len(prompts)} prompts ask for more than the server's context of {context} tokens "
            f"(e.g. {worst.input_tokens} in + {worst.output_tokens} out): expect errors or truncated outputs")


def error_messages(records: Sequence[RequestRecord], first: int = 3) -> list[str]:
    msgs = Counter(r.error.strip()[:200] for r in records if r.error and r.error_type != "cancelled")
    return [f"server error ({n}×): {m}" for m, n in list(msgs.items())[:first]]


def server_saw(records: Sequence[RequestRecord], prompts: Sequence[Prompt], tokenizer: str,
               models_answer: Any, model: str) -> list[str]:
    """Every warning above for one run, in that order."""
    from .client.engines import max_model_len

    out = [w for w in (prompt_length_warning(records, tokenizer),
                       context_warning(prompts, max_model_len(models_answer, model))) if w]
    return out + error_messages(records)
