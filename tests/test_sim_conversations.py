"""``simulate --turns N --think-time S``: conversations through the simulator, each turn's prompt the history
(earlier prompts and answers, whole blocks cached) plus a new message, the next turn after the answer and the
think time; the by-turn summary block of a measured run. Hand-checked on a profile with round numbers."""

from __future__ import annotations

import itertools

import pytest

from phasebench.metrics import RunContext, summarize
from phasebench.sim.profile import FittedProfile
from phasebench.sim.replica import SchedulerConfig
from phasebench.sim.run import simulate_run
from phasebench.spec import SLO, RunSpec

from .test_sim import _same

# prefill: 10 ms + 1 ms per new token; decode: 5 ms per step, whatever the batch
PROFILE = FittedProfile((0.010, 0.001, 0.0), (0.005, 0.0, 0.0))


def _spec(**kw: object) -> RunSpec:
    base: dict[str, object] = {"url": "http://simulated.invalid/v1", "scenario": "concurrency", "concurrency": [1],
                               "requests": 1, "turns": 3, "think_time": 0.5, "input_tokens": 32, "output_tokens": 4}
    base.update(kw)
    return RunSpec(**base)


def test_one_conversation_by_hand():
    r = simulate_run(_spec(), PROFILE, SchedulerConfig(prefix_cache=True, block_size=16))
    recs = sorted(r.records, key=lambda x: x.index)
    assert [(x.conversation, x.turn) for x in recs] == [(0, 0), (0, 1), (0, 2)]
    # prompts: 32; 32 + 4 + 32 = 68; 68 + 4 + 32 = 104. Cached: the earlier turn's prompt and answer, whole
    # 16-token blocks: turn 1 finds 36 → 32 cached, turn 2 finds 72 → 64 cached
    assert [x.prompt_tokens for x in recs] == [32, 68, 104]
    assert [x.cached_tokens for x in recs] == [0, 32, 64]
    # TTFT = 10 ms + 1 ms per new token: 42, 46, 50 ms; the answer's 3 more tokens take 15 ms
    ttft = [(x.first_token_ns - x.scheduled_ns) / 1e6 for x in recs]
    assert ttft == pytest.approx([42.0, 46.0, 50.0])
    # the next turn is scheduled 0.5 s after the answer's last token: 0.057 s, then 0.557 + 0.061 + 0.5
    assert [x.scheduled_ns / 1e9 for x in recs] == pytest.approx([0.0, 0.557, 1.118])
    w = r.summary["phasebench"]["workload"]
    assert [w["by_turn"][k]["ttft_ms"]["p50"] for k in "012"] == pytest.approx([42.0, 46.0, 50.0])
    assert [w["by_turn"][k]["cached_tokens"]["mean"] for k in "012"] == [0.0, 32.0, 64.0]
    pc = w["prompt_cache"]
    assert pc["source"] == "per-request" and pc["prompt_tokens"] == 204 and pc["cached_tokens"] == 96
    assert r.manifest["simulation"]["conversations"] == 1
    # without the prefix cache every turn prefills its whole history: 42, 78, 114 ms, and no cached split
    off = simulate_run(_spec(), PROFILE, SchedulerConfig(prefix_cache=False, block_size=16))
    ttft = [(x.first_token_ns - x.scheduled_ns) / 1e6 for x in sorted(off.records, key=lambda x: x.index)]
    assert ttft == pytest.approx([42.0, 78.0, 114.0])
    assert off.summary["phasebench"]["workload"]["prompt_cache"] is None
    assert off.summary["phasebench"]["workload"]["by_turn"]["2"]["ttft_ms"]["p50"] == pytest.approx(114.0)


def test_users_hold_their_slot_and_open_loop_conversations_start_by_the_schedule():
    cfg = SchedulerConfig(prefix_cache=True, block_size=16)
    closed = simulate_run(_spec(concurrency=[2], requests=5, think_time="0.2:0.1", turns="3:1"), PROFILE, cfg)
    by_conv = {c: sorted(g, key=lambda x: x.turn) for c, g in
               itertools.groupby(sorted(closed.records, key=lambda x: (x.conversation, x.turn)),
                                 key=lambda x: x.conversation)}
    assert sorted(by_conv) == [0, 1, 2, 3, 4] and len({len(v) for v in by_conv.values()}) > 1  # 3:1 turns
    for turns in by_conv.values():
        for a, b in itertools.pairwise(turns):  # a later turn waits for its answer (think ≥ 0)
            assert b.scheduled_ns >= a.end_ns
    # two users: never more than two conversations in progress; each new one starts at a last turn's end
    spans = sorted((v[0].scheduled_ns, v[-1].end_ns) for v in by_conv.values())
    assert all(sum(s <= t < e for s, e in spans) <= 2 for t, _ in spans)
    ends = {v[-1].end_ns for v in by_conv.values()}
    assert [s for s, _ in spans[:2]] == [0, 0] and all(s in ends for s, _ in spans[2:])
    # the columnar summary's by-turn block is the per-record one (metrics.workload_block on the records)
    ctx = RunContext("concurrency", SLO(), concurrency=2, exact_output=True)
    _same(summarize(closed.records, ctx)["phasebench"]["workload"], closed.summary["phasebench"]["workload"])
    from phasebench.schedule import arrivals

    spec = _spec(scenario="server", rate=[4.0], requests=6, concurrency=None, turns=2)
    opened = simulate_run(spec, PROFILE, cfg, replicas=2)
    firsts = sorted(x.scheduled_ns for x in opened.records if x.turn == 0)
    assert firsts == arrivals(4.0, 1.0, spec.seed, 6, None).tolist()
    # on two replicas each conversation stays on one (round-robin by conversation): its history is still cached
    later = [x for x in opened.records if x.turn == 1]
    assert len(later) == 6 and all(x.cached_tokens == 32 for x in later)


def test_turns_do_not_combine_with_a_trace_or_a_dataset(tmp_path):
    from phasebench.spec import SpecError
    from phasebench.workload.sample_traces import SAMPLES_DIR

    cfg = SchedulerConfig(prefix_cache=True)
    with pytest.raises(SpecError, match="do not combine"):
        simulate_run(_spec(), PROFILE, cfg, trace=SAMPLES_DIR / "plain_sample.jsonl")
    ds = tmp_path / "d.jsonl"
    ds.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(SpecError, match="synthetic conversations"):
        simulate_run(_spec(dataset=ds), PROFILE, cfg)


def test_written_records_keep_conversation_turn_and_cached_tokens(tmp_path, monkeypatch):
    """requests.jsonl (written from byte templates, not record dicts) reads back as the run's records."""
    from dataclasses import asdict

    from phasebench.records import read_records

    monkeypatch.setenv("PHASEBENCH_DB", "off")
    r = simulate_run(_spec(requests=3, concurrency=[2], out=tmp_path / "run"), PROFILE,
                     SchedulerConfig(prefix_cache=True, block_size=16))
    back = read_records(tmp_path / "run" / "requests.jsonl")
    assert back.skipped == 0 and len(back.records) == 9
    strip = lambda x: {k: v for k, v in asdict(x).items() if k != "request_id"}  # noqa: E731
    assert [strip(x) for x in back.records] == [strip(x) for x in r.records]
    assert {(x.conversation, x.turn) for x in back.records} == {(c, t) for c in range(3) for t in range(3)}
    assert sorted(x.cached_tokens for x in back.records) == [0, 0, 0, 32, 32, 32, 64, 64, 64]
