from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ENV


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=120)


def test_help_reads_well():
    p = cli("--help")
    assert p.returncode == 0 and "phase by phase" in p.stdout
    p = cli("run", "--help")
    for flag in ("--url", "--model", "--endpoint", "--scenario", "--concurrency", "--rate", "--burstiness",
                 "--requests", "--duration", "--input-tokens", "--output-tokens", "--dataset", "--tokenizer", "--slo",
                 "--warmup", "--seed", "--out", "--api-key-env", "--spec"):
        assert flag in p.stdout, flag


def test_spec_file_with_flag_override_and_show(server, tmp_path):
    y = tmp_path / "spec.yaml"
    y.write_text(f"url: {server.url}\nscenario: server\nrate: 20\nrequests: 10\ninput-tokens: 12\noutput_tokens: 4\n"
                 "slo: ttft=2000,tpot=200\n")
    out = tmp_path / "run"
    p = cli("run", "--spec", str(y), "--requests", "6", "--out", str(out))
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID (a busy machine can do that)
    assert "TTFT" in p.stdout and "VALID" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 6 and summary["request_rate"] == 20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["input_tokens"]["mean"] == 12 and manifest["environment"]["cpu_count"] >= 1
    assert manifest["target"]["models"]["data"][0]["id"] == "mock-model"
    p = cli("show", str(out))
    assert p.returncode == 0 and "TTFT" in p.stdout
    p = cli("show", str(out), "--json")
    assert json.loads(p.stdout)["completed"] == 6


def test_rich_markup_in_server_text_is_escaped(server, tmp_path):
    server.configure(model="[red]evil[/red]")
    out = tmp_path / "run"
    p = cli("run", "--url", server.url, "--requests", "1", "--out", str(out))
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID (a busy machine can do that)
    assert "[red]evil[/red]" in p.stdout


@pytest.mark.parametrize("args,words", [
    (["--url", "http://127.0.0.1:9/v1", "--plan", "--concurrency", "4", "--input-tokens", "64"],
     ["--plan shapes its own", "--concurrency/--input-tokens"]),
    (["--url", "http://127.0.0.1:9/v1", "--plan-budget", "5m"], ["--plan-budget", "need --plan"]),
    (["--url", "http://127.0.0.1:9/v1", "--quick"], ["--quick", "need --plan"]),
    (["--url", "http://127.0.0.1:9/v1", "--engine-model", "x.gguf"], ["--engine-model", "embedded engine"]),
    (["--concurrency", "4"], ["--concurrency needs --url"]),
    (["--plan-budget", "5m", "--trace", "t.jsonl"], ["--plan-budget/--trace need --url"]),
])
def test_flags_a_plan_would_ignore_are_refused(args, words):
    p = cli("run", *args)  # refused before anything starts: no engine, no connection, no folder
    assert p.returncode == 2, p.stderr
    assert all(w in p.stderr for w in words), p.stderr
