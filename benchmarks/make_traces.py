"""Rewrite the sample traces in src/phasebench/data/traces/ (Mooncake JSONL, Azure CSV, plain JSONL) from
their seed: ``python benchmarks/make_traces.py [--out DIR]``. Nothing is downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from phasebench.workload.sample_traces import SAMPLES_DIR, write_samples
from phasebench.workload.traces import load_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=SAMPLES_DIR)
    args = ap.parse_args()
    for p in write_samples(args.out):
        tr = load_trace(p)
        print(f"{p}: {tr.format}, {len(tr.rows)} rows over {tr.offsets_ns[-1] / 1e9:.1f} s")


if __name__ == "__main__":
    main()
