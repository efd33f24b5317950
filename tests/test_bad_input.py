"""Bad input: a clear one-line error for what stops a run, a per-request error record for what does not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from phasebench.records import read_records
from phasebench.results import Run
from phasebench.runner import RunError, run
from phasebench.spec import SpecError, build_spec, parse_slo

from .conftest import ENV, MockProc, spec


@pytest.mark.parametrize(
    "fault,etype",
    [("500", "http_5xx"), ("429", "http_429"), ("malformed", "malformed"), ("drop", "dropped"),
     ("error_event", "server_error")],
)
def test_faults_become_request_errors(server, tmp_path, fault, etype):
    server.configure(fault=fault, fault_every=2, itl_ms=2)
    r = run(spec(server, tmp_path, requests=6, scenario="single-stream"))
    errs = [x for x in r.records if x.error]
    assert len(errs) == 3 and {x.error_type for x in errs} == {etype}
    assert r.summary["completed"] == 3 and r.summary["phasebench"]["errors"] == {etype: 3}
    assert len(read_records(tmp_path / "run" / "requests.jsonl").records) == 6
    if fault == "500":
        assert "injected internal error" in errs[0].error


def test_stalled_stream_times_out(server, tmp_path):
    server.configure(fault="stall", fault_every=1, itl_ms=2)
    r = run(spec(server, tmp_path, requests=2, stall_timeout=0.5, concurrency=[2]))
    assert {x.error_type for x in r.records} == {"stall"}


def test_unreachable_url():
    with pytest.raises(RunError, match="cannot reach"):
        run(spec(type("S", (), {"url": "http://127.0.0.1:9/v1"})()))


def test_wrong_model_lists_served(server):
    with pytest.raises(RunError, match="mock-model"):
        run(spec(server, model="nope"))


def test_bad_specs():
    with pytest.raises(SpecError, match="N or N:stddev"):
        build_spec(None, url="http://x/v1", input_tokens="lots")
    with pytest.raises(SpecError, match="needs --rate"):
        build_spec(None, url="http://x/v1", scenario="server")
    with pytest.raises(SpecError, match="unknown SLO key"):
        parse_slo("latency=3")
    with pytest.raises(SpecError, match="rate"):
        build_spec(None, url="http://x/v1", scenario="server", rate="-1")


def test_bad_yaml_and_missing_spec(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("url: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        build_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        build_spec(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("url: http://x/v1\nconcurrensy: 4\n")
    with pytest.raises(SpecError, match="concurrensy"):
        build_spec(typo)


def test_missing_and_empty_dataset(server, tmp_path):
    with pytest.raises(SpecError, match="not found"):
        run(spec(server, dataset=tmp_path / "none.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SpecError, match="empty"):
        run(spec(server, dataset=empty))
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"prompt": "a b"}\nnot json\n')
    with pytest.raises(SpecError, match="line 2"):
        run(spec(server, dataset=junk))


def test_dataset_jsonl_and_sharegpt(server, tmp_path):
    ds = tmp_path / "p.jsonl"
    ds.write_text('{"prompt": "one two three", "output_tokens": 5}\n{"messages": [{"role": "user", "content": "a b"}]}\n')
    r = run(spec(server, tmp_path / "a", dataset=ds, requests=4, output_tokens=7))
    assert [x.input_tokens for x in r.records] == [3, 2, 3, 2]
    assert [x.output_tokens for x in r.records] == [5, 7, 5, 7]
    sg = tmp_path / "sg.json"
    sg.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi there you"},
                                                 {"from": "gpt", "value": "w " * 11}]}]))
    r = run(spec(server, tmp_path / "b", dataset=sg, requests=2))
    assert r.records[0].input_tokens == 3 and r.records[0].output_tokens == 11


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=120, **kw)


def test_cli_user_errors_are_one_line_without_traceback(tmp_path):
    p = cli("run", "--url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "x"))
    assert p.returncode == 4 and "cannot reach" in p.stderr and "Traceback" not in p.stderr + p.stdout
    p = cli("show", str(tmp_path))
    assert p.returncode == 2 and "not a phasebench run folder" in p.stderr


def test_server_killed_mid_run_keeps_every_finished_request(tmp_path):
    m = MockProc("--ttft-ms", "5", "--itl-ms", "20")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "phasebench.cli", "run", "--url", m.url, "--scenario", "concurrency",
                             "--concurrency", "2", "--requests", "200", "--output-tokens", "10", "--input-tokens", "8",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        f = out / "requests.jsonl"
        if f.exists() and len(f.read_bytes().splitlines()) >= 6:
            break
        time.sleep(0.05)
    served = m.stats()["count"]
    m.kill()
    proc.communicate(timeout=60)
    recs = read_records(out / "requests.jsonl").records
    ok = [r for r in recs if r.ok]
    assert len(ok) >= 6 and len(ok) <= served
    assert any(r.error_type in ("connection", "dropped") for r in recs)
    run_back = Run.load(out)
    assert run_back.summary["completed"] == len(ok)


def test_ctrl_c_leaves_a_valid_partial_result(tmp_path):
    m = MockProc("--ttft-ms", "5", "--itl-ms", "20")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "phasebench.cli", "run", "--url", m.url, "--concurrency", "2",
                             "--requests", "500", "--output-tokens", "10", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ((out / "requests.jsonl").exists()
                                                    and (out / "requests.jsonl").stat().st_size > 2000):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        m.kill()
    assert proc.returncode == 130, stderr
    r = Run.load(out)
    assert r.partial and not r.valid
    assert r.summary["completed"] >= 1
    assert any(x.error_type == "cancelled" for x in r.records)
    assert "Traceback" not in stderr


def test_api_key_never_written(server, tmp_path):
    secret = "sk-test-SECRET-0123456789"
    env = {**ENV, "MY_KEY": secret}
    out = tmp_path / "run"
    p = cli("run", "--url", server.url, "--requests", "2", "--api-key-env", "MY_KEY", "--out", str(out), env=env)
    assert p.returncode == 0, p.stderr
    for f in out.iterdir():
        assert secret not in f.read_text()
    assert secret not in p.stdout + p.stderr
    assert json.loads((out / "manifest.json").read_text())["spec"]["api_key_env"] == "MY_KEY"
    p = cli("run", "--url", server.url, "--requests", "2", "--api-key-env", "UNSET_VAR_X", "--out", str(tmp_path / "y"))
    assert p.returncode == 2 and "UNSET_VAR_X" in p.stderr


def test_truncated_requests_file_is_read_up_to_the_damage(server, tmp_path):
    run(spec(server, tmp_path, requests=3))
    f = tmp_path / "run" / "requests.jsonl"
    f.write_bytes(f.read_bytes() + b'{"index": 9, "request_id": "x", "sched')
    rr = read_records(f)
    assert len(rr.records) == 3 and rr.skipped == 1
    assert Run.load(tmp_path / "run").skipped_lines == 1


def test_url_credentials_and_query_are_redacted(server, tmp_path):
    s = spec(server, tmp_path)
    s2 = s.model_copy(update={"url": "http://user:pw@127.0.0.1:1/v1?key=abc"})
    assert s2.public_dict()["url"] == "http://127.0.0.1:1/v1"
    assert os.environ.get("MY_KEY") is None
