"""Starting engines for the user: the generic process machinery (health wait, process-group stop, state file),
exercised with a real server process (the in-repo mock server as an engine kind), and the clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phasebench.engine.errors import EngineError
from phasebench.engine.kinds import EngineKind, kind, split_args
from phasebench.engine.process import ManagedConfig, ManagedEngine, _group_alive

from .conftest import ENV


class MockKind(EngineKind):
    """The mock server started the way vLLM is: `python -m <module> ... --port P` in its own process group."""

    def command(self, python, model, name, port, args):
        return [str(python), "-m", "phasebench.mock_server", "--port", str(port), "--model", name, *args]


MOCK = MockKind("mock", "phasebench", "PHASEBENCH_MOCK_PYTHON", "no-such-venv", "it ships with phasebench")


def test_managed_engine_starts_serves_and_leaves_no_process(tmp_path):
    from phasebench.runner import run
    from phasebench.spec import RunSpec

    model = tmp_path / "my-model"
    model.mkdir()
    with ManagedEngine(ManagedConfig(kind=MOCK, model=str(model), args=["--itl-ms", "2"])) as eng:
        pgid = eng.proc.pid
        assert eng.alive() and eng.served_name == "my-model"
        r = run(RunSpec(url=eng.url, requests=3, input_tokens=8, output_tokens=4, tokenizer="server"))
        assert r.summary["completed"] == 3
        m = eng.manifest()["engine"]
        assert m["name"] == "mock" and m["startup_s"] > 0 and "--itl-ms" in m["args"] and Path(m["log"]).exists()
    assert not _group_alive(pgid)


def test_engine_that_dies_while_starting_says_why(tmp_path):
    with pytest.raises(EngineError, match="exited with code"):
        ManagedEngine(ManagedConfig(kind=MOCK, model=str(tmp_path), args=["--no-such-flag"])).start()


@pytest.mark.slow
def test_unknown_or_missing_engine_is_one_clear_line(tmp_path):
    with pytest.raises(EngineError, match="unknown engine kind 'tgx'"):
        kind("tgx")
    assert split_args('--max-model-len 2048 --dtype "bfloat16"') == ["--max-model-len", "2048", "--dtype", "bfloat16"]
    env = {**ENV, "PHASEBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("PHASEBENCH_VLLM_PYTHON", None)
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "engine", "start", "--kind", "sglang", "--model",
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    if p.returncode == 0:  # sglang really is installed here: stop it again
        subprocess.run([sys.executable, "-m", "phasebench.cli", "engine", "stop"], env=env, timeout=120)
        pytest.skip("sglang is installed")
    assert p.returncode == 2 and "sglang is not installed" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "engine", "start", "--kind", "vllm"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "needs --model DIR" in p.stderr


def test_detached_engine_lands_in_the_runs_manifest_and_stops(tmp_path, monkeypatch):
    from rich.console import Console

    from phasebench.engine.process import start_detached_kind
    from phasebench.engine.server import status_detached, stop_detached
    from phasebench.runner import run
    from phasebench.spec import RunSpec

    monkeypatch.setenv("PHASEBENCH_CACHE", str(tmp_path / "cache"))
    info = start_detached_kind(MOCK, str(tmp_path), "served", 0, [], None, Console(stderr=True))
    try:
        assert "mock engine running" in status_detached()
        r = run(RunSpec(url=info["url"], requests=2, input_tokens=8, output_tokens=2, tokenizer="server"))
        e = r.manifest["engine"]
        assert e["name"] == "mock" and e["started_by"] == "phasebench engine start" and e["served_model_name"] == "served"
    finally:
        assert "stopped" in stop_detached()
    assert not _group_alive(info["pgid"]) and status_detached() == "no engine running"
