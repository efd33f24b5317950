"""Phase-model speed: 10,000 predictions (a spread of models, devices, batches and lengths) must take < 1 s.

    python benchmarks/predict_speed.py [--n 10000]
"""

from __future__ import annotations

import argparse
import itertools
import time

from rich.console import Console
from rich.table import Table

from phasebench.model.arch import load_model
from phasebench.model.hardware import load_hardware
from phasebench.model.phases import Setup, predict, resolve_precision

CASES = [("llama-2-7b", "h100-sxm", 1), ("llama-3-70b", "h100-sxm", 8), ("mixtral-8x7b", "mi300x", 1),
         ("llama-2-7b", "groq-rack", 1), ("qwen2.5-7b", "l4", 1), ("llama-3.1-405b", "h200", 8)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    n = ap.parse_args().n
    setups = []
    for m, h, d in CASES:
        hw = load_hardware(h)
        setups.append(Setup(load_model(m), hw, devices=d, precision=resolve_precision(hw, "fp16")[0]))
    args = list(itertools.product(setups, (1, 4, 16, 64), (128, 512, 2048), (64, 256)))
    t = Table(title=f"{n:,} predictions", title_justify="left")
    for c in ("run", "seconds", "predictions/s", "µs each", "target < 1 s"):
        t.add_column(c, justify="right")
    for rep in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            s, b, il, ol = args[i % len(args)]
            predict(s, b, il, ol)
        dt = time.perf_counter() - t0
        t.add_row(str(rep + 1), f"{dt:.3f}", f"{n / dt:,.0f}", f"{dt / n * 1e6:.1f}", "met" if dt < 1 else "MISSED")
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
