"""Prompt files given by path: JSON Lines and ShareGPT. Nothing is downloaded.

JSONL: one object per line with ``prompt`` (text) or ``messages`` (chat), and optionally ``output_tokens``
(or ``max_tokens``). ShareGPT: a JSON list of ``{"conversations": [{"from": "human", "value": ...},
{"from": "gpt", "value": ...}]}``; the first human turn is the prompt, the reply's length sets the output
length when a tokenizer is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..client.openai import Prompt
from ..spec import SpecError
from .tokens import Tokenizer


def load_dataset(path: Path) -> list[dict[str, Any]]:
    """Raw rows from a .jsonl or ShareGPT .json file, with a clear error for each way a file can be bad."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"dataset not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read dataset {path}: {e.strerror}") from None
    if not raw.strip():
        raise SpecError(f"dataset {path} is empty")
    stripped = raw.lstrip()
    rows: list[dict[str, Any]]
    if stripped[:1] == b"[":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise SpecError(f"dataset {path} is not valid JSON: {e}") from None
        rows = [r for r in data if isinstance(r, dict)]
    else:
        rows = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise SpecError(f"dataset {path} line {n} is not valid JSON") from None
            if not isinstance(obj, dict):
                raise SpecError(f"dataset {path} line {n} is not a JSON object")
            rows.append(obj)
    if not rows:
        raise SpecError(f"dataset {path} has no usable rows")
    return rows


def _row_prompt(row: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, str | None, int | None]:
    """(text, messages, reference reply, output tokens) of one row of either format."""
    out = row.get("output_tokens", row.get("max_tokens"))
    if "conversations" in row:  # ShareGPT
        conv = row["conversations"] or []
        human = next((c.get("value") for c in conv if c.get("from") in ("human", "user")), None)
        reply = next((c.get("value") for c in conv if c.get("from") in ("gpt", "assistant")), None)
        return human, None, reply, out
    if "messages" in row:
        return None, row["messages"], row.get("reference"), out
    text = row.get("prompt", row.get("text", row.get("input")))
    return text, None, row.get("completion", row.get("output")), out


async def dataset_prompts(
    path: Path, n: int, tok: Tokenizer, default_output: int, max_input: int | None = None
) -> list[Prompt]:
    rows = load_dataset(path)
    prompts: list[Prompt] = []
    for row in rows:
        text, messages, reply, out = _row_prompt(row)
        if not text and not messages:
            continue
        content = text if text is not None else "\n".join(str(m.get("content", "")) for m in messages or [])
        n_in = len(await tok.encode(content)) if tok.exact else None
        if max_input is not None and n_in is not None and n_in > max_input:
            continue
        if out is None and reply and tok.exact:
            out = max(1, len(await tok.encode(reply)))
        prompts.append(Prompt(text=text, messages=messages, input_tokens=n_in, output_tokens=int(out or default_output)))
        if len(prompts) >= n:
            break
    if not prompts:
        raise SpecError(f"dataset {path} has no rows with a prompt ('prompt', 'messages' or ShareGPT 'conversations')")
    base = len(prompts)
    while len(prompts) < n:  # reuse rows, in order, to reach the request count
        prompts.append(prompts[len(prompts) % base])
    return prompts
