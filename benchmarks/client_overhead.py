"""Client overhead: chunks/s held, client CPU per 100k chunks, and timestamp error against the server's own
send stamps, for 1, 64, 256 and 1,024 concurrent streams against the in-repo mock server.

    python benchmarks/client_overhead.py [--seconds 5] [--itl-ms 20] [--streams 1,64,256,1024]
"""

from __future__ import annotations

import argparse

from rich.console import Console

from phasebench.selftest import selftest, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--itl-ms", type=float, default=20.0)
    ap.add_argument("--streams", default="1,64,256,1024")
    a = ap.parse_args()
    pts = selftest([int(s) for s in a.streams.split(",")], a.seconds, a.itl_ms)
    Console(width=140).print(table(pts, a.itl_ms))


if __name__ == "__main__":
    main()
