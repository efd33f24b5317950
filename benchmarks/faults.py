"""Load and faults: thousands of streams against the mock server with injected faults, a client SIGTERM and a
server SIGKILL. Every run must leave every request it sent on disk, a summary, and a truthful exit code.

    python benchmarks/faults.py            # 2,000 streams per case
    python benchmarks/faults.py --quick    # 200 per case

Prints, per case: requests the server saw, records on disk, records lost (must be 0), whether a summary was
written, the exit code (and the one expected).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from phasebench.records import read_records  # noqa: E402

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "src")}


class Mock:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "phasebench.mock_server", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        self.root = line.split("listening on ")[1].strip()
        self.url = self.root + "/v1"

    def count(self) -> int | None:
        try:
            with urllib.request.urlopen(self.root + "/_mock/stats", timeout=5) as r:
                return json.load(r)["count"]
        except OSError:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_case(name: str, mock_args: list[str], streams: int, conc: int, expect: set[int], out: Path,
             action: str | None = None) -> dict:
    mock = Mock(*mock_args)
    folder = out / name
    # the server-kill case runs for a duration, so that the run outlives the server and must stop by itself
    amount = ["--duration", "120"] if action == "server-sigkill" else ["--requests", str(streams)]
    cmd = [sys.executable, "-m", "phasebench.cli", "run", "--url", mock.url, "--scenario", "concurrency",
           "--concurrency", str(conc), *amount, "--input-tokens", "8", "--output-tokens", "16",
           "--tokenizer", "approx", "--stall-timeout", "2", "--timeout", "30", "--out", str(folder)]
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    seen = None
    try:
        if action:
            deadline = time.monotonic() + 60
            req = folder / "requests.jsonl"
            while time.monotonic() < deadline:
                if req.exists() and len(req.read_bytes().splitlines()) >= streams // 4:
                    break
                time.sleep(0.05)
            if action == "client-sigterm":
                proc.send_signal(signal.SIGTERM)
            elif action == "server-sigkill":
                seen = mock.count()  # the server's count just before it dies (a lower bound of what was sent)
                os.kill(mock.proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        if action != "server-sigkill":
            seen = mock.count()
    finally:
        mock.kill()
    wall = time.monotonic() - t
    recs = read_records(folder / "requests.jsonl").records if (folder / "requests.jsonl").exists() else []
    indices = {r.index for r in recs}
    dispatched = max(indices) + 1 if indices else 0
    lost = dispatched - len(indices)  # indices are handed out in order: a gap is a request with no record
    warm = 0
    if (folder / "summary.json").exists():
        warm = (json.loads((folder / "summary.json").read_text()).get("phasebench", {}).get("warmup") or {}).get("requests", 0)
    if action != "server-sigkill" and seen is not None:
        lost = max(lost, seen - warm - len(recs))  # the connection warm-up is sent but, by design, not recorded
    return {"case": name, "streams": streams, "server_saw": seen, "warmup": warm, "records": len(recs), "lost": lost,
            "errors": sum(1 for r in recs if r.error), "summary": (folder / "summary.json").exists(),
            "exit": proc.returncode, "expected": "/".join(str(e) for e in sorted(expect)),
            "ok": proc.returncode in expect and lost == 0 and (folder / "summary.json").exists(),
            "wall_s": wall, "traceback": "Traceback" in err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--streams", type=int, default=None)
    args = ap.parse_args()
    n = args.streams or (200 if args.quick else 2000)
    conc = min(256, n)
    base = ["--ttft-ms", "20", "--itl-ms", "5"]
    cases = [
        ("clean", base, {0, 3}, None),
        ("500s", base + ["--fault", "500", "--fault-rate", "0.1"], {3}, None),
        ("429s", base + ["--fault", "429", "--fault-rate", "0.1"], {3}, None),
        ("malformed", base + ["--fault", "malformed", "--fault-rate", "0.1"], {3}, None),
        ("drops", base + ["--fault", "drop", "--fault-rate", "0.1"], {3}, None),
        ("stalls", base + ["--fault", "stall", "--fault-rate", "0.05"], {3}, None),
        ("error-events", base + ["--fault", "error_event", "--fault-rate", "0.1"], {3}, None),
        ("wrong-shape", base + ["--fault", "shape", "--fault-rate", "0.1"], {3}, None),
        ("huge-events", base + ["--fault", "huge", "--fault-rate", "0.005", "--huge-event-mb", "5"], {0, 3}, None),
        ("gzip", base + ["--compress", "gzip"], {0, 3}, None),
        ("client-sigterm", base, {143}, "client-sigterm"),
        ("server-sigkill", base, {4}, "server-sigkill"),
    ]
    out = Path(tempfile.mkdtemp(prefix="phasebench-faults-"))
    rows = [run_case(name, margs, n, conc, expect, out, action) for name, margs, expect, action in cases]
    cols = ("case", "streams", "server_saw", "warmup", "records", "lost", "errors", "summary", "exit", "expected", "ok", "wall_s")
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{(f'{r[c]:.1f}' if isinstance(r[c], float) else str(r[c])):>14}" for c in cols))
    bad = [r for r in rows if not r["ok"] or r["traceback"]]
    total_lost = sum(r["lost"] for r in rows)
    print(f"\n{len(rows)} runs, {sum(r['records'] for r in rows)} records, {total_lost} lost, "
          f"{sum(r['summary'] for r in rows)} with a summary, {len(bad)} not as expected")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
