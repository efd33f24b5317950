"""Workloads as they arrive: trace readers and replay at the trace's timestamps, multi-turn conversations whose
history carries the server's real answers, per-turn and cached/new prefill metrics. Against the mock server
(a real process) and, where built, the real llama.cpp engine."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request

import numpy as np
import pytest

from phasebench.runner import run
from phasebench.sim.run import load_trace as sim_load_trace
from phasebench.spec import SLO, RunSpec, SpecError
from phasebench.workload.sample_traces import SAMPLES, SAMPLES_DIR
from phasebench.workload.tokens import ApproxTokenizer
from phasebench.workload.traces import MOONCAKE_BLOCK_TOKENS, load_trace, parse_window, trace_prompts

from .conftest import spec

MOONCAKE = SAMPLES_DIR / "mooncake_sample.jsonl"
AZURE = SAMPLES_DIR / "azure_sample.csv"
PLAIN = SAMPLES_DIR / "plain_sample.jsonl"


def _prompts(server) -> list:
    with urllib.request.urlopen(server.root + "/_mock/prompts", timeout=5) as r:
        return json.load(r)


# ---- readers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,fmt", [(MOONCAKE, "mooncake"), (AZURE, "azure"), (PLAIN, "plain")])
def test_each_reader_reads_its_sample(path, fmt):
    tr = load_trace(path)
    assert tr.format == fmt and len(tr.rows) == 300
    offs = tr.offsets_ns
    assert offs[0] == 0 and np.all(np.diff(offs) >= 0) and offs[-1] > 30e9
    assert all(r.input_tokens >= 1 and r.output_tokens >= 1 for r in tr.rows)
    if fmt == "mooncake":
        assert all(r.hash_ids and len(r.hash_ids) == -(-r.input_tokens // MOONCAKE_BLOCK_TOKENS) for r in tr.rows)
    if fmt == "plain":
        assert any(r.conversation for r in tr.rows) and any(r.prefix_id for r in tr.rows)


def test_shipped_samples_are_what_the_generator_makes():
    for name, make in SAMPLES.items():
        assert (SAMPLES_DIR / name).read_text() == make(), name


def test_azure_time_format_and_speed_and_window():
    raw = AZURE.read_text().splitlines()
    assert raw[1].count(".") == 1 and len(raw[1].split(",")[0].split(".")[1]) == 7  # Azure's 7 digits
    full = load_trace(AZURE)
    fast = load_trace(AZURE, speed=4.0)
    assert np.allclose(fast.offsets_ns, full.offsets_ns / 4, atol=1)
    part = load_trace(AZURE, window=parse_window("10:20"))
    t = np.array([r.t_s for r in full.rows]) - full.rows[0].t_s
    assert len(part.rows) == int(((t >= 10) & (t < 20)).sum()) > 5
    assert part.offsets_ns[0] == 0 and part.offsets_ns[-1] < 10e9
    assert len(load_trace(AZURE, limit=7).rows) == 7
    assert load_trace(AZURE, duration=5.0).offsets_ns[-1] < 5e9


@pytest.mark.parametrize("name,text,line,what", [
    ("a.jsonl", ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
                 '{"timestamp": 5, "input_length": 10, "hash_ids": [1]}\n'), 2, "output_length"),
    ("b.jsonl", ('{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
                 '{"timestamp": 5, "input_length": 10, "output_length": 5, "hash_ids": ["x"]}\n'), 2, "hash_ids"),
    ("c.jsonl", '{"t": 0, "input_tokens": 10, "output_tokens": 5}\n\n{"t": 1, "input_tokens": 10,\n', 3, "JSON"),
    ("d.jsonl", '{"t": 0, "input_tokens": 10, "output_tokens": 5}\n{"t": -1, "input_tokens": 3, "output_tokens": 5}\n',
     2, "t must be"),
    ("e.jsonl", '{"t": 0, "input_tokens": 10, "output_tokens": 5}\n{"t": 1, "input_tokens": 2.5, "output_tokens": 5}\n',
     2, "input_tokens"),
    ("f.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,5\nyesterday,10,5\n", 3,
     "TIMESTAMP"),
    ("g.csv", ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,5\n"
               "2023-11-16 18:15:47.1,ten,5\n"), 3, "ContextTokens"),
    ("h.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10\n", 2, "columns"),
])
def test_malformed_rows_name_file_and_line(tmp_path, name, text, line, what):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        load_trace(p)
    msg = str(e.value)
    assert f"{p}:{line}" in msg and what in msg and "\n" not in msg


def test_unreadable_traces_and_bad_options(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_trace(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hello,world\n1,2\n")
    with pytest.raises(SpecError, match="not a trace"):
        load_trace(tmp_path / "x.txt")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(SpecError, match="empty"):
        load_trace(tmp_path / "e.jsonl")
    for bad in ("20:10", "a:b", ":"):
        with pytest.raises(SpecError, match="trace-window"):
            parse_window(bad)
    with pytest.raises(SpecError, match="holds no row"):
        load_trace(PLAIN, window=(5000, 6000))
    with pytest.raises(ValueError, match="do not combine"):
        RunSpec(url="http://x/v1", trace=PLAIN, turns=3)
    with pytest.raises(ValueError, match="does not combine"):
        RunSpec(url="http://x/v1", trace=PLAIN, scenario="server", rate=[2])
    with pytest.raises(ValueError, match="needs --trace"):
        RunSpec(url="http://x/v1", scenario="trace")


def test_mooncake_prompts_share_text_where_they_share_blocks():
    tr = load_trace(MOONCAKE, limit=60)
    prompts = asyncio.run(trace_prompts(tr, ApproxTokenizer(), seed=1))
    pairs = 0
    for i, a in enumerate(tr.rows):
        for j in range(i + 1, len(tr.rows)):
            b = tr.rows[j]
            k = 0
            while k < min(len(a.hash_ids), len(b.hash_ids)) - 1 and a.hash_ids[k] == b.hash_ids[k]:
                k += 1
            pa, pb = prompts[i].text.split("\n"), prompts[j].text.split("\n")
            assert pa[:k] == pb[:k]  # whole shared blocks: the same text
            if a.hash_ids[0] != b.hash_ids[0]:
                assert pa[0] != pb[0]
            pairs += k > 0
    assert pairs > 20
    # each row's prompt has about its length (the approximate tokenizer counts words)
    for p, r in zip(prompts, tr.rows):
        assert abs(len(p.text.split()) - r.input_tokens) <= 0.05 * r.input_tokens + 8


def test_simulator_reads_every_format():
    for path in (MOONCAKE, AZURE, PLAIN):
        arr, ins, outs = sim_load_trace(path, speed=2.0, window="0:30")
        tr = load_trace(path, speed=2.0, window=(0, 30))
        assert ins == [r.input_tokens for r in tr.rows] and outs == [r.output_tokens for r in tr.rows]
        assert arr[0] == 0 and max(arr) < 15.0


def test_simulator_prefix_cache_reuses_shared_blocks_lru_in_free_kv(tmp_path):
    from phasebench.metrics import RunContext, summarize
    from phasebench.sim.columns import concat, from_result, summarize_columns, to_records
    from phasebench.sim.profile import FittedProfile
    from phasebench.sim.replica import PrefixCache, SchedulerConfig, simulate
    from phasebench.sim.run import trace_block_keys

    from .test_sim import _same

    arr, ins, outs = sim_load_trace(MOONCAKE)
    keys = trace_block_keys(MOONCAKE, 1.0, None, 16)
    assert [len(k) for k in keys] == [n // 16 for n in ins]
    prof = FittedProfile((0.01, 1e-5, 0.0), (0.005, 1e-7, 1e-4))
    fractions = {}
    for name, cfg in {"off": SchedulerConfig(), "big": SchedulerConfig(prefix_cache=True),
                      "small": SchedulerConfig(prefix_cache=True, kv_blocks=1200)}.items():
        res = simulate(arr, ins, outs, prof, cfg, prefix_keys=keys)
        cols = concat([from_result(res)])
        ctx = RunContext("trace", SLO())
        s = summarize_columns(cols, ctx)
        _same(summarize(to_records(cols), ctx), s, name)  # key for key, the cached split included
        pc = s["phasebench"]["workload"]["prompt_cache"]
        fractions[name] = pc["cached_fraction"] if pc else None
        if name != "off":
            assert all(r.cached % 16 == 0 or r.cached == r.n_in - 1 for r in res.reqs)
    assert fractions["off"] is None
    # the sample's sessions re-send their blocks: most of the prompt is cached with room to keep it; a KV memory
    # that holds only ~1200 blocks (running sequences first) evicts, and fewer tokens are hits
    assert fractions["big"] > 0.5 and fractions["small"] < fractions["big"]
    lru = PrefixCache()
    lru.insert([1, 2, 3], 3)
    assert lru.match([1, 2]) == 2
    lru.insert([4], 3)  # 3 is the least recently used
    assert lru.match([1, 2, 3]) == 2 and len(lru) == 3


# ---- replay against the mock server ----------------------------------------------------------------------


def test_trace_replay_honours_timestamps_and_reports_cache(server, tmp_path):
    server.configure(ttft_ms=3, itl_ms=1, prefix_cache=True, ttft_per_input_token_ms=0.01)
    r = run(spec(server, tmp_path, trace=MOONCAKE, trace_speed=4.0, requests=None, duration=3.0,
                 tokenizer="approx"))
    tr = load_trace(MOONCAKE, speed=4.0, duration=3.0)
    assert r.manifest["trace"]["format"] == "mooncake" and r.manifest["spec"]["scenario"] == "trace"
    assert sorted(x.scheduled_ns for x in r.records) == tr.offsets_ns.tolist()
    assert all(x.ok for x in r.records)
    lag = r.summary["phasebench"]["metrics"]["send_lag_ms"]
    assert lag["p50"] < 3 and lag["p99"] < 50  # wide: a busy 2-core machine's scheduler tail
    cache = r.summary["phasebench"]["workload"]["prompt_cache"]
    assert cache["requests_reporting"] == len(r.records) and 0.2 < cache["cached_fraction"] < 0.95
    assert cache["new_tokens"] + cache["cached_tokens"] == cache["prompt_tokens"]


def test_plain_trace_conversations_are_numbered_by_turn(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1)
    r = run(spec(server, tmp_path, trace=PLAIN, trace_speed=8.0, requests=40, tokenizer="approx"))
    conv = [x for x in r.records if x.conversation is not None]
    assert conv and all(x.turn is not None for x in conv)
    by = r.summary["phasebench"]["workload"]["by_turn"]
    assert by["0"]["requests"] >= 1 and sum(v["requests"] for v in by.values()) == len(conv)
    # this server reports no cached tokens per request: the block comes from its prefix-cache counters
    assert r.summary["phasebench"]["workload"]["prompt_cache"]["source"] == "server counters"
    off = run(spec(server, tmp_path / "off", trace=PLAIN, trace_speed=8.0, requests=5, tokenizer="approx",
                   metrics_url="off"))
    assert off.summary["phasebench"]["workload"]["prompt_cache"] is None  # and without them, nothing is guessed
    from phasebench.report import plots

    assert plots.prefill_new([r], ["plain"]) is None


# ---- multi-turn conversations ----------------------------------------------------------------------------


def test_chat_history_carries_the_servers_real_answers(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1, tag_answers=True, keep_prompts=True, prefix_cache=True,
                     ttft_per_input_token_ms=0.2)
    r = run(spec(server, tmp_path, endpoint="chat", turns=3, requests=4, concurrency=[2], input_tokens=40,
                 output_tokens=6, think_time=0.02, warmup_requests=0))
    recs = sorted(r.records, key=lambda x: x.index)
    assert len(recs) == 12 and all(x.ok for x in recs)
    sent = _prompts(server)
    assert len(sent) == 12
    # the mock tags request n's answer " a<n>": request n = the n-th the server received
    answers = {i + 1: f" a{i + 1}" + " tk" * 5 for i in range(12)}
    by_conv: dict[int, list] = {}
    for x in recs:
        by_conv.setdefault(x.conversation, []).append(x)
    assert sorted(by_conv) == [0, 1, 2, 3] and all([t.turn for t in v] == [0, 1, 2] for v in by_conv.values())
    for msgs in sent:
        users = [m for m in msgs if m["role"] == "user"]
        assistants = [m["content"] for m in msgs if m["role"] == "assistant"]
        assert len(assistants) == len(users) - 1 and [m["role"] for m in msgs][-1] == "user"
        assert all(a in answers.values() for a in assistants)  # exactly what the server sent back
    # a later turn's history starts with the earlier turn's request, then that request's answer
    for k, msgs in enumerate(sent):
        n_user = sum(m["role"] == "user" for m in msgs)
        if n_user > 1:
            prev = msgs[:-2]
            idx = sent.index(prev)
            assert msgs[-2]["content"] == answers[idx + 1]
    by = r.summary["phasebench"]["workload"]["by_turn"]
    assert [by[k]["requests"] for k in ("0", "1", "2")] == [4, 4, 4]
    # a later turn re-sends the history: more prompt tokens, most of them cached
    assert by["2"]["prompt_tokens"]["mean"] > by["1"]["prompt_tokens"]["mean"] > by["0"]["prompt_tokens"]["mean"]
    assert by["0"]["cached_tokens"]["mean"] == 0 and by["2"]["cached_tokens"]["mean"] > 60
    from phasebench.report import plots
    from phasebench.report.terminal import workload_lines

    plot = plots.prefill_new([r], ["chat"])  # TTFT against new tokens: the report shows it for this run
    assert plot is not None and plot.png.startswith(b"\x89PNG")
    lines = workload_lines(r.result.phasebench.workload)
    assert lines[0].startswith("prompt cache: ") and lines[1].startswith("TTFT p50 by turn: 0: ")
    # think time: the next turn is scheduled no earlier than the answer's end + think time
    for v in by_conv.values():
        for a, b in itertools.pairwise(v):
            assert b.scheduled_ns - a.end_ns >= 0.02e9 * 0.95


def test_completions_history_is_flattened_and_extends_the_previous_turn(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1, tag_answers=True, keep_prompts=True)
    r = run(spec(server, tmp_path, endpoint="completions", turns=3, requests=2, concurrency=[1], input_tokens=20,
                 output_tokens=4, warmup_requests=0))
    assert len(r.records) == 6
    sent = _prompts(server)
    for k in (1, 2, 4, 5):  # one user at a time: conversation 0 is requests 1-3, conversation 1 requests 4-6
        prev, cur = sent[k - 1], sent[k]
        assert cur.startswith(prev + f" a{k}" + " tk" * 3 + "\n\nUser: ")
        assert cur.endswith("\n\nAssistant:")
    assert not sent[3].startswith(sent[2][:40])  # a new conversation starts afresh


def test_open_loop_conversations_start_by_the_schedule(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1)
    r = run(spec(server, tmp_path, scenario="server", rate=[20], turns=2, requests=6, output_tokens=3))
    assert len(r.records) == 12 and all(x.ok for x in r.records)
    firsts = sorted(x.scheduled_ns for x in r.records if x.turn == 0)
    from phasebench.schedule import arrivals

    assert firsts == arrivals(20, 1.0, 0, 6, None).tolist()


def test_dataset_conversations_replay_turn_by_turn(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1, keep_prompts=True)
    ds = tmp_path / "sharegpt.json"
    ds.write_text(json.dumps([
        {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "first question"},
                           {"from": "gpt", "value": "one two three"}, {"from": "human", "value": "second question"},
                           {"from": "gpt", "value": "four five"}, {"from": "human", "value": "third question"},
                           {"from": "gpt", "value": "six"}]},
    ]))
    oa = tmp_path / "messages.jsonl"
    oa.write_text(json.dumps({"messages": [{"role": "user", "content": "alpha"}, {"role": "assistant", "content": "x y"},
                                           {"role": "user", "content": "beta"}]}) + "\n")
    r = run(spec(server, tmp_path, endpoint="chat", dataset=ds, turns=2, requests=1, warmup_requests=0))
    assert [x.turn for x in sorted(r.records, key=lambda x: x.index)] == [0, 1]  # --turns caps the replay
    sent = _prompts(server)
    assert sent[0] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first question"}]
    assert [m["content"] for m in sent[1] if m["role"] == "user"] == ["first question", "second question"]
    # the recorded reply sets the output length (server tokenizer: 3 words), the server's own answer is sent on
    assert r.records[0].expected_output_tokens == 3 and sent[1][2]["content"] == " tk" * 3
    server.configure(ttft_ms=2, itl_ms=1, keep_prompts=True)
    r2 = run(spec(server, tmp_path / "b", endpoint="chat", dataset=oa, turns=5, requests=1, warmup_requests=0))
    assert len(r2.records) == 2
    assert [m["content"] for m in _prompts(server)[1] if m["role"] == "user"] == ["alpha", "beta"]


def test_turns_refuse_workers_and_bad_think_time(server, tmp_path):
    with pytest.raises(SpecError, match="one client process"):
        run(spec(server, tmp_path, turns=2, workers=2))
    with pytest.raises(ValueError, match="bad time"):
        RunSpec(url="http://x/v1", turns=2, think_time="soon")
    from phasebench.spec import build_spec

    with pytest.raises(SpecError, match="bad time"):
        build_spec(None, url="http://x/v1", turns="2", think_time="soon")


# ---- the real engine -------------------------------------------------------------------------------------


def _have_engine() -> bool:
    from phasebench.engine.errors import EngineError
    from phasebench.engine.locate import find_binary, find_model

    try:
        return find_binary() is not None and find_model() is not None
    except EngineError:
        return False


@pytest.mark.engine
@pytest.mark.skipif(not _have_engine(), reason="no llama-server build or model (run `phasebench engine build`)")
def test_engine_reuses_the_slot_cache_on_later_turns(tmp_path):
    from phasebench.engine.server import Engine, EngineConfig

    with Engine(EngineConfig(slots=1, ctx_per_slot=4096)) as eng:
        # aiohttp: the raw transport loses some requests on llama-server's reused connections at this body size
        r = run(RunSpec(url=eng.url, endpoint="completions", turns=4, requests=3, concurrency=[1], input_tokens=300,
                        output_tokens=16, tokenizer="server", transport="aiohttp", out=tmp_path / "run"))
    recs = sorted(r.records, key=lambda x: x.index)
    assert all(x.ok for x in recs)
    later = [x for x in recs if x.turn and x.turn > 0]
    first = [x for x in recs if x.turn == 0]
    # llama.cpp reports the tokens it took from the slot's cache (timings.cache_n)
    assert all(x.cached_tokens is not None for x in recs)
    assert all(x.cached_tokens > 0.5 * x.prompt_tokens for x in later)
    by = r.summary["phasebench"]["workload"]["by_turn"]
    # turn 3's prompt is ~4x turn 0's, yet most of it is cached: its TTFT is not 4x (it prefills ~300 new tokens)
    assert by["3"]["prompt_tokens"]["mean"] > 3 * by["0"]["prompt_tokens"]["mean"]
    assert by["3"]["ttft_ms"]["p50"] < 2.0 * by["0"]["ttft_ms"]["p50"]
    cache = r.summary["phasebench"]["workload"]["prompt_cache"]
    assert cache["cached_fraction"] > 0.4 and len(first) == 3


# ---- stopping, a vanished server, bad input at the command line ------------------------------------------


def test_sigint_mid_conversation_keeps_every_record(tmp_path):
    import signal

    from phasebench.records import read_records
    from phasebench.results import Run

    from .conftest import MockProc
    from .test_robust import _cli, _wait_lines

    m = MockProc("--ttft-ms", "5", "--itl-ms", "20")
    out = tmp_path / "run"
    try:
        proc = _cli("run", "--url", m.url, "--turns", "5", "--think-time", "0.05", "--concurrency", "3",
                    "--requests", "50", "--output-tokens", "10", "--input-tokens", "8", "--out", str(out))
        _wait_lines(out / "requests.jsonl", 5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        sent = m.stats()["count"]
    finally:
        m.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    recs = read_records(out / "requests.jsonl").records
    back = Run.load(out)
    assert len(recs) == sent - back.summary["phasebench"]["warmup"]["requests"]
    assert back.partial and not back.valid
    assert all(r.conversation is not None and r.turn is not None for r in recs)


def test_a_vanished_server_stops_a_conversation_run_early(tmp_path):
    from phasebench import exitcodes
    from phasebench.records import read_records

    from .conftest import MockProc
    from .test_robust import _cli, _wait_lines

    m = MockProc("--ttft-ms", "2", "--itl-ms", "2")
    out = tmp_path / "run"
    proc = _cli("run", "--url", m.url, "--turns", "3", "--concurrency", "4", "--duration", "60",
                "--output-tokens", "4", "--input-tokens", "8", "--out", str(out))
    try:
        _wait_lines(out / "requests.jsonl", 10)
    finally:
        m.kill()
    _, e = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.SERVER_GONE, e
    failed = [r for r in read_records(out / "requests.jsonl").records if r.error_type in ("connection", "timeout")]
    assert 20 <= len(failed) < 200  # each failed turn ends its conversation; the users back off


def test_cli_bad_trace_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    from .conftest import ENV

    bad = tmp_path / "t.jsonl"
    bad.write_text('{"t": 0, "input_tokens": 5, "output_tokens": 5}\n{"t": 1, "input_tokens": 5}\n')
    for args, what in ((["--trace", str(bad)], f"{bad}:2"), (["--trace", str(PLAIN), "--trace-window", "9:3"],
                                                             "trace-window"),
                       (["--turns", "x"], "token length")):
        p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--url", "http://127.0.0.1:9/v1", *args,
                            "--out", str(tmp_path / "o")], capture_output=True, text=True, env=ENV, timeout=60,
                           check=False)
        assert p.returncode == 2 and what in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) <= 2  # one message (rich may fold a long line once)
