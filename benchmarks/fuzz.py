"""Fuzz the stream reader and the event decoder: >= 100,000 cases (``--quick``: 5,000).

- SSE streams (WHATWG grammar pieces and token soup: comments, field names, ``data:`` with/without a space,
  multi-line data, CR/LF/CRLF, BOMs), fed to ``SSEParser`` split at random byte positions (and, for short
  streams, at every byte) and compared with the reference WHATWG parser of ``tests/test_fuzz.py``;
- event payloads for ``parse_event``: arbitrary JSON, OpenAI-like shapes with right and wrong types, raw bytes.
  A crash is any exception other than ``ValueError``, or a returned ``Delta`` with a wrongly typed field;
- one 10 MiB event in 4 KiB reads (the old parser spent ~15 s re-scanning; linear is milliseconds).

    PYTHONPATH=$PWD/src python benchmarks/fuzz.py [--cases 120000] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from phasebench.client.openai import MAX_COUNT, parse_event
from phasebench.client.sse import SSEParser
from tests.test_fuzz import BOM, parse_in_parts, reference_events, well_typed

ENDS = (b"\n", b"\r", b"\r\n")
FIELDS = (b"data", b"event", b"id", b"retry", b"dat", b"Data", b"data ", b"x", b"", BOM + b"data")
VALUES = (b"", b" ", b"  x", b"[DONE]", b'{"a":1}', b":", b"data: x", b"\xff\xfe", "é".encode(), b"\x00")
SOUP = (b"data", b"event", b":", b" ", b"\r", b"\n", b"\r\n", b"x", b"y", BOM, b"\xef", b"\xbb")
KEYS = ("choices", "usage", "text", "delta", "content", "reasoning_content", "reasoning", "finish_reason",
        "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens", "error", "message",
        "pb_ns", "timings", "metrics", "details", "eval_duration", "generated_tokens", "x")
INTS = (0, 1, 7, -1, -4, MAX_COUNT, MAX_COUNT + 1, 10**12, 2**63 - 1, -(2**63), 2**64 - 1)
STRS = ("", "a", " tk", "stop", "length", "\x1b[31m", "\u2028", "\ud7ff", "7", "null")


def rand_value(r: random.Random) -> bytes:
    if r.random() < 0.5:
        return r.choice(VALUES)
    return bytes(r.choice(b"abc :{}\"\xef\xbb\xbf\x00\xff") for _ in range(r.randint(0, 10)))


def rand_line(r: random.Random) -> bytes:
    k = r.random()
    if k < 0.4:
        return r.choice((b"data: ", b"data:", b"data", b"data:  ")) + rand_value(r)
    if k < 0.5:
        return b":" + rand_value(r)
    if k < 0.8:
        return r.choice(FIELDS) + r.choice((b":", b": ", b"")) + rand_value(r)
    if k < 0.9:
        return b""
    return rand_value(r)


def rand_stream(r: random.Random) -> bytes:
    if r.random() < 0.2:
        return b"".join(r.choice(SOUP) for _ in range(r.randint(0, 40)))
    body = b"".join(rand_line(r) + r.choice(ENDS) for _ in range(r.randint(0, 12)))
    head = r.choice((b"", b"", b"", BOM, b"\xef\xbb", BOM + BOM))
    return head + body + (rand_line(r) if r.random() < 0.5 else b"")


def rand_json(r: random.Random, depth: int = 0) -> object:
    k = r.random()
    if depth >= 3 or k < 0.55:
        return r.choice((None, True, False, r.choice(INTS), r.randint(-10, 10**9), r.uniform(-1, 1e6),
                         r.choice(STRS), 0.0, 1e308))
    if k < 0.75:
        return [rand_json(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {r.choice(KEYS): rand_json(r, depth + 1) for _ in range(r.randint(0, 4))}


def right_or_wrong(r: random.Random, good: object) -> object:
    return good if r.random() < 0.6 else rand_json(r, 1)


def rand_openai(r: random.Random) -> dict:
    """An OpenAI-like chunk whose every field is right or, at random, any JSON at all."""
    n = lambda: right_or_wrong(r, r.choice(INTS[:6]) if r.random() < 0.7 else r.choice(INTS))
    s = lambda: right_or_wrong(r, r.choice(STRS + (None,)))
    obj: dict = {}
    if r.random() < 0.8:
        choice = {"delta": right_or_wrong(r, {"content": s(), "reasoning_content": s()})} if r.random() < 0.5 \
            else {"text": s()}
        choice["finish_reason"] = s()
        obj["choices"] = right_or_wrong(r, [right_or_wrong(r, choice)])
    if r.random() < 0.4:
        obj["usage"] = right_or_wrong(r, {"prompt_tokens": n(), "completion_tokens": n(),
                                          "prompt_tokens_details": right_or_wrong(r, {"cached_tokens": n()})})
    if r.random() < 0.3:
        obj["pb_ns"] = right_or_wrong(r, r.randint(0, 2**62))
    if r.random() < 0.15:
        obj["timings"] = right_or_wrong(r, {"prompt_n": n(), "prompt_ms": right_or_wrong(r, r.uniform(0, 9)),
                                            "predicted_n": n(), "cache_n": n()})
    if r.random() < 0.15:
        obj["metrics"] = right_or_wrong(r, {"time_to_first_token_ms": right_or_wrong(r, r.uniform(-1, 99)),
                                            "mean_itl_ms": right_or_wrong(r, 3), "tokens_per_second": n()})
    if r.random() < 0.05:
        obj["eval_duration"] = right_or_wrong(r, r.randint(0, 10**9))
        obj["eval_count"] = n()
    if r.random() < 0.05:
        obj["details"] = right_or_wrong(r, {"generated_tokens": n()})
    if r.random() < 0.05:
        obj["error"] = right_or_wrong(r, {"message": s()})
    return obj


def decode_ok(payload: bytes) -> bool:
    """True unless parse_event crashed: raised other than ValueError, or returned a wrongly typed field."""
    try:
        d = parse_event(payload)
    except ValueError:
        return True
    except Exception:  # noqa: BLE001 - that is what is counted
        traceback.print_exc(limit=2)
        return False
    return well_typed(d)


def fuzz_sse(r: random.Random, cases: int) -> tuple[int, int, int]:
    crashes = mismatches = splits = 0
    for _ in range(cases):
        stream = rand_stream(r)
        want = reference_events(stream)
        tries = [sorted(r.randint(0, len(stream)) for _ in range(r.randint(0, 8))) for _ in range(2)]
        if len(stream) <= 48:
            tries.append(list(range(len(stream))))  # every byte its own read
        for cuts in tries:
            splits += 1
            try:
                got = parse_in_parts(stream, cuts)
            except Exception:  # noqa: BLE001
                crashes += 1
                continue
            if got != want:
                mismatches += 1
                if mismatches <= 3:
                    print(f"mismatch: {stream!r} cut at {cuts}: {got} != {want}")
    return crashes, mismatches, splits


def linear_time() -> float:
    raw = b'data: {"choices":[{"text":"' + b"z" * (10 * 2**20) + b'"}]}\n\n'
    p = SSEParser(max_event_bytes=16 * 2**20)
    t = time.perf_counter()
    for i in range(0, len(raw), 4096):
        p.feed(raw[i : i + 4096])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=120_000, help="total cases (split across the kinds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="5,000 cases")
    a = ap.parse_args()
    total = 5_000 if a.quick else a.cases
    r = random.Random(a.seed)
    table = Table(title=f"fuzz: SSE reader and event decoder (seed {a.seed})")
    for col in ("kind", "cases", "splits checked", "crashes", "split mismatches", "time s"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    sums = [0, 0, 0, 0, 0.0]

    def row(kind: str, cases: int, splits: int | str, crashes: int, mism: int | str, dt: float) -> None:
        table.add_row(kind, f"{cases:,}", f"{splits:,}" if isinstance(splits, int) else splits, f"{crashes:,}",
                      f"{mism:,}" if isinstance(mism, int) else mism, f"{dt:.2f}")
        sums[0] += cases
        sums[1] += splits if isinstance(splits, int) else 0
        sums[2] += crashes
        sums[3] += mism if isinstance(mism, int) else 0
        sums[4] += dt

    n = int(total * 0.4)
    t = time.perf_counter()
    crashes, mism, splits = fuzz_sse(r, n)
    row("SSE streams vs WHATWG reference", n, splits, crashes, mism, time.perf_counter() - t)
    for kind, share, make in (
        ("parse_event: any JSON", 0.25, lambda: orjson.dumps(rand_json(r))),
        ("parse_event: OpenAI-like shapes", 0.3, lambda: orjson.dumps(rand_openai(r))),
        ("parse_event: raw / cut bytes", 0.05,
         lambda: orjson.dumps(rand_json(r))[: r.randint(0, 30)] if r.random() < 0.5 else rand_value(r)),
    ):
        k = int(total * share)
        t = time.perf_counter()
        bad = sum(not decode_ok(make()) for _ in range(k))
        row(kind, k, "-", bad, "-", time.perf_counter() - t)
    dt = linear_time()
    row("one 10 MiB event in 4 KiB reads", 1, 2560, 0, 0, dt)
    table.add_row("total", f"{sums[0]:,}", f"{sums[1]:,}", f"{sums[2]:,}", f"{sums[3]:,}", f"{sums[4]:.2f}",
                  style="bold")
    Console(width=120).print(table)
    if sums[2] or sums[3]:
        sys.exit(1)


if __name__ == "__main__":
    main()
