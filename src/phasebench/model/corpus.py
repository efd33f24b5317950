"""The published-measurement corpus (``data/corpus.csv``, docs/corpus.md) normalised into what ``predict`` computes.

Each row is one published figure. Sources define their metrics differently; every row is mapped onto one of
predict's quantities for a static batch of ``batch`` sequences of ``input_tokens`` + ``output_tokens``:

| corpus metric            | predicted as                                        | phase group |
|--------------------------|-----------------------------------------------------|-------------|
| ttft_ms                  | TTFT (the engine's per-request cost + prefill)       | prefill     |
| tpot_ms                  | TPOT (mean decode step)                              | decode      |
| per_user_tok_s, no output length given | 1 / TPOT (a stream's decode speed)     | decode      |
| per_user_tok_s with an output length   | output / E2E (LLMPerf: TTFT included)  | e2e         |
| e2e_ms                   | TTFT + (output − 1) · TPOT                           | e2e         |
| output_throughput_tok_s  | batch · output / E2E                                 | throughput  |
| total_throughput_tok_s   | batch · (input + output) / E2E                       | throughput  |

A row measured by a client over the public internet (its notes say so) adds one fitted network round trip
(``internet_rtt_ms``) to TTFT. A row that leaves out its device count (a cloud service) is predicted on the fewest devices that hold the model;
on a device that does not batch, its concurrent clients are taken as served side by side (one replica each), so
per-request figures are predicted at batch 1 and a throughput is multiplied by the clients. On a device that
batches, a row whose batch is a number of closed-loop clients (NIM's genai-perf concurrency) is predicted as the
steady state of continuous batching (``phases.closed_loop``), not as a static batch. A row without input
or output length takes 128 (said in its note). Missing precision: fp16.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .arch import load_model
from .engines import canonical_engine, device_class
from .errors import ModelError
from .hardware import load_hardware
from .phases import Prediction, Setup, _predict, closed_loop, resolve_precision

GROUPS = {"ttft_ms": "prefill", "tpot_ms": "decode", "e2e_ms": "e2e", "output_throughput_tok_s": "throughput",
          "total_throughput_tok_s": "throughput"}


@dataclass
class Row:
    id: str
    source: str
    engine: str
    device_class: str
    hardware: str
    metric: str
    group: str
    value: float
    setup: Setup
    batch: int
    input_len: int
    output_len: int
    replicas: int = 1                    # clients served side by side on a non-batching device
    per_user_is_e2e: bool = False
    internet: bool = False               # measured by a client over the public internet (a cloud API)
    closed_loop: bool = False            # batch = closed-loop clients of a continuously batching server
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.engine}|{self.device_class}"

    def predicted(self, p: Prediction, rtt_s: float = 0.0) -> float | None:
        """The corpus metric computed from a prediction (None if it does not fit). A row measured over the
        public internet adds ``rtt_s`` (the network round trip and API gateway) to its TTFT."""
        if not p.timed:
            return None
        if self.internet and rtt_s:
            p = replace(p, ttft_s=p.ttft_s + rtt_s)
        m = self.metric
        if m == "ttft_ms":
            return p.ttft_s * 1e3
        if m == "tpot_ms":
            return p.tpot_s * 1e3
        if m == "e2e_ms":
            return p.e2e_s * 1e3
        if m == "per_user_tok_s":
            return self.output_len / p.e2e_s if self.per_user_is_e2e else 1.0 / p.tpot_s
        if m == "output_throughput_tok_s":
            return p.output_throughput * self.replicas
        if m == "total_throughput_tok_s":
            return p.total_throughput * self.replicas
        raise ModelError(f"corpus row {self.id}: unknown metric {m!r}")

    def predict(self, setup: Setup | None = None, rtt_s: float = 0.0) -> float | None:
        run = closed_loop if self.closed_loop else _predict
        return self.predicted(run(setup or self.setup, self.batch, self.input_len, self.output_len), rtt_s)


def corpus_path() -> Path:
    return Path(str(resources.files("phasebench").joinpath("data/corpus.csv")))


def holdout_path() -> Path:
    """``data/holdout.csv``: published measurements in the corpus's format kept out of every fit (no source shared
    with the corpus), scored by the installed one (``fit.score_installed``)."""
    return Path(str(resources.files("phasebench").joinpath("data/holdout.csv")))


def _int(v: str, default: int) -> int:
    try:
        return int(float(v)) if v not in ("", None) else default
    except ValueError:
        return default


def _fewest_devices(model: str, hw_key: str, precision: str) -> int:
    hw = load_hardware(hw_key)
    m = load_model(model)
    pr, _ = resolve_precision(hw, precision)
    for d in (1, 2, 4, 8, 10, 16, 32, 64):
        p = _predict(Setup(m, hw, devices=d, precision=pr), 1, 128, 128)
        if p.fits:
            return d
    return 64


@cache
def _rows(path: str) -> tuple[list[Row], list[tuple[str, str]]]:
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append(_row(r))
            except (ModelError, ValueError, KeyError) as e:
                skipped.append((r.get("id", "?"), str(e)))
    return rows, skipped


def load(path: Path | str | None = None) -> tuple[list[Row], list[tuple[str, str]]]:
    """The corpus rows that can be predicted, and (id, why) for the ones that cannot."""
    rows, skipped = _rows(str(path or corpus_path()))
    return list(rows), list(skipped)


def _row(r: dict[str, str]) -> Row:
    notes: list[str] = []
    hw = load_hardware(r["hardware"])
    engine = canonical_engine(r["engine"])
    model = load_model(r["model"])
    weights = r.get("weight_precision") or "fp16"
    acts = r.get("act_precision") or None
    if not r.get("weight_precision"):
        notes.append("precision not published: fp16 assumed")
    metric = r["metric"]
    if not str(r.get("batch") or "").strip():
        raise ValueError("no batch size: a load test (MLPerf offline/server) that a static-batch prediction cannot "
                         "score; the simulator can")
    batch = _int(r["batch"], 1)
    n_in = _int(r["input_tokens"], 0)
    n_out = _int(r["output_tokens"], 0)
    per_user_e2e = metric == "per_user_tok_s" and n_out > 0 and n_in > 0
    if not n_in:
        n_in = 128
        notes.append("input length not published: 128 assumed")
    if not n_out:
        n_out = 1 if metric == "ttft_ms" else 128
        notes.append(f"output length not published: {n_out} assumed")
    devices = _int(r["devices"], 0)
    pp = _int(r["pp"], 1) or 1
    replicas = 1
    if not devices:
        devices = _fewest_devices(r["model"], hw.key, weights)
        notes.append(f"device count not published: the fewest that hold the model ({devices})")
    tp = _int(r["tp"], 0) or max(devices // pp, 1)
    if tp * pp != devices:
        tp, pp = devices, 1
    if not hw.batching and batch > 1:
        replicas, batch = batch, 1
        notes.append(f"{hw.key} does not batch: {replicas} concurrent clients taken as served side by side")
    pr, _ = resolve_precision(hw, weights, acts if acts and acts != weights else None)
    if acts and acts != weights:
        pr = replace(pr, activations=acts)
    setup = Setup(model, hw, devices=devices, tp=tp, pp=pp, precision=pr, engine=engine)
    metric_group = GROUPS.get(metric) or ("e2e" if per_user_e2e else "decode")
    value = float(r["value"])
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"value {r['value']!r} is not a positive number")
    text = (r.get("notes") or "").lower()
    internet = "public internet" in text
    looped = "closed-loop" in text and hw.batching and batch > 1
    if looped:
        notes.append(f"batch = {batch} closed-loop clients: predicted as continuous batching (phases.closed_loop)")
    return Row(r["id"], r["source_id"], engine, device_class(hw), hw.key, metric, metric_group, value, setup,
               batch, n_in, n_out, replicas, per_user_e2e, internet, looped, notes)


def summary(rows: list[Row]) -> dict[str, Any]:
    from collections import Counter

    return {"rows": len(rows), "sources": len({r.source for r in rows}),
            "by_group": dict(Counter(r.group for r in rows)), "by_class": dict(Counter(r.key for r in rows))}
