"""Recorded workloads replayed at their timestamps: the Mooncake, Azure LLM inference and plain JSONL formats.

The format is told from the content (not the file name):

- **Mooncake** (JSON Lines): ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (one id per
  512-token block of the prompt; requests that share a block id share that block's text, so a server's prefix
  cache sees the hits the recorded one saw);
- **Azure LLM inference** (CSV with a header): ``TIMESTAMP`` (a date-time), ``ContextTokens``,
  ``GeneratedTokens``;
- **plain** (JSON Lines): ``t`` (s) — or ``arrival_s``, the simulator's older name — ``input_tokens``,
  ``output_tokens``, optional ``conversation`` (rows of one conversation extend the previous row's prompt)
  and ``prefix_id`` (rows with the same id share their first ``prefix_tokens`` tokens, default 512).

A malformed row is a one-line :class:`SpecError` naming the file and the line. ``load_trace`` returns the rows
with their send offsets (relative to the first kept row, divided by ``speed``, cut to ``window``);
``trace_prompts`` synthesises their prompts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..client.openai import Prompt
from ..jsonl import object_lines
from ..spec import SpecError
from .synthetic import exact_prompt
from .tokens import Tokenizer

MOONCAKE_BLOCK_TOKENS = 512
DEFAULT_PREFIX_TOKENS = 512
FORMATS = ("mooncake", "azure", "plain")


@dataclass(frozen=True)
class TraceRow:
    t_s: float  # arrival, seconds from the trace's own origin
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None = None  # Mooncake: one id per 512-token block
    conversation: str | None = None
    prefix_id: str | None = None
    prefix_tokens: int | None = None
    line: int = 0  # where it came from, for messages


@dataclass(frozen=True)
class Trace:
    path: Path
    format: str
    rows: list[TraceRow]
    offsets_ns: np.ndarray  # send time of each row from the run's start (speed and window applied)
    speed: float = 1.0
    window: tuple[float, float] | None = None

    def manifest(self) -> dict[str, Any]:
        span = float(self.offsets_ns[-1]) / 1e9 if len(self.offsets_ns) else 0.0
        return {"path": str(self.path), "format": self.format, "rows": len(self.rows), "speed": self.speed,
                "window_s": list(self.window) if self.window else None, "span_s": span}


# ---- reading ---------------------------------------------------------------------------------------------


def detect_format(path: Path, head: str) -> str:
    """``mooncake``, ``azure`` or ``plain`` from the first non-blank line."""
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    if not first:
        raise SpecError(f"trace {path} is empty")
    if first.startswith("{"):
        try:
            obj = orjson.loads(first)
        except orjson.JSONDecodeError:
            raise SpecError(f"{path}:1: not valid JSON") from None
        if isinstance(obj, dict) and ("input_length" in obj or "hash_ids" in obj):
            return "mooncake"
        if isinstance(obj, dict) and ("input_tokens" in obj or "t" in obj or "arrival_s" in obj):
            return "plain"
        raise SpecError(f"{path}:1: a JSON trace line needs Mooncake's timestamp/input_length/output_length/hash_ids "
                        "or t/input_tokens/output_tokens")
    cols = [c.strip().lstrip("\ufeff") for c in first.split(",")]
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(cols):
        return "azure"
    raise SpecError(f"{path}: not a trace this reads (Mooncake JSONL, Azure CSV with TIMESTAMP,ContextTokens,"
                    "GeneratedTokens, or JSONL with t, input_tokens, output_tokens)")


def _count(v: Any, name: str, where: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise SpecError(f"{where}: {name} must be a whole number, got {v!r}"[:200])
    try:
        f = float(v)
    except ValueError:
        raise SpecError(f"{where}: {name} must be a whole number, got {v!r}"[:200]) from None
    if not np.isfinite(f) or f != int(f) or f < minimum:
        raise SpecError(f"{where}: {name} must be a whole number ≥ {minimum}, got {v!r}"[:200])
    return int(f)


def _time(v: Any, name: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise SpecError(f"{where}: {name} must be a number ≥ 0, got {v!r}"[:200])
    return float(v)


def _json_rows(path: Path, text: str, fmt: str) -> list[TraceRow]:
    rows = []
    # split on newlines only: splitlines would also cut at U+2028, U+0085 and \x1c-\x1e inside JSON strings
    for n, d in object_lines(text.split("\n"), lambda n: f"{path}:{n}", SpecError):
        where = f"{path}:{n}"
        try:
            if fmt == "mooncake":
                hashes = d.get("hash_ids")
                if hashes is not None and (not isinstance(hashes, list) or
                                           not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes)):
                    raise SpecError(f"{where}: hash_ids must be a list of integers")
                rows.append(TraceRow(_time(d["timestamp"], "timestamp", where) / 1000.0,
                                     _count(d["input_length"], "input_length", where, 1),
                                     _count(d["output_length"], "output_length", where, 1),
                                     tuple(hashes) if hashes else None, line=n))
            else:
                t = d["t"] if "t" in d else d["arrival_s"] if "arrival_s" in d else d["timestamp"]
                conv, pid = d.get("conversation"), d.get("prefix_id")
                ptok = d.get("prefix_tokens")
                rows.append(TraceRow(_time(t, "t", where), _count(d["input_tokens"], "input_tokens", where, 1),
                                     _count(d["output_tokens"], "output_tokens", where, 1),
                                     conversation=None if conv is None else str(conv),
                                     prefix_id=None if pid is None else str(pid),
                                     prefix_tokens=None if ptok is None else _count(ptok, "prefix_tokens", where, 1),
                                     line=n))
        except KeyError as e:
            need = ("timestamp, input_length, output_length" if fmt == "mooncake"
                    else "t, input_tokens, output_tokens")
            raise SpecError(f"{where}: missing {e.args[0]!r} (a {fmt} trace line needs {need})") from None
    return rows


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _azure_time(v: str, where: str) -> float:
    """Azure's ``2023-11-16 18:15:46.6805900`` (7 fractional digits, no zone): seconds since the epoch (UTC)."""
    try:
        when = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", v.strip()))
    except ValueError:
        raise SpecError(f"{where}: TIMESTAMP {v!r} is not a date-time"[:200]) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _azure_rows(path: Path, text: str) -> list[TraceRow]:
    rows = []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    for rec in reader:
        n = reader.line_num
        where = f"{path}:{n}"
        if None in rec or any(rec.get(k) is None for k in ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
            raise SpecError(f"{where}: expected the columns {', '.join(reader.fieldnames or [])}")
        rows.append(TraceRow(_azure_time(rec["TIMESTAMP"], where), _count(rec["ContextTokens"], "ContextTokens", where, 1),
                             _count(rec["GeneratedTokens"], "GeneratedTokens", where, 1), line=n))
    return rows


def read_rows(path: Path) -> tuple[str, list[TraceRow]]:
    """(format, rows in file order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"trace not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read trace {path}: {getattr(e, 'strerror', None) or e}") from None
    fmt = detect_format(path, text[:65536])
    rows = _azure_rows(path, text) if fmt == "azure" else _json_rows(path, text, fmt)
    if not rows:
        raise SpecError(f"trace {path} has no rows")
    return fmt, rows


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``A:B`` seconds of the trace (from its first row); ``A:`` to the end, ``:B`` from the start."""
    if text is None or not str(text).strip():
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)?\s*:\s*(\d+(?:\.\d*)?)?\s*", str(text))
    if not m or (m.group(1) is None and m.group(2) is None):
        raise SpecError(f"--trace-window {text!r}: use A:B in seconds, e.g. 60:120 (A: or :B for an open end)")
    a = float(m.group(1) or 0.0)
    b = float(m.group(2)) if m.group(2) is not None else float("inf")
    if b <= a:
        raise SpecError(f"--trace-window {text!r}: the end must be after the start")
    return a, b


def load_trace(path: Path, speed: float = 1.0, window: tuple[float, float] | None = None,
               limit: int | None = None, duration: float | None = None) -> Trace:
    """Rows sorted by time, offsets from the first kept row; ``speed`` 2 replays twice as fast. ``limit``: at most
    that many rows; ``duration``: only rows whose (scaled) offset is below it."""
    if not speed > 0 or not np.isfinite(speed):
        raise SpecError(f"--trace-speed {speed}: must be a number > 0")
    fmt, rows = read_rows(path)
    rows = sorted(rows, key=lambda r: r.t_s)
    origin = rows[0].t_s
    if window is not None:
        a, b = window
        rows = [r for r in rows if a <= r.t_s - origin < b]
        if not rows:
            raise SpecError(f"--trace-window {a:g}:{b:g} holds no row of {path} "
                            f"(it spans {sorted_span(path, fmt)})")
    start = rows[0].t_s
    offs = np.array([(r.t_s - start) / speed for r in rows], dtype=np.float64)
    keep = len(rows)
    if duration is not None:
        keep = int(np.searchsorted(offs, duration, side="left"))
    if limit is not None:
        keep = min(keep, limit)
    rows, offs = rows[:keep], offs[:keep]
    if not rows:
        raise SpecError(f"trace {path}: no row is left after --duration/--requests")
    return Trace(Path(path), fmt, rows, np.rint(offs * 1e9).astype(np.int64), speed, window)


def load_spec_trace(spec: Any) -> Trace:
    """The spec's ``--trace`` with its speed and window; ``--requests``/``--duration`` cut it further."""
    return load_trace(spec.trace, spec.trace_speed, parse_window(spec.trace_window), spec.requests, spec.duration)


def sorted_span(path: Path, fmt: str) -> str:
    _, rows = read_rows(path)
    ts = [r.t_s for r in rows]
    return f"0–{max(ts) - min(ts):.1f} s"


# ---- what the prompts share (the simulator's prefix cache) ----------------------------------------------


def prompt_segments(trace: Trace) -> list[list[tuple[Any, int]]]:
    """Each row's prompt as (content key, tokens) segments, laid out as :func:`trace_prompts` lays out the text:
    two rows share a leading segment's tokens where their prompts share that text."""
    out: list[list[tuple[Any, int]]] = []
    conv: dict[str, tuple[list[tuple[Any, int]], int]] = {}
    for i, r in enumerate(trace.rows):
        if r.hash_ids:
            segs, left = [], r.input_tokens
            for h in r.hash_ids:
                if left <= 0:
                    break
                take = min(MOONCAKE_BLOCK_TOKENS, left)
                segs.append((("block", h), take))
                left -= take
            if left > 0:
                segs.append((("row", i), left))
        elif r.conversation is not None:
            prev = conv.get(r.conversation)
            if prev is not None and prev[1] < r.input_tokens:
                segs = [*prev[0], (("row", i), r.input_tokens - prev[1])]
            else:
                segs = [(("row", i), r.input_tokens)]
            conv[r.conversation] = (segs, r.input_tokens)
        elif r.prefix_id is not None:
            shared = min(r.prefix_tokens or DEFAULT_PREFIX_TOKENS, r.input_tokens)
            segs = [(("prefix", r.prefix_id), shared)]
            if r.input_tokens > shared:
                segs.append((("row", i), r.input_tokens - shared))
        else:
            segs = [(("row", i), r.input_tokens)]
        out.append(segs)
    return out


def block_keys(segments: list[tuple[Any, int]], block_size: int) -> list[int]:
    """Chained keys of a prompt's whole blocks: block j's key depends on every token up to its end, so equal keys
    mean an equal prefix (as vLLM's block hashes)."""
    keys: list[int] = []
    h = 0
    pieces: list[tuple[Any, int, int]] = []
    fill = 0
    for seg, n in segments:
        pos = 0
        while pos < n:
            take = min(block_size - fill, n - pos)
            pieces.append((seg, pos, pos + take))
            pos += take
            fill += take
            if fill == block_size:
                h = hash((h, tuple(pieces)))
                keys.append(h)
                pieces, fill = [], 0
    return keys


# ---- prompts ---------------------------------------------------------------------------------------------


class _Texts:
    """Seeded texts of exact token length, cut from one longer text per key (so texts of one key share a prefix)."""

    def __init__(self, tok: Tokenizer, seed: int) -> None:
        self.tok, self.seed = tok, seed
        self._ids: dict[tuple[str, Any], list[int]] = {}
        self._text: dict[tuple[str, Any, int], str] = {}

    async def text(self, kind: str, key: Any, n: int, full: int | None = None) -> str:
        """The first ``n`` tokens of key's text (``full``: the length the key's text is made at)."""
        if n <= 0:
            return ""
        k = (kind, key)
        ids = self._ids.get(k)
        if ids is None or len(ids) < n:
            rng = np.random.default_rng([self.seed, _stable(kind), _stable(key)])
            text, _ = await exact_prompt(self.tok, rng, max(n, full or n))
            ids = self._ids[k] = await self.tok.encode(text)
            self._text[(kind, key, len(ids))] = text
        got = self._text.get((kind, key, n))
        if got is None:
            got = self._text[(kind, key, n)] = await self.tok.decode(ids[:n])
        return got


def _stable(key: Any) -> int:
    """A seed from a key that does not change between processes (``hash`` of a str does)."""
    import zlib

    return zlib.crc32(repr(key).encode()) & 0x7FFFFFFF


async def trace_prompts(trace: Trace, tok: Tokenizer, seed: int = 0, nonce: str = "") -> list[Prompt]:
    """One prompt per row. Mooncake: the text of block ``h`` is the same wherever ``h`` appears (the last block
    cut to the row's length); plain: a shared prefix per ``prefix_id``, a conversation's row extends the previous
    row's prompt; otherwise (Azure) every prompt is its own text. ``nonce`` (the run's, the same for every row)
    starts every prompt, so the rows share with each other what the trace says and nothing with an earlier run."""
    texts = _Texts(tok, seed)
    prompts: list[Prompt] = []
    conv_prompt: dict[str, tuple[str, int]] = {}
    conv_ids: dict[str, int] = {}
    conv_turn: dict[str, int] = {}
    for i, r in enumerate(trace.rows):
        conversation = turn = None
        if r.hash_ids:
            parts, left = [], r.input_tokens
            for h in r.hash_ids:
                if left <= 0:
                    break
                take = min(MOONCAKE_BLOCK_TOKENS, left)
                parts.append(await texts.text("block", h, take, MOONCAKE_BLOCK_TOKENS))
                left -= take
            if left > 0:  # more tokens than the blocks cover: a tail of the row's own
                parts.append(await texts.text("row", i, left))
            text = "\n".join(parts)
        elif r.conversation is not None:
            prev = conv_prompt.get(r.conversation)
            conversation = conv_ids.setdefault(r.conversation, len(conv_ids))
            turn = conv_turn[r.conversation] = conv_turn.get(r.conversation, -1) + 1
            if prev is not None and prev[1] < r.input_tokens:
                text = prev[0] + "\n" + await texts.text("row", i, r.input_tokens - prev[1])
            else:
                text = await texts.text("row", i, r.input_tokens)
            conv_prompt[r.conversation] = (text, r.input_tokens)
        elif r.prefix_id is not None:
            shared = min(r.prefix_tokens or DEFAULT_PREFIX_TOKENS, r.input_tokens)
            text = await texts.text("prefix", r.prefix_id, shared)
            if r.input_tokens > shared:
                text += "\n" + await texts.text("row", i, r.input_tokens - shared)
        else:
            text = await texts.text("row", i, r.input_tokens)
        if nonce:
            text = nonce + " " + text
        prompts.append(Prompt(text=text, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                              conversation=conversation, turn=turn))
    return prompts
