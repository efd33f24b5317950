"""Prompt files given by path: JSON Lines and ShareGPT. Nothing is downloaded.

JSONL: one object per line with ``prompt`` (text) or ``messages`` (chat), and optionally ``output_tokens``
(or ``max_tokens``). ShareGPT: a JSON list of ``{"conversations": [{"from": "human", "value": ...},
{"from": "gpt", "value": ...}]}``; the first human turn is the prompt, the reply's length sets the output
length when a tokenizer is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from ..client.openai import Prompt
from ..jsonl import object_lines
from ..spec import MAX_TOKENS, SpecError
from .tokens import Tokenizer

# ---- the rows a dataset may hold (unknown keys are ignored; known ones must have their types) ----------


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore")
    output_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS)


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    speaker: StrictStr | None = Field(default=None, alias="from")
    value: StrictStr | None = None


class ShareGPTRow(_Row):
    conversations: list[Turn]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatRow(_Row):
    messages: list[Message] = Field(min_length=1)
    reference: StrictStr | None = None


class TextRow(_Row):
    prompt: StrictStr | None = None
    text: StrictStr | None = None
    input: StrictStr | None = None
    completion: StrictStr | None = None
    output: StrictStr | None = None


_ACCEPTS = {
    "output_tokens": f"a whole number from 1 to {MAX_TOKENS:,}",
    "max_tokens": f"a whole number from 1 to {MAX_TOKENS:,}",
    "conversations": "a list of {\"from\": \"human\"|\"gpt\", \"value\": text} objects",
    "messages": "a non-empty list of {\"role\": ..., \"content\": text} objects",
    "prompt": "text", "text": "text", "input": "text", "completion": "text", "output": "text", "reference": "text",
}


@dataclass(frozen=True)
class Row:
    """One usable dataset row: where it came from, and what it asks."""

    where: str  # "line 7" (JSONL) or "row 7" (ShareGPT list)
    text: str | None
    messages: list[dict[str, Any]] | None
    reply: str | None
    output_tokens: int | None


def _typed(raw: dict[str, Any], path: Path, where: str) -> Row:
    model: type[_Row] = ShareGPTRow if "conversations" in raw else ChatRow if "messages" in raw else TextRow
    try:
        row = model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err.get("loc", ())
        key = str(loc[0]) if loc else "row"
        got = raw.get(key, raw) if loc else raw
        shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        accepted = _ACCEPTS.get(key)
        sub = ".".join(str(p) for p in loc[1:])
        field = key + (f".{sub}" if sub else "")
        rule = f"must be {accepted}" if accepted else "is not valid"
        why = "" if accepted and not sub else f" ({err.get('msg')})"
        raise SpecError(f"dataset {path} {where}: {field!r} {rule}{why}, got {shown}") from None
    out = row.output_tokens if row.output_tokens is not None else row.max_tokens
    if isinstance(row, ShareGPTRow):
        human = next((t.value for t in row.conversations if t.speaker in ("human", "user")), None)
        reply = next((t.value for t in row.conversations if t.speaker in ("gpt", "assistant")), None)
        return Row(where, human, None, reply, out)
    if isinstance(row, ChatRow):
        msgs = [m.model_dump(exclude_none=True) for m in row.messages]
        return Row(where, None, msgs, row.reference, out)
    assert isinstance(row, TextRow)
    text = next((t for t in (row.prompt, row.text, row.input) if t is not None), None)
    return Row(where, text, None, row.completion if row.completion is not None else row.output, out)


def message_text(messages: list[dict[str, Any]]) -> str:
    """The text of a chat: each message's content (plain, or the text parts of a list of parts)."""
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(str(p.get("text", "")) for p in c if isinstance(p, dict) and p.get("type", "text") == "text")
    return "\n".join(parts)


def load_dataset(path: Path) -> list[Row]:
    """Typed rows from a .jsonl or ShareGPT .json file, with a clear error (file and line) for each way a file
    can be bad: not JSON, not objects, or a known field of the wrong type or out of range."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"dataset not found: {path}")
    if path.is_dir():
        raise SpecError(f"dataset {path} is a folder; give a .jsonl or ShareGPT .json file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read dataset {path}: {e.strerror}") from None
    if not raw.strip():
        raise SpecError(f"dataset {path} is empty")
    stripped = raw.lstrip()
    rows: list[Row] = []
    if stripped[:1] == b"[":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise SpecError(f"dataset {path} is not valid JSON: {e}") from None
        for n, obj in enumerate(data, 1):
            if not isinstance(obj, dict):
                raise SpecError(f"dataset {path} row {n} is not a JSON object (got {type(obj).__name__})")
            rows.append(_typed(obj, path, f"row {n}"))
    else:
        for n, obj in object_lines(raw.splitlines(), lambda n: f"dataset {path} line {n}", SpecError):
            rows.append(_typed(obj, path, f"line {n}"))
    if not rows:
        raise SpecError(f"dataset {path} has no usable rows")
    return rows


async def dataset_prompts(
    path: Path, n: int, tok: Tokenizer, default_output: int, max_input: int | None = None
) -> list[Prompt]:
    rows = load_dataset(path)
    prompts: list[Prompt] = []
    for row in rows:
        if not row.text and not row.messages:
            continue
        content = row.text if row.text is not None else message_text(row.messages or [])
        n_in = len(await tok.encode(content)) if tok.exact else None
        if max_input is not None and n_in is not None and n_in > max_input:
            continue
        out = row.output_tokens
        if out is None and row.reply and tok.exact:
            out = min(MAX_TOKENS, max(1, len(await tok.encode(row.reply))))
        prompts.append(Prompt(text=row.text, messages=row.messages, input_tokens=n_in,
                              output_tokens=int(out or default_output)))
        if len(prompts) >= n:
            break
    if not prompts:
        raise SpecError(f"dataset {path} has no rows with a prompt ('prompt', 'messages' or ShareGPT 'conversations')")
    base = len(prompts)
    while len(prompts) < n:  # reuse rows, in order, to reach the request count
        prompts.append(prompts[len(prompts) % base])
    return prompts
