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


@pytest.mark.slow
def test_cli_user_errors_are_one_line_without_traceback(tmp_path):
    p = cli("run", "--url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "x"))
    assert p.returncode == 4 and "cannot reach" in p.stderr and "Traceback" not in p.stderr + p.stdout
    p = cli("show", str(tmp_path))
    assert p.returncode == 2 and "not a phasebench run folder" in p.stderr


@pytest.mark.slow
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


@pytest.mark.slow
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
        # signal while the server holds requests (each lasts ~205 ms), not in the instant between two of them,
        # when there is nothing in flight to cancel
        while time.monotonic() < deadline and m.stats()["in_flight"] < 2:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        m.kill()
    assert proc.returncode == 130, stderr
    r = Run.load(out)
    assert r.partial and not r.valid
    assert r.summary["completed"] >= 1
    assert any(x.error_type == "cancelled" for x in r.records), [(x.error_type, x.end_ns) for x in r.records[-4:]]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_api_key_never_written(server, tmp_path):
    secret = "sk-test-SECRET-0123456789"
    env = {**ENV, "MY_KEY": secret}
    out = tmp_path / "run"
    p = cli("run", "--url", server.url, "--requests", "2", "--api-key-env", "MY_KEY", "--out", str(out), env=env)
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID (a busy machine can do that)
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
    s3 = s.model_copy(update={"url": "http://alice:p@ss@127.0.0.1:1/v1"})
    assert s3.public_dict()["url"] == "http://127.0.0.1:1/v1"
    assert os.environ.get("MY_KEY") is None


from phasebench.exitcodes import SERVER_GONE  # noqa: E402

# ---- item 9: credentials in the URL never reach a file, the database, the terminal or a report --------------


@pytest.mark.slow
def test_password_with_at_sign_never_stored_or_printed(server, tmp_path):
    from phasebench.spec import redact_url

    assert redact_url("http://alice:p@ss@host/v1") == "http://host/v1"
    assert redact_url("http://alice:p@ss@host:8000/v1?api_key=k#x") == "http://host:8000/v1"
    assert redact_url("not a url alice:p@ss@host") == "host"  # unparseable text loses everything before the last @
    db = tmp_path / "results.db"
    env = {**ENV, "PHASEBENCH_DB": str(db)}
    url = server.url.replace("http://", "http://alice:p@ss@")
    out = tmp_path / "run"
    p = cli("run", "--url", url, "--requests", "2", "--output-tokens", "4", "--out", str(out), env=env)
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID (a busy machine's late reads)
    texts = [p.stdout + p.stderr]
    texts += [f.read_text() for f in out.iterdir()]
    texts.append(db.read_bytes().decode("utf-8", "replace"))
    for args in (["history", "--json"], ["show", str(out)], ["show", "--json", str(out)], ["show", "--mlperf", str(out)],
                 ["export", str(out), "-o", str(tmp_path / "x.csv")],
                 ["export", "--summaries", "-o", str(tmp_path / "s.jsonl"), "--format", "jsonl"],
                 ["report", str(out), "-o", str(tmp_path / "r.html")], ["report", str(out), "-o", str(tmp_path / "r.md")]):
        q = cli(*args, env=env)
        assert q.returncode == 0, (args, q.stderr)
        texts.append(q.stdout + q.stderr)
    texts += [(tmp_path / f).read_text() for f in ("x.csv", "s.jsonl", "r.html", "r.md")]
    for t in texts:
        assert "p@ss" not in t and "alice" not in t
    assert json.loads((out / "manifest.json").read_text())["target"]["url"] == server.url
    # and when the server cannot be reached, the error names the host, not the password
    p = cli("run", "--url", "http://alice:p@ss@127.0.0.1:9/v1", "--out", str(tmp_path / "y"))
    assert p.returncode == SERVER_GONE and "127.0.0.1:9" in p.stderr and "p@ss" not in p.stderr + p.stdout


# ---- item 10: escape sequences from servers and datasets never reach the terminal ---------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mevil\x1b[0m\x9b5m-<b>model</b>\x1b]52;c;ZXZpbA==\x07\u202e"


def _no_controls(text: str) -> bool:
    return not any(c in text for c in ("\x1b", "\x07", "\x9b", "\u202e", "\x00"))


@pytest.mark.slow
def test_terminal_escapes_from_the_server_are_stripped(server, tmp_path):
    from phasebench.textsafe import clean, markup

    assert clean(EVIL) == "evil\ufffd5m-<b>model</b>\ufffd" or _no_controls(clean(EVIL))
    assert clean("a\r\nb\tc", multiline=True) == "a\nb\tc" and clean("a\r\nb\tc") == "a  b c"
    assert markup("[bold]x") == "\\[bold]x"
    server.configure(model=EVIL)
    db = tmp_path / "results.db"
    env = {**ENV, "PHASEBENCH_DB": str(db)}
    out = tmp_path / "run"
    p = cli("run", "--url", server.url, "--requests", "2", "--output-tokens", "4", "--out", str(out), env=env)
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID (a busy machine's late reads)
    assert "evil" in p.stdout and _no_controls(p.stdout + p.stderr)
    assert json.loads((out / "manifest.json").read_text())["target"]["model"] == EVIL  # stored verbatim, as JSON
    for args in (["show", str(out)], ["show", "--mlperf", str(out)], ["history"], ["history", "--json"],
                 ["compare", str(out), str(out)]):
        q = cli(*args, env=env)
        assert q.returncode == 0, (args, q.stderr)
        assert ("evil" in q.stdout or args[0] == "compare") and _no_controls(q.stdout + q.stderr), (args, q.stdout)
    # the error listing the served models
    p = cli("run", "--url", server.url, "--model", "other", "--out", str(tmp_path / "y"))
    assert p.returncode == 2 and "evil" in p.stderr and _no_controls(p.stderr), p.stderr
    # HTML and Markdown reports escape it too
    q = cli("report", str(out), "-o", str(tmp_path / "r.html"), env=env)
    assert q.returncode == 0, q.stderr
    page = (tmp_path / "r.html").read_text()
    assert "&lt;b&gt;model&lt;/b&gt;" in page and "<b>model" not in page and _no_controls(page)


def test_escapes_in_a_dataset_never_reach_the_terminal(server, tmp_path):
    ds = tmp_path / "evil.jsonl"
    ds.write_text(json.dumps({"messages": EVIL}) + "\n")
    p = cli("run", "--url", server.url, "--dataset", str(ds), "--requests", "2", "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "line 1" in p.stderr and "'messages'" in p.stderr and _no_controls(p.stderr), p.stderr


# ---- item 11: every bad flag is one line naming the flag and what is accepted --------------------------------


def _one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


@pytest.mark.parametrize("args,words", [
    (["--url", "127.0.0.1:8000/v1"], ["--url", "no scheme", "http://127.0.0.1:8000/v1"]),
    (["--url", "ftp://127.0.0.1/v1"], ["--url", "http or https", "'ftp'"]),
    (["--url", "http://[::1/v1"], ["--url", "not a valid URL", "e.g. http://"]),
    (["--url", "http://h:99999/v1"], ["--url", "Port out of range"]),
    (["--url", "http:///v1"], ["--url", "no host"]),
    (["--url", "http://a:secret@h/v1?api_key=sk-1"], ["--url 'http://h/v1'", "without ?query", "--api-key-env"]),
    (["--url", "http://a:secret@h/v1", "--api-key-env", "HOME"], ["user:password@", "--api-key-env", "drop one"]),
    (["--timeout", "inf"], ["--timeout", "finite"]),
    (["--timeout", "nan"], ["--timeout", "finite"]),
    (["--timeout", "0"], ["--timeout", "greater than 0"]),
    (["--timeout", "1e9"], ["--timeout", "at most 604,800"]),
    (["--stall-timeout", "-1"], ["--stall-timeout", "greater than 0"]),
    (["--requests", "1000000000000"], ["--requests", "at most 10,000,000"]),
    (["--concurrency", "1000000000"], ["--concurrency", "1 to 100,000"]),
    (["--concurrency", "1e9"], ["--concurrency", "'1e9'", "whole number"]),
    (["--input-tokens", "1000000000"], ["--input-tokens", "1 to 1,048,576"]),
    (["--output-tokens", "lots"], ["--output-tokens", "'lots'", "N or N:stddev"]),
    (["--scenario", "server", "--rate", "inf"], ["--rate", "at most 1,000,000"]),
    (["--duration", "inf"], ["--duration", "finite"]),
    (["--warmup-requests", "-3"], ["--warmup-requests", "at least 0"]),
    (["--slo", "ttft=nan"], ["--slo", "finite"]),
    (["--hardware", "h10"], ["--hardware", "'h10'", "did you mean", "h100-sxm", "known: local"]),
])
def test_bad_flags_are_one_line_naming_the_flag(args, words, tmp_path):
    url = [] if args[0] == "--url" else ["--url", "http://127.0.0.1:9/v1"]
    r = cli("run", *url, *args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr
    line = _one_line(r.stderr)
    for w in words:
        assert w in line, (w, line)
    assert "secret" not in line and "sk-1" not in line
    assert "Input should" not in line and "Value error" not in line  # pydantic's wording is translated
    assert not (tmp_path / "x").exists()


def test_out_pointing_at_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = cli("run", "--url", "http://127.0.0.1:9/v1", "--out", str(f))
    assert r.returncode == 2 and "--out" in _one_line(r.stderr) and "is a file" in r.stderr
    with pytest.raises(FileExistsError, match="is a file"):
        from phasebench.results import RunFolder

        RunFolder(f)


@pytest.mark.parametrize("row,words", [
    ({"conversations": 5}, ["'conversations'", "list of", "got 5"]),
    ({"prompt": 5}, ["'prompt'", "must be text", "got 5"]),
    ({"messages": "hello"}, ["'messages'", "list of", "got 'hello'"]),
    ({"prompt": "a b", "output_tokens": "many"}, ["'output_tokens'", "whole number", "got 'many'"]),
    ({"prompt": "a b", "output_tokens": -4}, ["'output_tokens'", "from 1 to", "got -4"]),
    ({"prompt": "a b", "max_tokens": 10**12}, ["'max_tokens'", "from 1 to"]),
])
def test_wrong_typed_dataset_rows_name_file_and_line(server, tmp_path, row, words):
    ds = tmp_path / "d.jsonl"
    ds.write_text('{"prompt": "fine row"}\n' + json.dumps(row) + "\n")
    with pytest.raises(SpecError) as e:
        run(spec(server, dataset=ds, requests=2))
    msg = str(e.value)
    assert str(ds) in msg and "line 2" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    sg = tmp_path / "sg.json"
    sg.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}]}, row]))
    with pytest.raises(SpecError, match="row 2"):
        run(spec(server, dataset=sg, requests=2))


def test_chat_content_parts_are_read(server, tmp_path):
    ds = tmp_path / "parts.jsonl"
    ds.write_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
                              "output_tokens": 3}) + "\n")
    r = run(spec(server, tmp_path, dataset=ds, requests=2, endpoint="chat"))
    assert [x.input_tokens for x in r.records] == [3, 3] and [x.output_tokens for x in r.records] == [3, 3]


def test_mock_server_on_a_busy_port_is_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("mock-server", "--port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = _one_line(r.stderr)
    assert f"--port {port}" in line and "pick another port, or 0" in line


def test_url_without_v1_gets_a_hint():
    from phasebench.spec import url_hint

    assert "http://127.0.0.1:8000/v1" in url_hint("http://127.0.0.1:8000")
    assert "http://h/v1" in url_hint("http://alice:p@ss@h/") and "p@ss" not in url_hint("http://alice:p@ss@h/")
    assert url_hint("http://127.0.0.1:8000/v1") == "" and url_hint("http://h/openai/v1/") == ""


@pytest.mark.slow
def test_history_dates_are_checked(server, tmp_path):
    env = {**ENV, "PHASEBENCH_DB": str(tmp_path / "r.db")}
    assert cli("run", "--url", server.url, "--requests", "2", "--out", str(tmp_path / "run"), env=env).returncode in (0, 3)
    r = cli("history", "--since", "yesterday", env=env)
    assert r.returncode == 2 and "--since 'yesterday'" in _one_line(r.stderr) and "7d" in r.stderr
    r = cli("history", "--until", "2026-13-45", env=env)
    assert r.returncode == 2 and "--until" in _one_line(r.stderr)

    def ids(*args: str) -> int:
        q = cli("history", "--json", *args, env=env)
        assert q.returncode == 0, q.stderr
        return len(json.loads(q.stdout))

    assert ids("--since", "7d") == 1 and ids("--since", "2h") == 1 and ids("--since", "2000-01-01") == 1
    assert ids("--until", "2000-01-01") == 0 and ids("--since", "2999-01-01T00:00+02:00") == 0
    import datetime as dt

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert ids("--until", today) == 1 and ids("--since", today) == 1  # a date is the whole day


# ---- properties: no input gets a control character through, or a password past the redactor ---------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_clean_never_lets_a_control_character_through(text):
    from phasebench.textsafe import clean

    for multiline in (False, True):
        out = clean(text, multiline)
        bad = [c for c in out if (ord(c) < 0x20 and c not in ("\n\t" if multiline else "")) or 0x7F <= ord(c) <= 0x9F
               or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
        assert not bad, (text, out)
    if text.isprintable():
        assert clean(text) == text  # ordinary text is left alone


@settings(max_examples=1500, deadline=None)
@given(user=st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12),
       password=st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=4, max_size=16),
       port=st.integers(1, 65535), path=st.sampled_from(["", "/", "/v1", "/openai/v1/"]))
@example(user="[]", password="00@/", port=1, path="")  # yarl 1.25 raised IndexError on this authority
@example(user="0", password="http", port=1, path="")   # a password that is also a piece of the URL's scheme
def test_redacted_urls_never_hold_the_password(user, password, port, path):
    from phasebench.spec import redact_url

    url = f"http://{user}:{password}@h.example:{port}{path}"
    red = redact_url(url)
    # the password may be found in the redacted URL only as part of what was never secret (scheme, host, port, path)
    assert password not in red or password in f"http://h.example:{port}{path}", (url, red)
    assert "@" not in red


def test_a_url_the_parser_trips_on_is_a_clear_error():
    """yarl raises IndexError (not ValueError) on some malformed authorities: --url still gets one line."""
    from phasebench.spec import SpecError, check_url, redact_url

    bad = "http://[]:00@/@h.example:1/v1"
    assert "00@/" not in redact_url(bad) and "@" not in redact_url(bad)
    with pytest.raises(SpecError, match="not a valid URL"):
        check_url(bad)
