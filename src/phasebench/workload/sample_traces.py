"""The small sample traces shipped in ``phasebench/data/traces/``, made here from a seed (nothing downloaded).

One per format :mod:`.traces` reads, a few hundred rows each, with the structure that matters for the phase
split: Mooncake rows whose sessions re-send their earlier blocks (and groups sharing a system-prompt block),
Azure rows of independent requests, plain rows mixing conversations and shared prefixes.
``python benchmarks/make_traces.py`` rewrites them; a test checks the shipped files are what this makes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "traces"
ROWS = 300
SEED = 2024


def _arrivals(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return np.cumsum(np.concatenate([[0.0], rng.exponential(1.0 / rate, n - 1)]))


def mooncake(n: int = ROWS, seed: int = SEED) -> str:
    """Sessions of growing prompts: each turn re-sends the session's blocks and adds 1–2 new ones; every
    session starts with its group's shared system-prompt block."""
    rng = np.random.default_rng(seed)
    t = _arrivals(rng, n, 5.0)
    next_id = 4  # 0..3: the groups' system-prompt blocks
    sessions: list[list[int]] = []
    lines = []
    for k in range(n):
        if not sessions or rng.random() < 0.3 or len(sessions[-1]) > 6:
            sessions.append([int(rng.integers(0, 4))])
            s = sessions[-1]
        else:
            s = sessions[int(rng.integers(max(0, len(sessions) - 8), len(sessions)))]
            if len(s) > 6:
                s = sessions[-1]
        for _ in range(int(rng.integers(1, 3))):
            s.append(next_id)
            next_id += 1
        tail = int(rng.integers(16, 512))
        lines.append({"timestamp": int(t[k] * 1000), "input_length": 512 * (len(s) - 1) + tail,
                      "output_length": int(rng.integers(16, 256)), "hash_ids": list(s)})
    return "".join(orjson.dumps(x).decode() + "\n" for x in lines)


def azure(n: int = ROWS, seed: int = SEED) -> str:
    """The Azure LLM inference trace's columns and time format (7 fractional digits), independent requests."""
    rng = np.random.default_rng(seed + 1)
    t = _arrivals(rng, n, 4.0)
    start = dt.datetime(2023, 11, 16, 18, 15, 46)
    out = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for k in range(n):
        when = start + dt.timedelta(microseconds=int(t[k] * 1e6))
        stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f") + str(int(rng.integers(0, 10)))
        ctx = int(np.clip(rng.lognormal(6.5, 0.8), 8, 4000))
        gen = int(np.clip(rng.lognormal(4.5, 0.7), 4, 800))
        out.append(f"{stamp},{ctx},{gen}")
    return "\n".join(out) + "\n"


def plain(n: int = ROWS, seed: int = SEED) -> str:
    """phasebench's own JSONL: conversations whose prompts grow turn by turn, and rows sharing a prefix."""
    rng = np.random.default_rng(seed + 2)
    t = _arrivals(rng, n, 5.0)
    conv_len: dict[str, int] = {}
    lines = []
    for k in range(n):
        row: dict[str, object] = {"t": round(float(t[k]), 3)}
        if rng.random() < 0.5:
            c = f"c{int(rng.integers(0, 30))}"
            conv_len[c] = conv_len.get(c, 0) + int(rng.integers(32, 256))
            row.update(input_tokens=conv_len[c], output_tokens=int(rng.integers(16, 128)), conversation=c)
            conv_len[c] += int(row["output_tokens"])  # type: ignore[call-overload]
        else:
            row.update(input_tokens=int(rng.integers(300, 1500)), output_tokens=int(rng.integers(16, 256)),
                       prefix_id=f"p{int(rng.integers(0, 4))}", prefix_tokens=256)
        lines.append(row)
    return "".join(orjson.dumps(x).decode() + "\n" for x in lines)


SAMPLES = {"mooncake_sample.jsonl": mooncake, "azure_sample.csv": azure, "plain_sample.jsonl": plain}


def write_samples(folder: Path = SAMPLES_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SAMPLES.items():
        p = folder / name
        p.write_text(make())
        paths.append(p)
    return paths
