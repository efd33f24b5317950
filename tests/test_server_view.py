"""The engine's own view: /metrics scraped around a real run against the mock server (which reports
vLLM-style histograms that follow its programmed schedule), and the parser/differencing on known text."""

from __future__ import annotations

import json

import pytest

from phasebench.runner import run
from phasebench.serverview.scrape import Histogram, parse_metrics
from phasebench.serverview.view import engine_of

from .conftest import spec

LLAMACPP_TEXT = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total {pt}
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total {ps}
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total {tp}
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total {ts}
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
"""


def test_histogram_quantile_interpolates_like_prometheus():
    h = Histogram([(0.1, 10.0), (0.2, 30.0), (float("inf"), 40.0)], sum=6.0, count=40.0)
    assert h.quantile(0.5) == pytest.approx(0.15)  # rank 20: halfway through the (0.1, 0.2] bucket
    assert h.quantile(0.125) == pytest.approx(0.05)
    assert h.quantile(0.99) == pytest.approx(0.2)  # in +Inf: the highest finite bound
    d = h.minus(Histogram([(0.1, 10.0), (0.2, 10.0), (float("inf"), 10.0)], 1.0, 10.0))
    assert d.count == 30 and d.buckets[0] == (0.1, 0.0) and d.quantile(0.5) == pytest.approx(0.175)


def test_parser_sums_label_sets_and_recognises_engines():
    text = ('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 2\n'
            'vllm:num_requests_running{engine="1"} 3\n# TYPE vllm:kv_cache_usage_perc gauge\n'
            'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.4\n')
    s = parse_metrics(text)
    assert s.get("vllm:num_requests_running") == 5 and s.get("vllm:kv_cache_usage_perc") == pytest.approx(0.3)
    assert engine_of(s) == "vllm"
    assert engine_of(parse_metrics(LLAMACPP_TEXT.format(pt=1, ps=1, tp=1, ts=1))) == "llamacpp"
    assert engine_of(parse_metrics('[{"numActiveRequests": 2, "kvCacheStats": {"usedNumBlocks": 3}}]')) == "trtllm"
    assert engine_of(parse_metrics("# TYPE other_thing counter\nother_thing_total 4\n")) == "unknown"


def test_server_view_matches_the_programmed_schedule(server, tmp_path):
    # TTFT = 30 ms + 0.5 ms × 40 input words = 50 ms; ITL 8 ms; 12 output tokens
    server.configure(ttft_ms=30, ttft_per_input_token_ms=0.5, itl_ms=8)
    r = run(spec(server, tmp_path, scenario="concurrency", concurrency=[4], requests=48, input_tokens=40,
                 output_tokens=12))  # ~1.7 s: at least one scrape during the run besides before/after
    v = r.summary["phasebench"]["server_view"]
    assert v["available"] and v["engine"] == "vllm" and v["scrapes"] >= 2
    ph = v["phases"]
    assert ph["ttft"]["count"] == 48  # warm-up excluded, every measured request counted once
    assert ph["ttft"]["mean_ms"] == pytest.approx(50.0, abs=0.01)
    assert ph["prefill"]["mean_ms"] == pytest.approx(50.0, abs=0.01) and ph["queue"]["mean_ms"] == 0
    assert ph["itl"]["mean_ms"] == pytest.approx(8.0, abs=0.01) and ph["itl"]["count"] == 48 * 11
    assert ph["decode"]["mean_ms"] == pytest.approx(88.0, abs=0.01)
    # bucket estimates lie inside the bucket that holds the true value (0.04, 0.06] s
    assert 40 <= ph["ttft"]["p50_ms_est"] <= 60 and 40 <= ph["ttft"]["p99_ms_est"] <= 60
    assert v["counters"]["prompt_tokens"] == 48 * 40 and v["counters"]["generation_tokens"] == 48 * 12
    # the client's TTFT is the server's plus HTTP and client time: above it, by little on 127.0.0.1
    split = v["ttft_split"]
    client = r.summary["phasebench"]["metrics"]["ttft_ms"]["mean"]
    assert split["client_ttft_ms"] == pytest.approx(client)
    assert split["server_queue_ms"] == 0 and split["server_prefill_ms"] == pytest.approx(50.0, abs=0.01)
    assert 0 <= split["rest_ms"] < 40 and split["rest_ms"] == pytest.approx(client - 50.0, abs=0.01)
    assert split["network_client_ms"] == pytest.approx(split["rest_ms"], abs=0.01)
    # the time series of running requests is in the run folder, on the run's clock
    rows = [json.loads(x) for x in (tmp_path / "run" / "server_metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and rows[-1]["t_s"] > 0 and max(x["running"] for x in rows) <= 4
    assert v["series_file"] == "server_metrics.jsonl" and v["gauges"]["running"]["max"] <= 4


def test_repeated_prompts_are_reported_as_cache_hits(server, tmp_path):
    """A fixed seed sends the same prompts twice; the engine's prefix-cache counters show it and we warn.
    Without a seed every run gets its own nonce, so nothing is served from cache."""
    server.configure(ttft_ms=5, itl_ms=1)
    kw = dict(scenario="concurrency", concurrency=[2], requests=6, input_tokens=64, output_tokens=2)
    fresh1 = run(spec(server, tmp_path / "f1", **kw))
    fresh2 = run(spec(server, tmp_path / "f2", **kw))
    assert fresh1.manifest["spec"]["nonce"] != fresh2.manifest["spec"]["nonce"]
    assert fresh2.summary["phasebench"]["server_view"]["derived"]["prefix_cache_hit_rate"] < 0.05
    run(spec(server, tmp_path / "s1", seed=1234, **kw))
    again = run(spec(server, tmp_path / "s2", seed=1234, **kw))
    assert again.manifest["spec"]["nonce"] == ""
    v = again.summary["phasebench"]["server_view"]
    assert v["derived"]["prefix_cache_hit_rate"] >= 0.7  # 4 of the 64-word prompts' 16-word blocks
    assert any("prefix cache" in w for w in again.summary["phasebench"]["warnings"])
    a = [x.input_tokens for x in again.records]
    assert a == [64] * 6


def test_shared_prefix_workload_is_cached_on_purpose(server, tmp_path):
    server.configure(ttft_ms=5, itl_ms=1)
    r = run(spec(server, tmp_path, scenario="concurrency", concurrency=[1], requests=8, input_tokens=80,
                 output_tokens=2, prefix_tokens=64, prefix_groups=2))
    texts = [json.loads(x) for x in (tmp_path / "run" / "requests.jsonl").read_text().splitlines()]
    assert all(t["prompt_tokens"] == 80 for t in texts)
    v = r.summary["phasebench"]["server_view"]
    # 2 groups × 4 prompts: the first of each group is cold, the 3 others hit 64 of 80 tokens
    assert v["derived"]["prefix_cache_hit_rate"] == pytest.approx(6 * 64 / (8 * 80))
    assert not any("prefix cache" in w for w in r.summary["phasebench"]["warnings"])


def test_first_token_that_leaves_the_server_late_is_called_out(server, tmp_path):
    # the engine counts TTFT at 30 ms; its frontend sends the first chunk 150 ms later, the rest on schedule
    server.configure(ttft_ms=30, itl_ms=20, first_token_late_ms=150)
    r = run(spec(server, tmp_path, scenario="concurrency", concurrency=[2], requests=6, output_tokens=16))
    v = r.summary["phasebench"]["server_view"]
    m = r.summary["phasebench"]["metrics"]
    assert 145 <= v["ttft_split"]["network_client_ms"] <= 450  # 150 ms late at the server; a busy client adds
    assert m["itl_token_ms"]["mean"] < v["phases"]["itl"]["mean_ms"] - 5  # the backlog drained fast
    assert -5 <= m["e2e_ms"]["mean"] - v["phases"]["e2e"]["mean_ms"] <= 100  # the last token left on schedule
    assert any("first token" in w and "frontend" in w for w in v["warnings"])
    assert any("first token" in w for w in r.summary["phasebench"]["warnings"])
    server.configure(first_token_late_ms=0)
    clean = run(spec(server, tmp_path / "clean", scenario="concurrency", concurrency=[2], requests=6, output_tokens=16))
    assert not any("first token" in w for w in clean.summary["phasebench"]["server_view"]["warnings"])


def test_no_metrics_endpoint_leaves_the_run_whole(server, tmp_path):
    r = run(spec(server, tmp_path, metrics_url=server.root + "/nope"))
    v = r.summary["phasebench"]["server_view"]
    assert v["available"] is False and "404" in v["reason"] and r.summary["completed"] == 4
    off = run(spec(server, tmp_path / "off", metrics_url="off"))
    assert off.summary["phasebench"]["server_view"] is None


def test_llamacpp_counters_difference_into_time_per_token():
    from phasebench.serverview.scrape import Scraper
    from phasebench.serverview.view import build_view

    s = Scraper("http://unused.invalid/metrics")
    s.before = parse_metrics(LLAMACPP_TEXT.format(pt=100, ps=1.0, tp=50, ts=2.0), t_ns=0)
    s.after = parse_metrics(LLAMACPP_TEXT.format(pt=1124, ps=3.048, tp=306, ts=9.68), t_ns=10**10)
    v = build_view(s, "llamacpp", client_ttft_ms=560.0, completed=4)
    assert v.counters["prompt_tokens"] == 1024 and v.counters["generation_tokens"] == 256
    assert v.derived["decode_ms_per_token"] == pytest.approx(30.0)  # 7.68 s / 256 tokens
    assert v.derived["prefill_ms_per_token"] == pytest.approx(2.0) and v.derived["prefill_ms_per_request"] == 512
    assert v.ttft_split.server_prefill_ms == 512 and v.ttft_split.rest_ms == pytest.approx(48.0)
    assert v.window_s == 10


def test_unknown_engine_keeps_raw_families_differenced():
    from phasebench.serverview.scrape import Scraper
    from phasebench.serverview.view import build_view

    text = "# TYPE myeng_tokens counter\nmyeng_tokens_total {t}\n# TYPE myeng_busy gauge\nmyeng_busy {b}\n"
    s = Scraper("http://unused.invalid/metrics")
    s.before, s.after = parse_metrics(text.format(t=10, b=1), 0), parse_metrics(text.format(t=25, b=3), 10**9)
    v = build_view(s, engine_of(s.after), client_ttft_ms=None, completed=1)
    assert v.engine == "unknown" and v.raw == {"myeng_tokens_total": 15, "myeng_busy": 3} and not v.phases


def test_prompts_are_fresh_per_run_and_exact_with_a_seed():
    import asyncio

    from phasebench.spec import LengthDist
    from phasebench.workload import ApproxTokenizer
    from phasebench.workload.synthetic import synthetic_prompts

    async def make(nonce):
        return [p.text for p in await synthetic_prompts(ApproxTokenizer(), 3, LengthDist(mean=20),
                                                        LengthDist(mean=4), 5, nonce=nonce)]

    a, b, c = asyncio.run(make("n1")), asyncio.run(make("n2")), asyncio.run(make(""))
    assert a != b and asyncio.run(make("n1")) == a and asyncio.run(make("")) == c
    import re

    assert len({re.search(r"[0-9a-f]{6}", t).group() for t in a}) == 3  # each prompt's marker differs


def test_report_draws_the_engines_view_over_time(server, tmp_path):
    from phasebench.report.plots import server_timeline
    from phasebench.results import Run

    server.configure(ttft_ms=20, itl_ms=20)
    run(spec(server, tmp_path, scenario="concurrency", concurrency=[3], requests=9, output_tokens=40))
    p = server_timeline([Run.load(tmp_path / "run")], ["mock"])
    assert p is not None and p.png.startswith(b"\x89PNG") and len(p.png) > 5000


def test_prompt_cache_falls_back_to_the_servers_counters(server, tmp_path):
    """No cached tokens per request (the mock's per-request cache is off), so the prompt_cache block comes from
    the engine's counters: the mock's vLLM-style vllm:prefix_cache_hits/queries over 16-word blocks."""
    import urllib.request

    server.configure(ttft_ms=2, itl_ms=1, keep_prompts=True)
    r = run(spec(server, tmp_path, endpoint="completions", turns=3, requests=3, concurrency=[1], input_tokens=40,
                 output_tokens=8, warmup_requests=0))
    assert len(r.records) == 9 and all(x.ok and x.cached_tokens is None for x in r.records)
    pc = r.summary["phasebench"]["workload"]["prompt_cache"]
    assert pc["source"] == "server counters"
    assert pc["counters"] == ["vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"]
    with urllib.request.urlopen(server.root + "/_mock/prompts", timeout=5) as f:
        prompts = json.load(f)
    # by hand: a prompt's leading whole 16-word blocks whose prefix an earlier prompt already had are hits
    seen: set[tuple[str, ...]] = set()
    hits = total = 0
    for p in prompts:
        words = p.split()
        total += len(words)
        leading = True
        for end in range(16, len(words) + 1, 16):
            leading = leading and tuple(words[:end]) in seen
            hits += 16 if leading else 0
            seen.add(tuple(words[:end]))
    assert pc["prompt_tokens"] == total and pc["cached_tokens"] == hits and pc["new_tokens"] == total - hits
    assert pc["cached_fraction"] == pytest.approx(hits / total) and 0.3 < pc["cached_fraction"] < 0.9
    assert pc["new_tokens_per_request"] is None and pc["requests_not_reporting"] == 9
    from phasebench.report.terminal import workload_lines

    assert workload_lines(r.result.phasebench.workload)[0].startswith(
        f"prompt cache (server counters): {hits / total:.0%} of {total:,} prompt tokens cached")
    # with per-request figures the records win, and say so
    server.configure(ttft_ms=2, itl_ms=1, prefix_cache=True)
    per = run(spec(server, tmp_path / "per", endpoint="completions", turns=2, requests=2, warmup_requests=0))
    assert per.summary["phasebench"]["workload"]["prompt_cache"]["source"] == "per-request"


SGLANG_TEXT = """# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total {pt}
# TYPE sglang:cached_tokens_total counter
sglang:cached_tokens_total{{cache_source="device"}} {cd}
sglang:cached_tokens_total{{cache_source="host"}} {ch}
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs 1
"""


def test_sglang_cached_token_counters_and_the_hit_rate_gauge():
    from phasebench.serverview.scrape import Scraper
    from phasebench.serverview.view import build_view, prompt_cache_from_counters

    s = Scraper("http://unused.invalid/metrics")
    s.before = parse_metrics(SGLANG_TEXT.format(pt=1000, cd=100, ch=0), t_ns=0)
    s.after = parse_metrics(SGLANG_TEXT.format(pt=3000, cd=1300, ch=200), t_ns=10**9)
    v = build_view(s, "sglang", client_ttft_ms=None, completed=5)
    pc = prompt_cache_from_counters(v, 5)  # (1300 + 200 − 100) of 2000 new prompt tokens: label sets summed
    assert pc["cached_tokens"] == 1400 and pc["prompt_tokens"] == 2000 and pc["cached_fraction"] == 0.7
    assert pc["counters"] == ["sglang:cached_tokens_total", "sglang:prompt_tokens_total"]
    # an SGLang without the cached-tokens counter: the hit-rate gauge's mean over the run's scrapes
    text = "# TYPE sglang:prompt_tokens_total counter\nsglang:prompt_tokens_total {pt}\n"
    s.before, s.after = parse_metrics(text.format(pt=0), 0), parse_metrics(text.format(pt=800), 10**9)
    s.series = [{"cache_hit_rate": 0.2}, {"cache_hit_rate": 0.6}]
    pc = prompt_cache_from_counters(build_view(s, "sglang", None, 2), 2)
    assert pc["cached_tokens"] == 320 and pc["cached_fraction"] == pytest.approx(0.4)
    assert "approximate" in pc["counters"][0]
    s.series = []
    assert prompt_cache_from_counters(build_view(s, "sglang", None, 2), 2) is None  # nothing counts caching


def test_metrics_url_credentials_never_reach_the_results(server, tmp_path):
    root = server.root.replace("http://", "http://admin:hunter2@")
    r = run(spec(server, tmp_path, metrics_url=root + "/metrics?token=s3cr3t"))
    v = r.summary["phasebench"]["server_view"]
    assert v["available"] and v["source"] == server.root + "/metrics"
    for f in ("manifest.json", "summary.json", "requests.jsonl"):
        text = (tmp_path / "run" / f).read_text()
        assert "hunter2" not in text and "s3cr3t" not in text, f
    gone = run(spec(server, tmp_path / "gone", metrics_url="http://u:hunter2@127.0.0.1:9/metrics?token=s3cr3t"))
    g = gone.summary["phasebench"]["server_view"]
    assert g["available"] is False and "hunter2" not in g["reason"] and "s3cr3t" not in g["reason"]
