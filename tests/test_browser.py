"""A real browser opens the HTML report: headless Chromium driven over the DevTools protocol (aiohttp websocket).

It must load with no console errors and no network request other than the file itself and its inline data: URIs,
and fit a laptop (1366 px) and a phone (390 px) without the page scrolling sideways (wide tables scroll inside
their own wrapper); a screenshot at each width is kept in ``test-artifacts/`` (or ``$PHASEBENCH_ARTIFACTS``).
Skipped where Chromium is not installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from phasebench.report.document import write_report

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")]


def artifacts() -> Path:
    d = Path(os.environ.get("PHASEBENCH_ARTIFACTS") or ROOT / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


WIDTHS = {"laptop": 1366, "phone": 390}


async def _open(page_url: str, tmp: Path, shots: dict[str, Path]) -> dict:
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", f"--user-data-dir={tmp / 'profile'}", "--window-size=1200,900",
         "about:blank"], stderr=subprocess.PIPE, text=True)
    try:
        ws_url = None
        assert proc.stderr is not None
        for _ in range(200):
            line = proc.stderr.readline()
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        assert ws_url, "chromium did not start its DevTools endpoint"
        port = re.search(r":(\d+)/", ws_url).group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = itertools.count(1)
                events: list[dict] = []
                pending: dict[int, asyncio.Future] = {}

                async def reader() -> None:
                    async for msg in ws:
                        d = json.loads(msg.data)
                        if "id" in d and d["id"] in pending:
                            pending.pop(d["id"]).set_result(d)
                        elif "method" in d:
                            events.append(d)

                task = asyncio.create_task(reader())

                async def call(method: str, **params) -> dict:
                    i = next(ids)
                    fut = asyncio.get_running_loop().create_future()
                    pending[i] = fut
                    await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
                    return await asyncio.wait_for(fut, 30)

                for dom in ("Network", "Runtime", "Log", "Page"):
                    await call(f"{dom}.enable")
                await call("Page.navigate", url=page_url)
                for _ in range(300):
                    if any(e["method"] == "Page.loadEventFired" for e in events):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)

                async def value(expr: str) -> object:
                    r = await call("Runtime.evaluate", expression=expr, returnByValue=True)
                    return r["result"]["result"]["value"]

                widths: dict[str, dict] = {}
                for name, w in WIDTHS.items():
                    await call("Emulation.setDeviceMetricsOverride", width=w, height=900, deviceScaleFactor=1,
                               mobile=w < 600)
                    await asyncio.sleep(0.3)
                    got = await value("[document.documentElement.scrollWidth, window.innerWidth, "
                                      "document.documentElement.scrollHeight]")
                    widths[name] = {"scroll_width": got[0], "inner_width": got[1], "height": got[2]}
                    await call("Emulation.setDeviceMetricsOverride", width=w, height=min(got[2], 12000),
                               deviceScaleFactor=1, mobile=w < 600)
                    await asyncio.sleep(0.3)
                    img = await call("Page.captureScreenshot", format="png")
                    shots[name].write_bytes(base64.b64decode(img["result"]["data"]))
                imgs = await value("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
                task.cancel()
                return {"events": events, "images": imgs, "widths": widths}
    finally:
        proc.kill()
        proc.wait()


def test_report_opens_in_chromium_offline_without_errors(tmp_path, server):
    from phasebench.runner import run

    from .conftest import spec

    server.configure(ttft_ms=20, ttft_per_input_token_ms=0.2, itl_ms=3)
    r = run(spec(server, tmp_path, scenario="sweep", concurrency=[1, 2], requests=5, input_tokens="40:10",
                 output_tokens=10, model_spec="smollm2-135m", hardware="h100-sxm"))
    report = tmp_path / "report.html"
    write_report([r], report)
    shots = {name: artifacts() / f"report-{name}.png" for name in WIDTHS}
    got = asyncio.run(_open(report.as_uri(), tmp_path, shots))
    ev = got["events"]
    requests = [e["params"]["request"]["url"] for e in ev if e["method"] == "Network.requestWillBeSent"]
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    errors = [e for e in ev if (e["method"] == "Runtime.exceptionThrown")
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    assert got["images"] and all(ok and w > 100 for ok, w in got["images"])   # every plot decoded
    for name, w in got["widths"].items():   # the page itself never scrolls sideways, on a laptop or a phone
        assert w["scroll_width"] <= w["inner_width"] == WIDTHS[name], (name, w)
        assert shots[name].stat().st_size > 20_000 and w["height"] > 2000, (name, w)
