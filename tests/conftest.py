"""Fixtures: the in-repo mock server, as a real process listening on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# phasebench's own state (results database, hardware records, calibrations) goes to a throwaway folder,
# never the user's ~/.phasebench; subprocesses inherit it
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from phasebench.spec import RunSpec

os.environ["PHASEBENCH_HOME"] = tempfile.mkdtemp(prefix="phasebench-test-home-")


class MockProc:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "phasebench.mock_server", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"mock server did not start: {line}")
        self.root = line.split("listening on ")[1].strip()
        self.url = self.root + "/v1"

    def configure(self, **cfg: object) -> dict:
        body = json.dumps({"reset": True, **cfg}).encode()
        req = urllib.request.Request(self.root + "/_mock/config", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.root + "/_mock/stats", timeout=5) as r:
            return json.load(r)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def mock() -> MockProc:
    m = MockProc()
    yield m
    m.kill()


@pytest.fixture
def server(mock: MockProc) -> MockProc:
    """The shared mock server, reset to defaults for this test."""
    mock.configure()
    return mock


def spec(server: MockProc, tmp_path: Path | None = None, **kw: object) -> RunSpec:
    base = dict(url=server.url, requests=4, input_tokens=16, output_tokens=8, tokenizer="server")
    base.update(kw)
    if tmp_path is not None and "out" not in kw:
        base["out"] = tmp_path / "run"
    return RunSpec(**base)


def wait_port_closed(proc: subprocess.Popen, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)


ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test on a real engine (llama.cpp, vLLM) is slow by nature: `-m "not slow"` is the fast suite."""
    for item in items:
        if item.get_closest_marker("engine") or item.get_closest_marker("vllm"):
            item.add_marker(pytest.mark.slow)
